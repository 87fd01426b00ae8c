"""One cleaning pass over a log's files: the CPU-heavy half of the log cleaner.

Given a :class:`CleaningPlan` (the sealed segments as the broker saw them), it

1. reads the dirty part (cleaned offset .. the active segment) and notes each key's latest
   offset (``compaction.OffsetMap``, bounded: a full map ends the pass early);
2. notes the last batch of each idempotent producer in the range it cleans;
3. writes each group of sealed segments below the map's end (``compaction.group_segments``)
   into a new ``.cleaned`` file, batch by batch, keeping what ``compaction.keep_record``
   keeps (``protocol.recordfilter``: same offsets, valid CRC), fsynced;

and answers a :class:`CleaningOutcome` naming the files. It only reads segment files (its
own descriptors) and writes ``.cleaned`` ones: the swap into the live log is the broker's
(``PartitionLog.swap_cleaned``, ``cleaner.py``). The broker runs it in a worker process
(``python -m conveyor.storage.cleaning``: plan on stdin, outcome on stdout, at a lower CPU
priority) so that decoding records never holds the broker's interpreter lock; tests and
``clean_log`` also run it in the caller's thread.
"""

from __future__ import annotations

import contextlib
import ctypes
import logging
import os
import signal
import sys
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Final

import msgspec

from conveyor.protocol.batch import (
    CRC_START,
    HEADER_SIZE,
    LOG_OVERHEAD,
    BatchHeader,
    crc32c,
    parse_header,
    peek_length,
)
from conveyor.protocol.cleaning import CleanedGroup, CleaningOutcome, CleaningPlan, SealedSegment
from conveyor.protocol.errors import ConveyorError, CorruptDataError
from conveyor.protocol.recordfilter import rebuild_batch, scan_batch
from conveyor.storage import compaction
from conveyor.storage.compaction import OffsetMap, SegmentSpan
from conveyor.storage.segment import LogSegment, segment_name
from conveyor.storage.swap import CLEANED_SUFFIX

log = logging.getLogger(__name__)

_READ_CHUNK_BYTES = 1 << 20
WORKER_NICENESS = 10  # the worker yields the CPU to the broker's own work


class CleaningAborted(Exception):  # noqa: N818 -- a normal outcome, not an error
    """The log changed or the cleaner is stopping: this pass is given up."""


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


def spans(plan: CleaningPlan) -> list[SegmentSpan]:
    return [
        SegmentSpan(s.base_offset, s.next_offset, s.size_bytes, s.max_timestamp_ms)
        for s in plan.sealed
    ]


def sealed(segments: list[SegmentSpan]) -> list[SealedSegment]:
    return [
        SealedSegment(
            base_offset=s.base_offset,
            next_offset=s.next_offset,
            size_bytes=s.size_bytes,
            max_timestamp_ms=s.max_timestamp_ms,
        )
        for s in segments
    ]


@dataclass(slots=True)
class _Pass:
    plan: CleaningPlan
    directory: Path
    throttle: Throttle
    stop: threading.Event
    outcome: CleaningOutcome = field(default_factory=lambda: CleaningOutcome(map_end=0))


def write_pass(
    plan: CleaningPlan, *, throttle: Throttle | None = None, stop: threading.Event | None = None
) -> tuple[CleaningOutcome, list[LogSegment]]:
    """Run the pass; the cleaned segments are returned open (their indexes in memory) for
    a caller in this process. Raises CleaningAborted, ConveyorError (bad data), OSError."""
    state = _Pass(
        plan,
        Path(plan.directory),
        throttle or Throttle(plan.io_bytes_per_s),
        stop or threading.Event(),
    )
    segments = spans(plan)
    offsets = OffsetMap(plan.offset_map_entries)
    map_end = _build_offset_map(state, segments, offsets)
    state.outcome.map_end = map_end
    chosen = [s for s in segments if s.base_offset < map_end]
    producers = _last_batches(state, chosen)
    groups = compaction.group_segments(
        chosen, _following_base(plan, chosen), plan.segment_bytes_max
    )
    written: list[LogSegment] = []
    try:
        for group in groups:
            cleaned = _clean_group(state, group, offsets, producers, map_end)
            written.append(cleaned)
            bases = [s.base_offset for s in group]
            state.outcome.groups.append(
                CleanedGroup(bases=bases, path=str(cleaned.log_path), size_bytes=cleaned.size_bytes)
            )
    except BaseException:
        for cleaned in written:
            cleaned.delete()
        raise
    return state.outcome, written


