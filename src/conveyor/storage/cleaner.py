"""The log cleaner: compacts the logs whose cleanup policy says ``compact``.

One cleaner per broker (Kafka's ``LogCleaner`` with one thread): a background thread
that, every ``backoff_ms`` or when woken, picks the dirtiest log that is due
(``compaction.choose_log``) and cleans it in two halves:

1. **the pass** (``cleaning.py``): read the dirty part into an offset map, then write the
   kept records of each group of sealed segments into ``.cleaned`` files. The CPU-heavy
   half runs in a worker process (``worker=True``, the broker's default) at a lower CPU
   priority, so decoding records never holds the broker's interpreter lock while it
   serves produce and fetch; ``clean_log`` can also run it in the calling thread;
2. **the swap** (here, in the broker's process): each cleaned file replaces its segments
   (``PartitionLog.swap_cleaned``, crash-safe as ``swap.py`` explains), provided the log
   did not change since the pass read it (its ``generation``); otherwise the pass is given
   up, its files deleted, and the next one starts over.

Reading and writing count against a token bucket of ``io_bytes_per_s`` (Kafka's
``log.cleaner.io.max.bytes.per.second``) so that cleaning does not starve produce and
fetch of the disk.
"""

from __future__ import annotations

import logging
import os
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

import msgspec

from conveyor.protocol.cleaning import CleanedGroup, CleaningOutcome, CleaningPlan
from conveyor.protocol.errors import ConveyorError, StorageError
from conveyor.storage import compaction
from conveyor.storage.cleaning import CleaningAborted, Throttle, sealed, write_pass
from conveyor.storage.compaction import CleanableLog
from conveyor.storage.config import DAY_MS, MIB
from conveyor.storage.log import CleaningView, PartitionLog
from conveyor.storage.segment import LogSegment
from conveyor.storage.swap import CLEANED_SUFFIX

__all__ = [
    "CleanStats",
    "CleanerSettings",
    "CleaningAborted",
    "LogCleaner",
    "Throttle",
    "clean_log",
]

log = logging.getLogger(__name__)

_FAILED_BACKOFF_S = 600
_WORKER_TIMEOUT_S = 3600  # a pass that takes longer is killed (and retried later)


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


