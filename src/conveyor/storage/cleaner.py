"""The log cleaner: compacts the logs whose cleanup policy says ``compact``.

One cleaner per broker (Kafka's ``LogCleaner`` with one thread): a background thread
that, every ``backoff_ms`` or when woken, picks the dirtiest log that is due
(``compaction.choose_log``) and cleans it:

1. **offset map**: read the dirty part (cleaned offset .. the active segment) and note
   each key's latest offset, up to ``dedupe_buffer_bytes`` of map; a full map ends the
   pass early at a batch boundary (the rest waits for the next pass);
2. **producers**: note the last batch of each idempotent producer in the range cleaned;
3. **rewrite**: every sealed segment below the map's end, in groups of about one
   segment (``compaction.group_segments``), is copied batch by batch into a new
   ``.cleaned`` file, keeping the records :func:`compaction.keep_record` keeps
   (``protocol.recordfilter``: same offsets, valid CRC), fsynced, then swapped in
   (``PartitionLog.swap_cleaned``, crash-safe as ``swap.py`` explains).

Reading and writing count against one token bucket of ``io_bytes_per_s`` (Kafka's
``log.cleaner.io.max.bytes.per.second``) so that cleaning does not starve produce and
fetch of the disk. The cleaner reads segment files through its own descriptors, never
holds a log's lock while it reads or writes, and gives up a pass (deleting its file)
when the log changed meanwhile (truncation, retention, close): the next pass starts over.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

from conveyor.protocol.batch import (
    CRC_START,
    HEADER_SIZE,
    LOG_OVERHEAD,
    BatchHeader,
    crc32c,
    parse_header,
    peek_length,
)
from conveyor.protocol.errors import ConveyorError, CorruptDataError
from conveyor.protocol.recordfilter import rebuild_batch, scan_batch
from conveyor.storage import compaction
from conveyor.storage.compaction import CleanableLog, OffsetMap, SegmentSpan
from conveyor.storage.config import DAY_MS, MIB
from conveyor.storage.log import CleaningView, PartitionLog
from conveyor.storage.segment import LogSegment, segment_name
from conveyor.storage.swap import CLEANED_SUFFIX

log = logging.getLogger(__name__)

_READ_CHUNK_BYTES = 1 << 20
_FAILED_BACKOFF_S = 600


class CleaningAborted(Exception):  # noqa: N818 -- a normal outcome, not an error
    """The log changed or the cleaner is stopping: this pass is given up."""


@dataclass(slots=True)
class CleanStats:
    """One pass over one log (and, summed, the cleaner's totals for metrics)."""

    bytes_read: int = 0
    bytes_written: int = 0
    records_read: int = 0
    records_removed: int = 0
    segments_cleaned: int = 0
    seconds: float = 0.0

    def add(self, other: CleanStats) -> None:
        self.bytes_read += other.bytes_read
        self.bytes_written += other.bytes_written
        self.records_read += other.records_read
        self.records_removed += other.records_removed
        self.segments_cleaned += other.segments_cleaned
        self.seconds += other.seconds


class Throttle:
    """A token bucket of ``bytes_per_s`` (0: unlimited) with one second of burst."""

    def __init__(
        self,
        bytes_per_s: int,
        *,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], object] = time.sleep,
    ) -> None:
        self.bytes_per_s = bytes_per_s
        self._clock = clock
        self._sleep = sleep
        self._tokens = float(bytes_per_s)
        self._updated = clock()

    def take(self, size_bytes: int) -> None:
        if self.bytes_per_s <= 0:
            return
        now = self._clock()
        rate = float(self.bytes_per_s)
        self._tokens = min(rate, self._tokens + (now - self._updated) * rate) - size_bytes
        self._updated = now
        if self._tokens < 0:
            self._sleep(-self._tokens / rate)