def _following_base(plan: CleaningPlan, segments: list[SegmentSpan]) -> int:
    """The base offset of the segment after ``segments`` (the active one at the latest)."""
    if not segments:
        return plan.active_base_offset
    later = [s.base_offset for s in plan.sealed if s.base_offset > segments[-1].base_offset]
    return later[0] if later else plan.active_base_offset


def _build_offset_map(state: _Pass, segments: list[SegmentSpan], offsets: OffsetMap) -> int:
    """Fill ``offsets`` from the dirty part; returns the offset where the map ends (the
    active segment's base when everything fitted)."""
    first_dirty = state.plan.cleaned_offset
    for segment in segments:
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
                    state.directory,
                    len(offsets),
                    header.next_offset,
                )
                return header.next_offset
    return state.plan.active_base_offset


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
    base = group[0].base_offset
    (state.directory / f"{segment_name(base)}.log{CLEANED_SUFFIX}").unlink(missing_ok=True)
    cleaned = LogSegment(
        state.directory, base, state.plan.index_interval_bytes, suffix=CLEANED_SUFFIX
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
                    state.outcome.bytes_written += len(kept)
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
    plan = state.plan
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
            now_ms=plan.now_ms,
            delete_retention_ms=plan.delete_retention_ms,
        )
    ]
    state.outcome.records_read += len(records)
    state.outcome.records_removed += len(records) - len(kept)
    if not kept and not compaction.keep_emptied_batch(
        producer_id=header.producer_id,
        is_producers_last_batch=producers.get(header.producer_id) == header.base_offset,
        batch_timestamp_ms=header.max_timestamp,
        now_ms=plan.now_ms,
        producer_id_expiration_ms=plan.producer_id_expiration_ms,
    ):
        return None
    return rebuild_batch(batch, header, region, kept)


def _batches(state: _Pass, segment: SegmentSpan) -> Iterator[tuple[BatchHeader, bytes]]:
    """Every batch of a sealed segment, CRC-checked, read through this pass's own file
    descriptor (the log may delete the file meanwhile: the broker's swap notices)."""
    path = state.directory / f"{segment_name(segment.base_offset)}.log"
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
            state.outcome.bytes_read += len(buf)
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


_PR_SET_PDEATHSIG: Final = 1  # linux/prctl.h


def _exit_with(parent: int) -> None:
    """End this worker the moment the broker that started it is gone (killed: it cannot).

    An orphan that went on writing would race the restarted broker's own worker for the
    same ``B.log.cleaned`` name (each unlinks it before creating its own): the broker could
    then reopen the orphan's half-written file as its pass's output and swap it in, losing
    the records the orphan had not copied yet. On Linux the kernel SIGKILLs the worker as
    its parent exits (``PR_SET_PDEATHSIG``, as Kafka-style supervisors and Chromium do);
    ``parent`` comes from the broker (argv), because a broker that died before this line
    ran has already left the worker to another parent. Elsewhere a thread polls.

    The signal comes when the *thread* that started the worker ends (prctl(2)): that is
    the cleaner's own thread (``LogCleaner._loop``), which lives as long as the cleaner."""
    linux = sys.platform == "linux"
    if linux:
        libc = ctypes.CDLL(None, use_errno=True)
        if libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0) != 0:
            raise OSError(ctypes.get_errno(), "prctl(PR_SET_PDEATHSIG) failed")
    if os.getppid() != parent:
        os._exit(1)
    if linux:
        return  # the kernel watches from here on

    def watch() -> None:
        while os.getppid() == parent:
            time.sleep(0.5)
        os._exit(1)

    threading.Thread(target=watch, name="conveyor-cleaner-parent", daemon=True).start()


def main() -> int:
    """The worker process: a plan on stdin, the outcome on stdout (one JSON each).
    ``python -m conveyor.storage.cleaning [PARENT_PID]`` (default: the current parent)."""
    with contextlib.suppress(OSError):  # a platform without nice: the same priority
        os.nice(WORKER_NICENESS)
    _exit_with(int(sys.argv[1]) if len(sys.argv) > 1 else os.getppid())
    plan = msgspec.json.decode(sys.stdin.buffer.read(), type=CleaningPlan)
    try:
        outcome, written = write_pass(plan)
        for segment in written:
            segment.close()
    except CleaningAborted as exc:
        outcome = CleaningOutcome(map_end=0, aborted=str(exc))
    except (ConveyorError, OSError) as exc:
        outcome = CleaningOutcome(map_end=0, error=str(exc))
    try:
        sys.stdout.buffer.write(msgspec.json.encode(outcome))
        sys.stdout.flush()
    except BrokenPipeError:  # the broker is gone: nobody to answer (its files are left)
        os._exit(1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