@dataclass(frozen=True, slots=True)
class CleanerSettings:
    io_bytes_per_s: int = 0  # 0: unthrottled, as Kafka's default
    dedupe_buffer_bytes: int = 32 * MIB  # the offset map's memory (Kafka: 128 MiB)
    backoff_ms: int = 15_000  # idle time between looks for a dirty log (Kafka's default)
    producer_id_expiration_ms: int = DAY_MS
    worker: bool = False  # run the pass in a worker process (the broker sets it)

    @property
    def offset_map_entries(self) -> int:
        return max(1, self.dedupe_buffer_bytes // compaction.OFFSET_MAP_ENTRY_BYTES)


def plan_for(
    partition_log: PartitionLog, view: CleaningView, now_ms: int, settings: CleanerSettings
) -> CleaningPlan:
    return CleaningPlan(
        directory=str(partition_log.directory),
        sealed=sealed(view.sealed),
        active_base_offset=view.active_base_offset,
        cleaned_offset=view.cleaned_offset,
        now_ms=now_ms,
        index_interval_bytes=view.config.index_interval_bytes,
        segment_bytes_max=view.config.segment_bytes_max,
        delete_retention_ms=view.config.delete_retention_ms,
        producer_id_expiration_ms=settings.producer_id_expiration_ms,
        offset_map_entries=settings.offset_map_entries,
        io_bytes_per_s=settings.io_bytes_per_s,
    )


Runner = Callable[[CleaningPlan], tuple[CleaningOutcome, list[LogSegment]]]


def clean_log(
    partition_log: PartitionLog,
    *,
    now_ms: int,
    settings: CleanerSettings | None = None,
    throttle: Throttle | None = None,
    stop: threading.Event | None = None,
    runner: Runner | None = None,
) -> CleanStats:
    """Clean ``partition_log`` once (a no-op unless its policy compacts), the pass in this
    thread unless ``runner`` says otherwise. Raises CleaningAborted when the log changed
    meanwhile, ConveyorError on bad data."""
    settings = settings or CleanerSettings()
    view = partition_log.cleaning_view()
    stats = CleanStats()
    if not view.config.compacted or not view.sealed:
        return stats
    started = time.perf_counter()
    partition_log.allow_gaps()  # durable before any cleaned file is swapped in
    plan = plan_for(partition_log, view, now_ms, settings)
    if runner is None:

        def runner(plan: CleaningPlan) -> tuple[CleaningOutcome, list[LogSegment]]:
            return write_pass(plan, throttle=throttle, stop=stop)

    try:
        outcome, written = runner(plan)
    except (ConveyorError, OSError) as exc:
        if partition_log.generation != view.generation:
            # A truncation or retention cut a file under the pass: not a real error.
            raise CleaningAborted(f"{partition_log.directory} changed: {exc}") from exc
        raise
    stats.bytes_read, stats.bytes_written = outcome.bytes_read, outcome.bytes_written
    stats.records_read, stats.records_removed = outcome.records_read, outcome.records_removed
    _swap_all(partition_log, view, outcome, written, stats)
    stats.seconds = time.perf_counter() - started
    return stats


def _swap_all(
    partition_log: PartitionLog,
    view: CleaningView,
    outcome: CleaningOutcome,
    written: list[LogSegment],
    stats: CleanStats,
) -> None:
    """Swap the cleaned groups in, in order; only the last records the pass's progress.
    Any change of the log between them (a generation not ours) gives the rest up."""
    generation: int | None = view.generation
    for index, (group, cleaned) in enumerate(zip(outcome.groups, written, strict=True)):
        last = index == len(outcome.groups) - 1
        mark = outcome.map_end if last else view.cleaned_offset
        if generation is not None:
            generation = partition_log.swap_cleaned(generation, group.bases, cleaned, mark)
        else:
            cleaned.delete()
        if generation is not None:
            stats.segments_cleaned += len(group.bases)
    if generation is None:
        raise CleaningAborted(f"{partition_log.directory} changed during the cleaning")


class _Worker:
    """The pass in a worker process (``python -m conveyor.storage.cleaning``), killable."""

    def __init__(self, stop: threading.Event) -> None:
        self._stop = stop
        self._lock = threading.Lock()
        self._process: subprocess.Popen[bytes] | None = None

    def __call__(self, plan: CleaningPlan) -> tuple[CleaningOutcome, list[LogSegment]]:
        with self._lock:
            if self._stop.is_set():
                raise CleaningAborted("the cleaner is stopping")
            process = self._process = subprocess.Popen(
                [sys.executable, "-m", "conveyor.storage.cleaning", str(os.getpid())],
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
            )
        try:
            out, _ = process.communicate(msgspec.json.encode(plan), timeout=_WORKER_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            process.kill()
            process.communicate()
            raise StorageError(f"a cleaning of {plan.directory} took over an hour") from None
        finally:
            with self._lock:
                self._process = None
        if self._stop.is_set() or process.returncode != 0:
            _delete_cleaned(plan)
            raise CleaningAborted(f"the cleaning worker ended with {process.returncode}")
        outcome = msgspec.json.decode(out, type=CleaningOutcome)
        if outcome.aborted is not None:
            raise CleaningAborted(outcome.aborted)
        if outcome.error is not None:
            raise StorageError(outcome.error)
        reopened: list[LogSegment] = []
        try:
            for group in outcome.groups:
                reopened.append(_reopen(plan, group))
        except StorageError:
            for segment in reopened:
                segment.delete()
            _delete_cleaned(plan)
            raise
        return outcome, reopened

    def kill(self) -> None:
        with self._lock:
            if self._process is not None and self._process.poll() is None:
                self._process.kill()


def _reopen(plan: CleaningPlan, group: CleanedGroup) -> LogSegment:
    """A cleaned file the worker wrote, opened here with its indexes rebuilt (and every
    batch checked once more: the worker fsynced it, nothing may be torn, and it must be
    the size the worker wrote: any other writer of that name is a bug to stop at)."""
    from pathlib import Path

    base = group.bases[0]
    segment = LogSegment(
        Path(plan.directory), base, plan.index_interval_bytes, suffix=CLEANED_SUFFIX
    )
    segment.gaps_allowed = True
    result = segment.recover()
    if result.dropped_bytes:
        segment.delete()
        raise StorageError(f"cleaned segment {base} of {plan.directory}: {result.reason}")
    if group.size_bytes >= 0 and segment.size_bytes != group.size_bytes:
        segment.delete()
        raise StorageError(
            f"cleaned segment {base} of {plan.directory}: {segment.size_bytes} bytes, "
            f"the worker wrote {group.size_bytes}"
        )
    segment.seal()
    return segment


def _delete_cleaned(plan: CleaningPlan) -> None:
    from pathlib import Path

    for path in Path(plan.directory).glob(f"*{CLEANED_SUFFIX}"):
        path.unlink(missing_ok=True)


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
        self._worker = _Worker(self._stop) if self.settings.worker else None
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
        if self._worker is not None:
            self._worker.kill()
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
                runner=self._worker,
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