@dataclass(frozen=True, slots=True)
class CleanerSettings:
    io_bytes_per_s: int = 0  # 0: unthrottled, as Kafka's default
    dedupe_buffer_bytes: int = 32 * MIB  # the offset map's memory (Kafka: 128 MiB)
    backoff_ms: int = 15_000  # idle time between looks for a dirty log (Kafka's default)
    producer_id_expiration_ms: int = DAY_MS

    @property
    def offset_map_entries(self) -> int:
        return max(1, self.dedupe_buffer_bytes // compaction.OFFSET_MAP_ENTRY_BYTES)


@dataclass(slots=True)
class _Pass:
    """The state of one pass over one log."""

    log: PartitionLog
    view: CleaningView
    now_ms: int
    settings: CleanerSettings
    throttle: Throttle
    stop: threading.Event
    stats: CleanStats = field(default_factory=CleanStats)


def clean_log(
    partition_log: PartitionLog,
    *,
    now_ms: int,
    settings: CleanerSettings | None = None,
    throttle: Throttle | None = None,
    stop: threading.Event | None = None,
) -> CleanStats:
    """Clean ``partition_log`` once (a no-op unless its policy compacts). Raises
    CleaningAborted when the log changed meanwhile, ConveyorError on bad data."""
    settings = settings or CleanerSettings()
    view = partition_log.cleaning_view()
    state = _Pass(
        partition_log,
        view,
        now_ms,
        settings,
        throttle or Throttle(settings.io_bytes_per_s),
        stop or threading.Event(),
    )
    started = time.perf_counter()
    if view.config.compacted and view.sealed:
        try:
            _run_pass(state)
        except (ConveyorError, OSError) as exc:
            if partition_log.generation != state.view.generation:
                # A truncation or retention cut a file under us: not a real error.
                raise CleaningAborted(f"{partition_log.directory} changed: {exc}") from exc
            raise
    state.stats.seconds = time.perf_counter() - started
    return state.stats


def _run_pass(state: _Pass) -> None:
    view = state.view
    state.log.allow_gaps()
    offsets = OffsetMap(state.settings.offset_map_entries)
    map_end = _build_offset_map(state, offsets)
    segments = [s for s in view.sealed if s.base_offset < map_end]
    producers = _last_batches(state, segments)
    groups = compaction.group_segments(
        segments, _following_base(view, segments), view.config.segment_bytes_max
    )
    for index, group in enumerate(groups):
        cleaned = _clean_group(state, group, offsets, producers, map_end)
        bases = [s.base_offset for s in group]
        # Only the last swap records the pass's progress: until then the old mark stands.
        mark = map_end if index == len(groups) - 1 else view.cleaned_offset
        if not state.log.swap_cleaned(state.view.generation, bases, cleaned, mark):
            raise CleaningAborted(f"{state.log.directory} changed during the cleaning")
        state.view = state.log.cleaning_view()  # the swap bumped the generation
        state.stats.segments_cleaned += len(group)


def _following_base(view: CleaningView, segments: list[SegmentSpan]) -> int:
    """The base offset of the segment after ``segments`` (the active one at the latest)."""
    later = [s.base_offset for s in view.sealed if s.base_offset > segments[-1].base_offset]
    return later[0] if later else view.active_base_offset


def _build_offset_map(state: _Pass, offsets: OffsetMap) -> int:
    """Fill ``offsets`` from the dirty part; returns the offset where the map ends (the
    active segment's base when everything fitted)."""
    view = state.view
    first_dirty = view.cleaned_offset
    for segment in view.sealed:
        if segment.next_offset <= first_dirty:
            continue
        for header, batch in _batches(state, segment):
            if header.last_offset < first_dirty or header.is_control:
                continue
            _, records = scan_batch(batch, header)
            for record in records:
                if record.key is not None and record.offset >= first_dirty:
                    offsets.put(record.key, record.offset)
            if offsets.full:
                log.info(
                    "%s: offset map full (%d keys): cleaning up to offset %d this pass",
                    state.log.directory,
                    len(offsets),
                    header.next_offset,
                )
                return header.next_offset
    return view.active_base_offset


def _last_batches(state: _Pass, segments: list[SegmentSpan]) -> dict[int, int]:
    """producer id -> base offset of its last batch in ``segments``."""
    last: dict[int, int] = {}
    for segment in segments:
        for header, _ in _batches(state, segment):
            if header.producer_id >= 0:
                last[header.producer_id] = header.base_offset
    return last


def _clean_group(
    state: _Pass,
    group: list[SegmentSpan],
    offsets: OffsetMap,
    producers: dict[int, int],
    map_end: int,
) -> LogSegment:
    """Write the kept records of ``group`` into a new segment file, fsynced."""
    directory = state.log.directory
    base = group[0].base_offset
    (directory / f"{segment_name(base)}.log{CLEANED_SUFFIX}").unlink(missing_ok=True)
    cleaned = LogSegment(
        directory, base, state.view.config.index_interval_bytes, suffix=CLEANED_SUFFIX
    )
    cleaned.gaps_allowed = True
    try:
        for segment in group:
            for header, batch in _batches(state, segment):
                kept = _filter(
                    state, header, batch, offsets=offsets, producers=producers, map_end=map_end
                )
                if kept is not None:
                    cleaned.append([kept], [parse_header(kept)])
                    state.throttle.take(len(kept))
                    state.stats.bytes_written += len(kept)
        cleaned.seal()
        cleaned.fsync()
    except BaseException:
        cleaned.delete()
        raise
    return cleaned


def _filter(
    state: _Pass,
    header: BatchHeader,
    batch: bytes,
    *,
    offsets: OffsetMap,
    producers: dict[int, int],
    map_end: int,
) -> bytes | None:
    """The batch as it stays after cleaning, or None when it goes."""
    if header.is_control:
        return batch
    region, records = scan_batch(batch, header)
    kept = [
        r
        for r in records
        if r.offset >= map_end
        or compaction.keep_record(
            offset=r.offset,
            key=r.key,
            is_tombstone=r.is_tombstone,
            latest_offset=None if r.key is None else offsets.latest(r.key),
            batch_timestamp_ms=header.max_timestamp,
            now_ms=state.now_ms,
            delete_retention_ms=state.view.config.delete_retention_ms,
        )
    ]
    state.stats.records_read += len(records)
    state.stats.records_removed += len(records) - len(kept)
    if not kept and not compaction.keep_emptied_batch(
        producer_id=header.producer_id,
        is_producers_last_batch=producers.get(header.producer_id) == header.base_offset,
        batch_timestamp_ms=header.max_timestamp,
        now_ms=state.now_ms,
        producer_id_expiration_ms=state.settings.producer_id_expiration_ms,
    ):
        return None
    return rebuild_batch(batch, header, region, kept)


def _batches(state: _Pass, segment: SegmentSpan) -> Iterator[tuple[BatchHeader, bytes]]:
    """Every batch of a sealed segment, CRC-checked, read through the cleaner's own file
    descriptor (the log may delete the file meanwhile: the generation check catches it)."""
    path = state.log.directory / f"{segment_name(segment.base_offset)}.log"
    try:
        fd = os.open(path, os.O_RDONLY)
    except FileNotFoundError:
        raise CleaningAborted(f"{path} disappeared during the cleaning") from None
    try:
        yield from _read_batches(state, fd, path)
    finally:
        os.close(fd)


def _read_batches(state: _Pass, fd: int, path: object) -> Iterator[tuple[BatchHeader, bytes]]:
    position, buf, buf_start = 0, b"", 0
    while True:
        if state.stop.is_set():
            raise CleaningAborted("the cleaner is stopping")
        relative = position - buf_start
        if relative + LOG_OVERHEAD > len(buf) or (
            relative + peek_length(buf, relative)[1] > len(buf)
        ):
            want = _READ_CHUNK_BYTES
            if relative + LOG_OVERHEAD <= len(buf):
                want = max(want, peek_length(buf, relative)[1])
            buf, buf_start, relative = os.pread(fd, want, position), position, 0
            state.throttle.take(len(buf))
            state.stats.bytes_read += len(buf)
            if not buf:
                return
            size = peek_length(buf, 0)[1] if len(buf) >= LOG_OVERHEAD else 0
            if len(buf) < HEADER_SIZE or not HEADER_SIZE <= size <= len(buf):
                raise CorruptDataError(f"{path}: torn batch at position {position}")
        header = parse_header(buf, relative)
        batch = buf[relative : relative + header.size_bytes]
        if crc32c(memoryview(batch)[CRC_START:]) != header.crc:
            raise CorruptDataError(f"{path}: CRC mismatch at position {position}")
        yield header, batch
        position += header.size_bytes


class LogCleaner:
    """The background thread (module docstring). ``add``/``remove`` name the logs it
    looks after; it cleans only those whose policy compacts."""

    def __init__(
        self,
        settings: CleanerSettings | None = None,
        *,
        clock_ms: Callable[[], int] | None = None,
    ) -> None:
        self.settings = settings or CleanerSettings()
        self._clock_ms = clock_ms or (lambda: int(time.time() * 1000))
        self._logs: dict[str, PartitionLog] = {}
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._wake = threading.Event()
        self._thread: threading.Thread | None = None
        self._throttle = Throttle(self.settings.io_bytes_per_s)
        self.totals = CleanStats()
        self.passes = 0
        self.failures = 0
        # A log whose cleaning failed (bad data) waits this long before another try, so
        # it does not keep the others waiting.
        self._failed_until: dict[str, float] = {}

    def add(self, name: str, partition_log: PartitionLog) -> None:
        with self._lock:
            self._logs[name] = partition_log

    def remove(self, name: str) -> None:
        with self._lock:
            self._logs.pop(name, None)

    def start(self) -> None:
        self._thread = threading.Thread(target=self._loop, name="conveyor-cleaner", daemon=True)
        self._thread.start()

    def wake(self) -> None:
        self._wake.set()

    def close(self) -> None:
        self._stop.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join()

    def dirty_logs(self) -> list[CleanableLog]:
        with self._lock:
            logs = list(self._logs.items())
        now = time.monotonic()
        out = []
        for name, partition_log in logs:
            if self._failed_until.get(name, 0.0) > now:
                continue
            try:
                view = partition_log.cleaning_view()
            except ConveyorError:
                continue  # closed or failed: nothing to clean
            if not view.config.compacted:
                continue
            clean, dirty = compaction.dirty_split(view.sealed, view.cleaned_offset)
            out.append(CleanableLog(name, clean, dirty, view.config.min_cleanable_dirty_ratio))
        return out

    def clean_once(self) -> CleanStats | None:
        """Clean the dirtiest log that is due, on this thread; None when none is due."""
        chosen = compaction.choose_log(self.dirty_logs())
        if chosen is None:
            return None
        with self._lock:
            partition_log = self._logs.get(chosen.name)
        if partition_log is None:
            return None
        self.passes += 1
        try:
            stats = clean_log(
                partition_log,
                now_ms=self._clock_ms(),
                settings=self.settings,
                throttle=self._throttle,
                stop=self._stop,
            )
        except (ConveyorError, OSError) as exc:
            self.failures += 1
            self._failed_until[chosen.name] = time.monotonic() + _FAILED_BACKOFF_S
            log.error(
                "cleaning %s failed (next try in %d s): %s", chosen.name, _FAILED_BACKOFF_S, exc
            )
            return None
        self.totals.add(stats)
        log.info(
            "cleaned %s: dirty ratio %.2f, %d segments, %d of %d records removed, %.1f MB "
            "read in %.2f s",
            chosen.name,
            chosen.dirty_ratio,
            stats.segments_cleaned,
            stats.records_removed,
            stats.records_read,
            stats.bytes_read / 1e6,
            stats.seconds,
        )
        return stats

    def _loop(self) -> None:
        while not self._stop.is_set():
            try:
                cleaned = self.clean_once()
            except CleaningAborted as exc:
                log.info("cleaning given up: %s", exc)
                cleaned = None
            if cleaned is None:
                self._wake.wait(self.settings.backoff_ms / 1000)
                self._wake.clear()
