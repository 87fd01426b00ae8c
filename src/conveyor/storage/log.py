"""A partition's log: an ordered list of segments, the last one active.

Threading: every method may be called from any thread. Lock order: ``_flush_lock`` before
``_lock``. ``_lock`` guards the segment list and offsets and is held only for short,
non-blocking work (page-cache reads and writes). ``_flush_lock`` is held for a whole fsync
round and by the operations that remove bytes (truncation, retention, close), so an fsync
never races with a file being cut or deleted and the flushed offset never overstates.
"""

from __future__ import annotations

import bisect
import logging
import os
import threading
import time
from collections import OrderedDict, deque
from collections.abc import Callable, Iterator
from concurrent.futures import Future
from pathlib import Path
from typing import NamedTuple

from conveyor.protocol.batch import (
    TRANSACTIONAL_BIT,
    BatchHeader,
    stamp_prefix,
    validate_batches,
)
from conveyor.protocol.errors import (
    ConveyorError,
    ErrorCode,
    InvalidRequestError,
    LogTruncatedError,
    OffsetOutOfRangeError,
    StorageError,
)
from conveyor.protocol.txn import marker_type
from conveyor.storage import logstart, swap, txnrecovery
from conveyor.storage.abortindex import AbortedTxn
from conveyor.storage.compaction import SegmentSpan
from conveyor.storage.config import LogConfig
from conveyor.storage.direct import DIRECT_BYTES_MIN
from conveyor.storage.epochs import CHECKPOINT_FILE, EpochCache
from conveyor.storage.flusher import Flusher
from conveyor.storage.recovery import load_segments
from conveyor.storage.retention import SegmentInfo, segments_below_start, segments_to_delete
from conveyor.storage.scan import stored_batches
from conveyor.storage.segment import (
    PREALLOCATE_BYTES,
    STORED_BATCH_BYTES_HARD_MAX,
    LogSegment,
    RecoveryResult,
    write_error,
)
from conveyor.storage.txnindex import TxnIndex

log = logging.getLogger(__name__)

CLEAN_SHUTDOWN_FILE = ".clean-shutdown"
# Present once the log may hold offset gaps (compacted here, or copied from a compacted
# leader): from then on batches need only increasing offsets, not contiguous ones.
GAPS_FILE = ".offset-gaps"
_PREFIX_BYTES = 16  # base_offset, batch_length, partition_leader_epoch: what append stamps
# Entries of sealed segments' aborted-transaction indexes kept in memory per log (about
# 100 bytes each); beyond it the least recently loaded segments' are dropped.
ABORTED_LOADED_MAX = 100_000


class AppendResult(NamedTuple):
    base_offset: int
    last_offset: int


class FileRange(NamedTuple):
    """Whole batches as they lie in a segment file, to be sent without reading them
    (``os.sendfile``). ``fd`` is this range's own duplicate of the segment's descriptor:
    a roll, retention or compaction that closes the segment meanwhile does not affect it
    (the file stays readable until ``fd`` is closed, which the caller must do). A
    truncation can shorten or rewrite the file under it: ``generation`` is the log's at
    the lookup, and a sender compares it with the log's after sending (a changed one means
    the bytes sent may not be the ones found).
    """

    fd: int
    position: int
    size_bytes: int
    generation: int


class CleaningView(NamedTuple):
    """What a cleaning may work on (``cleaner.py``): the sealed segments, whose files do
    not change until a truncation, retention or swap bumps ``generation``."""

    generation: int
    sealed: list[SegmentSpan]
    active_base_offset: int
    cleaned_offset: int  # the first offset not cleaned yet, within the sealed segments
    config: LogConfig


class PartitionLog:
    """Append, read, truncate and expire a partition's record batches on disk."""

    def __init__(
        self,
        directory: Path,
        config: LogConfig,
        flusher: Flusher | None,
        clock_ms: Callable[[], int] | None,
    ) -> None:
        self.directory = directory
        self.config = config
        self._owns_flusher = flusher is None
        self._flusher = flusher or Flusher(threads=1)
        self._clock_ms = clock_ms or (lambda: int(time.time() * 1000))
        self._lock = threading.Lock()
        self._flush_lock = threading.Lock()
        self._segments: list[LogSegment] = []
        self._bases: list[int] = []
        # The first offset a read may ask for: the first segment's base offset, or beyond it
        # once records were deleted inside that segment (logstart.py, advance_start).
        self._start_offset = 0
        self._flushed_offset = 0
        self._waiters: deque[tuple[int, Future[int]]] = deque()
        self._flush_running = False
        self._dirty: list[LogSegment] = []
        self._dir_dirty = False
        # Bytes appended since the last fsync began (an estimate after a truncation or a
        # swap: it only decides whether an inline flush round is small, flusher.py).
        self._dirty_bytes = 0
        self._last_flush_monotonic = time.monotonic()
        self._failure: ConveyorError | None = None
        self._closed = False
        self._flush_after_unlock = False
        self.recovered: list[tuple[int, RecoveryResult]] = []
        self.epochs = EpochCache(directory, [])
        # sealed segments whose aborted-transaction index is in memory, oldest loaded first
        self._loaded_aborted: OrderedDict[LogSegment, int] = OrderedDict()  # -> entries
        self._loaded_entries = 0
        # Bumped whenever segments are removed or cut (truncation, retention, a swap): a
        # cleaning that started before gives up instead of swapping stale segments in.
        self.generation = 0
        # The first offset the cleaner has not cleaned yet (swap.CHECKPOINT_FILE).
        self.cleaned_offset = 0
        self.gaps_allowed = False  # GAPS_FILE
        # the open transactions (txnindex.py): from the active segment's index header and
        # batches after an open or a truncation (txnrecovery.py), fed by every append,
        # which writes each aborted one to the active segment's index (abortindex.py)
        self.txns = TxnIndex()

    # ---- opening -------------------------------------------------------------------------

    @classmethod
    def open(
        cls,
        directory: str | os.PathLike[str],
        config: LogConfig | None = None,
        *,
        flusher: Flusher | None = None,
        clock_ms: Callable[[], int] | None = None,
        initial_offset: int = 0,
    ) -> PartitionLog:
        path = Path(directory)
        # Recovery rewrites indexes and checkpoints: on a full disk that is DISK_FULL (the
        # broker skips the partition and opens it again when asked), not a raw OSError
        # that ends whatever task opened it.
        try:
            path.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise write_error(exc, f"create {path}") from exc
        self = cls(path, config or LogConfig(), flusher, clock_ms)
        try:
            self._load(initial_offset)
        except BaseException as exc:
            self._abandon()
            if isinstance(exc, OSError):
                raise write_error(exc, f"open {path}") from exc
            raise
        self._flush_if_rolled()
        if self.config.flush.mode == "interval":
            self._flusher.add_interval(self, self.config.flush.interval_ms)
        return self

    def _abandon(self) -> None:
        """After a failed open: close what it opened (its segments' descriptors, its own
        flusher's threads; a retried open must not leak them), write nothing."""
        for segment in self._segments:
            segment.close()
        self._segments = []
        if self._owns_flusher:
            self._flusher.close()

    def _load(self, initial_offset: int) -> None:
        for stray in self.directory.glob("*.tmp"):
            stray.unlink()
        swap.complete_pending(self.directory)
        marker = self.directory / CLEAN_SHUTDOWN_FILE
        clean = marker.exists()
        marker.unlink(missing_ok=True)
        now_ms = self._clock_ms()
        self.gaps_allowed = (self.directory / GAPS_FILE).exists()
        self._segments, self.recovered = load_segments(
            self.directory,
            self.config.index_interval_bytes,
            clean=clean,
            now_ms=now_ms,
            gaps_allowed=self.gaps_allowed,
        )
        if not self._segments:
            self._segments.append(self._new_segment(initial_offset, now_ms))
        self._bases = [s.base_offset for s in self._segments]
        self._segments[-1].open_for_append(self._preallocate_bytes)
        self._flushed_offset = self.log_end_offset if clean else 0
        self.cleaned_offset = swap.read_checkpoint(self.directory)
        if not clean:
            # Everything that survived recovery is on disk now; make it durable before use.
            for segment in self._segments:
                segment.fsync()
            self._flushed_offset = self.log_end_offset
        # The transactions first: dropping every segment below the log start rolls a new
        # active one, which records those open at its base and seals the old one's index
        # (loaded by open_transactions; test_log_start_kill and test_abortindex found it).
        self.txns = txnrecovery.open_transactions(self._segments, self.directory, clean=clean)
        self._load_start(now_ms)
        self._load_epochs()

    def _load_start(self, now_ms: int) -> None:
        """The log start offset from its checkpoint; segments wholly below it (a crash
        after the checkpoint was written, before they were deleted) are deleted now."""
        checkpoint = logstart.read_checkpoint(self.directory)
        start = logstart.effective_start(checkpoint, self._segments[0].base_offset)
        if start > self.log_end_offset:
            # More was deleted than the log holds (segment files lost, or unflushed writes
            # lost in a crash): empty it and restart at the start, as Kafka does.
            log.warning(
                "%s: log start offset %d is beyond the log end %d: emptying the log",
                self.directory,
                start,
                self.log_end_offset,
            )
            for segment in self._segments:
                segment.delete()
            self._segments = [self._new_segment(start, now_ms)]
            self._bases = [start]
            self._flushed_offset = start
            self.txns = TxnIndex()  # nothing is left of what was open
            (self.directory / CHECKPOINT_FILE).unlink(missing_ok=True)
        self._start_offset = start
        count = segments_below_start(
            self.segment_infos(), log_start_offset=start, log_end_offset=self.log_end_offset
        )
        if count:
            self._drop_oldest_locked(count, now_ms)

    def _load_epochs(self) -> None:
        had_checkpoint = (self.directory / CHECKPOINT_FILE).exists()
        self.epochs = EpochCache.load(self.directory, self.log_end_offset)
        if self.epochs.truncate_from_start(self.log_start_offset):
            self.epochs.persist()
        if had_checkpoint or self.log_end_offset == self.log_start_offset:
            return
        # A log written before the cache existed: rebuild it from the batch headers once.
        for header in self._headers_unlocked(self.log_start_offset):
            self.epochs.assign(header.partition_leader_epoch, header.base_offset)
        self.epochs.persist()

    def _new_segment(
        self, base_offset: int, now_ms: int, open_txns: dict[int, int] | None = None
    ) -> LogSegment:
        """A new empty segment, open for appends (the active one); ``open_txns``: the
        transactions open at its base (a roll), which its aborted-transaction index's
        header keeps."""
        segment = LogSegment(self.directory, base_offset, self.config.index_interval_bytes)
        segment.created_ms = now_ms
        segment.gaps_allowed = self.gaps_allowed
        try:
            segment.aborted.create(open_txns or {})
            segment.open_for_append(self._preallocate_bytes)
        except OSError:
            # No file of it may stay behind: appends go on into the previous segment
            # (the roll is retried later), and a stray empty segment at this base would
            # overlap them at the next open (txn chaos seed 59, a full disk at a roll).
            segment.delete()
            raise
        self._dir_dirty = True
        return segment

    @property
    def _preallocate_bytes(self) -> int:
        """How far ahead of its data the active segment's file is extended (no further
        than a whole segment: a log of small segments would cut most of it at each roll)."""
        return min(PREALLOCATE_BYTES, self.config.segment_bytes_max)

    # ---- offsets -------------------------------------------------------------------------

    @property
    def log_start_offset(self) -> int:
        """The first offset a read may ask for (records below it are deleted, even those
        still on disk in the batch that holds it)."""
        return self._start_offset

    @property
    def log_end_offset(self) -> int:
        return self._segments[-1].next_offset

    @property
    def flushed_offset(self) -> int:
        """Every offset below this is fsynced: what survives a power loss."""
        return self._flushed_offset

    @property
    def durable_offset(self) -> int:
        """Every offset below this is durable per the flush policy (acks build on it)."""
        if self.config.flush.mode == "always":
            return self._flushed_offset
        return self.log_end_offset

    @property
    def size_bytes(self) -> int:
        return sum(s.size_bytes for s in self._segments)

    @property
    def segment_count(self) -> int:
        return len(self._segments)

    def segment_infos(self) -> list[SegmentInfo]:
        return [
            SegmentInfo(s.base_offset, s.size_bytes, s.max_timestamp_ms) for s in self._segments
        ]

    # ---- appending -----------------------------------------------------------------------

    def append(
        self,
        batches: bytes | bytearray | memoryview,
        *,
        leader_epoch: int = 0,
        allow_control: bool = False,
    ) -> AppendResult:
        """Validate one or more concatenated batches, assign their offsets and write them.

        Nothing is written unless every batch passes (magic, lengths, record count, CRC;
        no control batch unless ``allow_control``: markers are the coordinator's only).
        The write is in the page cache on return; ``durable(result.last_offset)`` tells when
        it is durable per the flush policy.
        """
        view = memoryview(batches)
        spans = validate_batches(view, self.config.batch_bytes_max)
        if not allow_control and any(span.header.is_control for span in spans):
            raise InvalidRequestError(
                "control batches (transaction markers) are written by the coordinator only",
                code=ErrorCode.INVALID_RECORD,
            )
        total = len(view)
        with self._lock:
            self._check_usable()
            self._maybe_roll(total)
            offset = base_offset = self.log_end_offset
            if leader_epoch > self.epochs.latest_epoch:
                self.epochs.assign(leader_epoch, base_offset)
            buffers: list[bytes | memoryview] = []
            headers: list[BatchHeader] = []
            for span in spans:
                header = span.header
                end = span.position + header.size_bytes
                buffers.append(stamp_prefix(offset, header.batch_length, leader_epoch))
                buffers.append(view[span.position + _PREFIX_BYTES : end])
                headers.append(_rebased(header, offset))
                offset += header.last_offset_delta + 1
            self._write(buffers, headers)
            self._observe_txns(view, [s.position for s in spans], headers)
        self._flush_if_rolled()
        return AppendResult(base_offset, offset - 1)

    def _observe_txns(
        self, view: memoryview, positions: list[int], headers: list[BatchHeader]
    ) -> None:
        """Transactional batches open or end transactions; an ABORT marker's entry goes
        to the active segment's index (one small write; other batches: no I/O)."""
        for position, header in zip(positions, headers, strict=True):
            if header.attributes & TRANSACTIONAL_BIT:
                marker = marker_type(view, position) if header.is_control else None
                aborted = self.txns.observe(header, marker)
                if aborted is not None:
                    self._segments[-1].aborted.append(aborted)

    def append_replicated(self, batches: bytes | bytearray | memoryview) -> AppendResult:
        """Append a leader's batches byte for byte (offsets and epochs already set).

        No batch may start below this log's end offset and offsets only grow: a follower
        that diverged truncates first. Gaps are normal: the leader's log may be compacted
        (records removed, offsets kept), so its batches may be emptied or missing."""
        view = memoryview(batches)
        spans = validate_batches(view, STORED_BATCH_BYTES_HARD_MAX, stored=True)
        with self._lock:
            self._check_usable()
            rebase = self._starts_inside(spans[0].header)
            expected = spans[0].header.base_offset if rebase else self.log_end_offset
            for span in spans:
                if span.header.base_offset > expected:
                    self._allow_gaps_locked()
                if span.header.base_offset < expected:
                    raise InvalidRequestError(
                        f"replicated batch starts at {span.header.base_offset}, expected "
                        f"{expected} or later (log end offset {self.log_end_offset})",
                        code=ErrorCode.OFFSET_OUT_OF_RANGE,
                        base_offset=span.header.base_offset,
                        expected_offset=expected,
                        log_end_offset=self.log_end_offset,
                    )
                expected = span.header.next_offset
            if rebase:
                self._rebase_locked(spans[0].header.base_offset)
            for span in spans:
                epoch = span.header.partition_leader_epoch
                if epoch > self.epochs.latest_epoch:
                    self.epochs.assign(epoch, span.header.base_offset)
            self._maybe_roll(len(view), spans[-1].header.last_offset)
            base_offset = spans[0].header.base_offset
            # A large copy (a follower catching up) goes past the page cache (direct.py).
            direct = len(view) >= DIRECT_BYTES_MIN
            self._write([view], [span.header for span in spans], direct=direct)
            self._observe_txns(view, [s.position for s in spans], [s.header for s in spans])
        self._flush_if_rolled()
        return AppendResult(base_offset, expected - 1)

    def _starts_inside(self, first: BatchHeader) -> bool:
        """An empty log whose start falls inside ``first``: a follower restarted at its
        leader's log start, which deleting records moved inside a batch. It takes the
        batch whole (``_rebase_locked``), as Kafka does when a follower's first append
        starts below its log end; the records below the start stay deleted."""
        end = self.log_end_offset
        return (
            first.base_offset < end <= first.last_offset
            and end == self._start_offset
            and len(self._segments) == 1
            and self._segments[0].size_bytes == 0
        )

    def _rebase_locked(self, base_offset: int) -> None:
        """Replace the one empty segment by one at ``base_offset`` (below the log start)."""
        end = self.log_end_offset
        self._segments[0].delete()
        self.txns = TxnIndex()
        segment = self._new_segment(base_offset, self._clock_ms())
        self._segments = [segment]
        self._bases = [base_offset]
        self._dirty = []
        log.info(
            "%s: the first batch starts at %d, below the log start %d: the log begins there",
            self.directory,
            base_offset,
            end,
        )

    def _write(
        self,
        buffers: list[bytes | memoryview],
        headers: list[BatchHeader],
        *,
        direct: bool = False,
    ) -> None:
        active = self._segments[-1]
        before = active.size_bytes
        active.append(buffers, headers, direct=direct)
        self._dirty_bytes += active.size_bytes - before
        if not self._dirty or self._dirty[-1] is not active:
            self._dirty.append(active)

    def _maybe_roll(self, incoming_bytes: int, last_offset: int | None = None) -> None:
        """Roll before an append of ``incoming_bytes`` whose last offset is ``last_offset``
        (a replicated append may jump over a compacted gap) when the segment is full."""
        active = self._segments[-1]
        if active.size_bytes == 0:
            return
        now_ms = self._clock_ms()
        too_big = active.size_bytes + incoming_bytes > self.config.segment_bytes_max
        too_old = now_ms - active.created_ms >= self.config.segment_ms_max
        highest = max(self.log_end_offset, last_offset or 0)
        offsets_full = highest - active.base_offset > 2**31 - 2**20
        if too_big or too_old or offsets_full:
            self._roll(now_ms)

    def _roll(self, now_ms: int) -> None:
        active = self._segments[-1]
        try:  # sealing and the new segment's files: each step can be redone
            active.seal()
            self._cut_tail_locked(active)
            active.aborted.seal()
            segment = self._new_segment(active.next_offset, now_ms, self.txns.ongoing)
        except OSError as exc:  # as an append's: a full disk is DISK_FULL, not a crash
            raise write_error(exc, f"roll {self.directory}") from exc
        self._segments.append(segment)
        self._bases.append(segment.base_offset)
        self._keep_loaded([active])  # its index was written live: in memory, now bounded
        log.debug("%s: rolled segment at offset %d", self.directory, segment.base_offset)
        # The sealed segment is flushed in the background in every mode (as Kafka does on
        # roll); requested once _lock is released.
        self._flush_after_unlock = True

    def _cut_tail_locked(self, segment: LogSegment) -> None:
        """Cut ``segment``'s preallocated tail; the next flush round makes the cut durable,
        ahead of any later segment's data (it goes first in ``_dirty``). Under ``_lock``."""
        if segment.trim() and segment not in self._dirty:
            self._dirty.insert(0, segment)

    def _flush_if_rolled(self) -> None:
        if self._flush_after_unlock:
            self._flush_after_unlock = False
            self.request_flush()

    def _check_usable(self) -> None:
        if self._closed:
            raise StorageError(f"log {self.directory} is closed")
        if self._failure is not None:
            raise self._failure

    # ---- durability ----------------------------------------------------------------------

    def durable(self, offset: int, *, requests_waiting: int | None = None) -> Future[int]:
        """A future that resolves (to the durable offset) once ``offset`` is durable per the
        flush policy: after an fsync covering it for ``always``, at once otherwise.

        ``requests_waiting``: the caller could block for a small fsync (the broker's event
        loop) and has that many requests waiting, this one's included. When the flusher allows
        it (``flusher.inline_round``: this request alone, the flusher idle, a small
        round), the round runs on this thread and the future is done on return; otherwise,
        and always with None, the flush threads run it."""
        future: Future[int] = Future()
        with self._lock:
            if self._failure is not None:
                future.set_exception(self._failure)
                return future
            if offset >= self.log_end_offset:
                # Truncated between the append and this call (or never written): no flush
                # round could cover it, and a waiter would keep the flusher spinning.
                future.set_exception(
                    LogTruncatedError(
                        f"offset {offset} is not in the log (log end offset "
                        f"{self.log_end_offset}): it was truncated before it was durable"
                    )
                )
                return future
            if self.config.flush.mode != "always" or offset < self._flushed_offset:
                future.set_result(self.durable_offset)
                return future
            self._waiters.append((offset, future))
            start = not self._flush_running
            self._flush_running = True
        if start and not (requests_waiting is not None and self._flush_inline(requests_waiting)):
            self._flusher.request_round(self)
        return future

    def _flush_inline(self, requests_waiting: int) -> bool:
        """Run this log's flush round on this thread if the flusher allows it; False: the
        caller hands the round off. Never waits for ``_flush_lock``: a truncation or
        retention holding it runs on a worker thread and may take long."""
        if not self._flush_lock.acquire(blocking=False):
            return False
        try:
            with self._lock:
                files = sum(1 for s in self._dirty if s.fd >= 0)
                dir_dirty, dirty_bytes = self._dir_dirty, self._dirty_bytes
            if not self._flusher.begin_inline(
                requests_waiting=requests_waiting,
                files=files,
                dir_dirty=dir_dirty,
                dirty_bytes=dirty_bytes,
            ):
                return False
            try:
                self._flush_locked()
            except BaseException:
                self._flusher.end_inline(None)
                with self._lock:
                    self._flush_running = False
                raise
        finally:
            self._flush_lock.release()
        try:
            more = self._resolve_waiters()
        except BaseException:
            self._flusher.end_inline(None)
            raise
        # Waiters that arrived during the fsync (another thread's appends) go to the
        # flush threads: end_inline queues this log for their round.
        self._flusher.end_inline(self if more else None)
        return True

    def request_flush(self) -> None:
        """Start a background fsync round unless one is running (it will cover this too)."""
        with self._lock:
            if self._flush_running or self._closed:
                return
            self._flush_running = True
        self._flusher.request_round(self)

    def flush_due(self, now_monotonic: float) -> bool:
        interval_s = self.config.flush.interval_ms / 1000
        return bool(self._dirty) and now_monotonic - self._last_flush_monotonic >= interval_s

    def flush(self) -> int:
        """Fsync everything written so far, on this thread; returns the flushed offset."""
        self._flush_once()
        self._resolve_waiters()
        return self._flushed_offset

    def flush_step(self) -> bool:
        """This log's part of a broker-wide flush round (``flusher.py``): fsync what is
        written, wake the waiters it covers; True when more waiters arrived during the
        fsync (the flusher then takes this log into its next round)."""
        try:
            self._flush_once()
            return self._resolve_waiters()
        except BaseException:
            with self._lock:
                self._flush_running = False
            raise

    def _flush_once(self) -> None:
        with self._flush_lock:
            self._flush_locked()

    def _flush_locked(self) -> None:
        """Fsync what is written so far; the caller holds ``_flush_lock``."""
        with self._lock:
            if self._failure is not None:
                return
            target = self.log_end_offset
            dirty, self._dirty = self._dirty, []
            dir_dirty, self._dir_dirty = self._dir_dirty, False
            self._dirty_bytes = 0
            fds = [s.fd for s in dirty if s.fd >= 0]
            aborted = [s.aborted for s in dirty if s.fd >= 0]
        started = time.perf_counter()
        try:
            for fd in fds:
                os.fdatasync(fd)  # data and size, not mtime (LogSegment.fsync)
            for index in aborted:  # what it wrote is durable with its segment's log
                index.fsync()
            if dir_dirty:
                _fsync_directory(self.directory)
        except OSError as exc:
            failure = StorageError(f"fsync failed in {self.directory}: {exc}")
            log.error("%s: log is now read-only: %s", self.directory, failure)
            with self._lock:
                self._failure = failure
            return
        self._flusher.flushed(time.perf_counter() - started, len(fds) + dir_dirty)
        with self._lock:
            self._flushed_offset = max(self._flushed_offset, target)
            self._last_flush_monotonic = time.monotonic()

    def _resolve_waiters(self) -> bool:
        """Wake covered waiters; True when some still wait (another round is needed)."""
        done: list[tuple[int, Future[int]]] = []
        with self._lock:
            failure = self._failure
            while self._waiters and (failure or self._waiters[0][0] < self._flushed_offset):
                done.append(self._waiters.popleft())
            more = bool(self._waiters)
            if not more:
                self._flush_running = False
            flushed = self._flushed_offset
        for _, future in done:
            if failure is not None:
                future.set_exception(failure)
            else:
                future.set_result(flushed)
        return more

    # ---- reading -------------------------------------------------------------------------

    def read(self, offset: int, max_bytes: int, *, upper_offset: int | None = None) -> bytes:
        """Whole batches starting with the one that holds ``offset``: at most ``max_bytes``
        unless the first batch alone is larger (it is returned whole), only batches that end
        below ``upper_offset`` (the high watermark, for consumers). Every batch returned has
        passed its CRC check; b"" when nothing is there yet."""
        with self._lock:
            self._check_usable()
            start, end = self.log_start_offset, self.log_end_offset
            if offset < start or offset > end:
                raise OffsetOutOfRangeError(offset, start, end)
            upper = end if upper_offset is None else min(upper_offset, end)
            i = bisect.bisect_right(self._bases, offset) - 1
            for segment in self._segments[i:]:
                if segment.next_offset <= max(offset, segment.base_offset):
                    continue  # below the offset, or emptied by compaction
                return segment.read(max(offset, segment.base_offset), max_bytes, upper)
            return b""

    def read_range(self, offset: int, max_bytes: int) -> FileRange | None:
        """Where :meth:`read` would find its batches (up to the log end, within one
        segment), as a :class:`FileRange` to send from the file; None when nothing is
        there yet. The CRCs are not checked: the receiver checks them (a replica)."""
        with self._lock:
            self._check_usable()
            start, end = self.log_start_offset, self.log_end_offset
            if offset < start or offset > end:
                raise OffsetOutOfRangeError(offset, start, end)
            i = bisect.bisect_right(self._bases, offset) - 1
            for segment in self._segments[i:]:
                if segment.next_offset <= max(offset, segment.base_offset):
                    continue  # below the offset, or emptied by compaction
                found = segment.batch_range(max(offset, segment.base_offset), max_bytes)
                if found is None:
                    return None
                position, size = found
                segment.read_ahead(position + size, max_bytes)  # nothing when at the end
                return FileRange(os.dup(segment.fd), position, size, self.generation)
            return None

    def headers(self, offset: int) -> Iterator[BatchHeader]:
        """The headers of the batches from the one holding ``offset`` to the log end (for
        rebuilding state from the log: producer ids, epochs). Reads in 1 MiB chunks."""
        yield from self._headers_unlocked(offset)

    def last_stable_offset(self, high_watermark: int) -> int:
        """Below it no transaction is open (``txnindex.py``): read_committed's end."""
        with self._lock:
            return self.txns.last_stable_offset(high_watermark)

    def open_transactions(self) -> dict[int, int]:
        with self._lock:
            return dict(self.txns.ongoing)

    def in_transaction(self, producer_id: int) -> bool:
        """Has this producer a transaction open here? (KIP-890's check before a
        transactional append, ``broker/txn_verify.py``)"""
        with self._lock:
            return producer_id in self.txns.ongoing

    def aborted_in_memory(self, start: int, end: int) -> list[AbortedTxn] | None:
        """As :meth:`aborted_in` when every index it needs is in memory, else None (then
        call :meth:`aborted_in` off the event loop: it reads files)."""
        with self._lock:
            self._check_usable()
            found = txnrecovery.collect(self._segments, self._bases, start, end)
            return found if isinstance(found, list) else None

    def aborted_in(self, start: int, end: int) -> list[AbortedTxn]:
        """The aborted transactions with records in [start, end) (read_committed), from
        the indexes of the segments the range touches and the few after it that may hold
        their markers (``txnrecovery.collect``), each loaded on first use."""
        fresh: list[LogSegment] = []  # loaded by this lookup: not dropped before it ends
        while True:
            with self._lock:
                self._check_usable()
                found = txnrecovery.collect(self._segments, self._bases, start, end)
                if isinstance(found, list):
                    self._keep_loaded(fresh)
                    return found
                generation = self.generation
            # A sealed segment's index, read and checked without the lock (a big one takes
            # a while): only a truncation, retention or swap changes it, and those bump
            # the generation, so what was read is adopted only if none happened.
            parsed = found.aborted.read(found.next_offset)
            with self._lock:
                current = self.generation == generation and not found.aborted.loaded
                sealed = found is not self._segments[-1]
                if current and not found.aborted.adopt(parsed, sealed=sealed):
                    i = self._segments.index(found)
                    txnrecovery.rebuild(self._segments, i, "missing or damaged")
                fresh.append(found)

    def _keep_loaded(self, fresh: list[LogSegment]) -> None:
        """Bound the sealed segments' aborted-transaction entries in memory
        (``ABORTED_LOADED_MAX``): the least recently loaded are dropped (read again when
        needed), never the active segment's nor those ``fresh`` (loaded by the lookup
        that calls this). Under ``_lock``; O(segments dropped)."""
        for segment in fresh:
            if segment not in self._loaded_aborted:
                self._loaded_aborted[segment] = len(segment.aborted)
                self._loaded_entries += len(segment.aborted)
        while self._loaded_entries > ABORTED_LOADED_MAX and self._loaded_aborted:
            segment, count = next(iter(self._loaded_aborted.items()))
            if segment in fresh:
                break  # everything older is gone already; the lookup needed these
            del self._loaded_aborted[segment]
            self._loaded_entries -= count
            segment.aborted.unload()

    def _forget_removed(self) -> None:
        """After segments were deleted, replaced or cut: stop tracking them (and the
        active one's, which stays loaded)."""
        active = self._segments[-1]
        for segment in [s for s in self._loaded_aborted if s.fd < 0 or s is active]:
            self._loaded_entries -= self._loaded_aborted.pop(segment)

    def _headers_unlocked(self, offset: int) -> Iterator[BatchHeader]:
        for header, _ in stored_batches(self._read_to_end, offset):
            yield header

    def _read_to_end(self, offset: int, max_bytes: int) -> bytes:
        return self.read(offset, max_bytes) if offset < self.log_end_offset else b""

    # ---- leader epochs (KIP-101) ---------------------------------------------------------

    @property
    def latest_epoch(self) -> int:
        return self.epochs.latest_epoch

    def assign_epoch(self, epoch: int) -> None:
        """A new leader records where its epoch starts: at its log end."""
        with self._lock:
            self._check_usable()
            self.epochs.assign(epoch, self.log_end_offset)

    def end_offset_for_epoch(self, epoch: int) -> tuple[int, int]:
        """(largest epoch <= ``epoch`` in this log, where it ends): answers a follower's
        OffsetsForLeaderEpoch; (-1, -1) when this log knows no epoch that old."""
        with self._lock:
            return self.epochs.end_offset_for(epoch, self.log_end_offset)

    def offset_for_timestamp(self, timestamp_ms: int, min_offset: int = 0) -> int | None:
        """Base offset of the first batch whose max timestamp is >= ``timestamp_ms`` and
        that holds an offset at or after ``min_offset`` and the log start (the record
        inside it is found by ``BrokerService.offsets``)."""
        with self._lock:
            floor = max(min_offset, self._start_offset)
            for segment in self._segments:
                if segment.next_offset <= floor:
                    continue
                found = segment.find_offset_by_timestamp(timestamp_ms, floor)
                if found is not None:
                    return found
        return None

    def max_timestamp(self) -> tuple[int, int] | None:
        """(the largest batch max timestamp in the log, base offset of the first batch that
        holds it), None when the log is empty: Kafka's ListOffsets MAX_TIMESTAMP, from the
        per-segment maximum each segment keeps (no scan beyond the one segment)."""
        with self._lock:
            best = None
            for segment in self._segments:
                if segment.max_timestamp_ms >= 0 and (
                    best is None or segment.max_timestamp_ms > best.max_timestamp_ms
                ):
                    best = segment
            if best is None:
                return None
            found = best.find_offset_by_timestamp(best.max_timestamp_ms)
            return None if found is None else (best.max_timestamp_ms, found)

    # ---- removing data -------------------------------------------------------------------

    def truncate_to(self, offset: int) -> None:
        """Remove every batch that holds an offset >= ``offset`` (followers do this when the
        leader changes). At or below the log start the log is emptied and restarts at
        ``offset``; when the cut falls at or below the start (the batch holding ``offset``
        also holds the start), it is emptied and restarts at the log start. Writes waiting
        for durability beyond the new end fail with LogTruncatedError."""
        with self._flush_lock, self._lock:
            self._check_usable()
            if offset >= self.log_end_offset:
                return
            if offset <= self._start_offset or self._cut_offset(offset) <= self._start_offset:
                restart = min(offset, self._start_offset)
                if restart < self._start_offset:
                    # Lowered before the segments change (logstart.py: crash safety).
                    self._write_start(restart)
                for segment in self._segments:
                    segment.delete()
                self._segments = [self._new_segment(restart, self._clock_ms())]
                self._start_offset = restart
                self.txns = TxnIndex()
            else:
                while self._segments[-1].base_offset >= offset:
                    self._segments.pop().delete()
                txnrecovery.loaded(self._segments, len(self._segments) - 1)
                self._segments[-1].truncate_to(offset)
                self.txns = txnrecovery.replay_active(self._segments)
            self._segments[-1].open_for_append(self._preallocate_bytes)
            self._bases = [s.base_offset for s in self._segments]
            self._dirty = [s for s in self._dirty if s.fd >= 0]
            self._forget_removed()
            self._dir_dirty = True
            self.generation += 1
            end = self.log_end_offset
            self._flushed_offset = min(self._flushed_offset, end)
            if self.cleaned_offset > end:
                self.cleaned_offset = end
                swap.write_checkpoint(self.directory, end)
            if end == self.log_start_offset:
                self.epochs.clear()
            elif self.epochs.truncate_from_end(end):
                self.epochs.persist()
            log.info(
                "%s: truncated to offset %d (log end offset now %d)", self.directory, offset, end
            )
            cut = [w for w in self._waiters if w[0] >= end]
            self._waiters = deque(w for w in self._waiters if w[0] < end)
        for waited, future in cut:
            future.set_exception(
                LogTruncatedError(f"offset {waited} was truncated before it was durable")
            )

    def _cut_offset(self, offset: int) -> int:
        """Where a truncation to ``offset`` (inside the log) ends it: the base offset of the
        batch holding ``offset``."""
        holder = self._segments[bisect.bisect_right(self._bases, offset) - 1]
        found = holder.locate(offset)
        return holder.next_offset if found is None else found[1].base_offset

    def reset_to(self, offset: int) -> None:
        """Empty the log and restart it at ``offset`` (a follower whose leader deleted,
        by retention, the offsets it would fetch next: Kafka's truncateFullyAndStartAt)."""
        with self._flush_lock, self._lock:
            self._check_usable()
            self._write_start(offset)  # before the segments change (logstart.py)
            for segment in self._segments:
                segment.delete()
            self.txns = TxnIndex()
            self._segments = [self._new_segment(offset, self._clock_ms())]
            self._bases = [offset]
            self._start_offset = offset
            self._dirty = []
            self._forget_removed()
            self._dir_dirty = True
            self.generation += 1
            self.cleaned_offset = offset
            swap.write_checkpoint(self.directory, offset)
            self._flushed_offset = offset
            self.epochs.clear()
            cut, self._waiters = list(self._waiters), deque()
        for waited, future in cut:
            future.set_exception(
                LogTruncatedError(f"offset {waited} was removed before it was durable")
            )
        log.info("%s: emptied and restarted at offset %d", self.directory, offset)

    def apply_retention(self, now_ms: int | None = None) -> int:
        """Delete whole segments by age and size; returns how many were deleted. A log
        whose cleanup policy is only ``compact`` keeps every segment."""
        with self._flush_lock, self._lock:
            self._check_usable()
            if not self.config.deletes:
                return 0
            now = self._clock_ms() if now_ms is None else now_ms
            count = segments_to_delete(
                self.segment_infos(),
                retention_bytes=self.config.retention_bytes,
                retention_ms=self.config.retention_ms,
                now_ms=now,
            )
            if count == 0:
                return 0
            self._drop_oldest_locked(count, now)
            if self.epochs.truncate_from_start(self._start_offset):
                self.epochs.persist()
        self._flush_if_rolled()
        log.info(
            "%s: retention deleted %d segments; log start offset now %d",
            self.directory,
            count,
            self.log_start_offset,
        )
        return count

    def advance_start(self, offset: int) -> int:
        """Delete the records below ``offset`` (Kafka's DeleteRecords): the log start offset
        moves there, durably, never back, and every segment wholly below it is deleted.
        ``offset`` may fall inside a batch: reads at it return that whole batch, records
        below it included, as Kafka does (clients skip them). Returns the log start offset
        (unchanged when ``offset`` is not beyond it). The caller bounds ``offset`` (a leader
        by its high watermark); beyond the log end it raises ``OffsetOutOfRangeError``."""
        with self._flush_lock:
            with self._lock:
                self._check_usable()
                if offset <= self._start_offset:
                    return self._start_offset
                if offset > self.log_end_offset:
                    raise OffsetOutOfRangeError(offset, self._start_offset, self.log_end_offset)
            # The commit point. Only operations under _flush_lock move the start, and
            # appends only add beyond the log end, so nothing changed meanwhile.
            self._write_start(offset)
            with self._lock:
                self._start_offset = offset
                end = self.log_end_offset
                infos = self.segment_infos()
                count = segments_below_start(infos, log_start_offset=offset, log_end_offset=end)
                if count:
                    self._drop_oldest_locked(count, self._clock_ms())
                if self.epochs.truncate_from_start(offset):
                    self.epochs.persist()
        self._flush_if_rolled()
        log.info(
            "%s: records below %d deleted (%d segments); log start offset now %d",
            self.directory,
            offset,
            count,
            offset,
        )
        return offset

    def _write_start(self, offset: int) -> None:
        try:
            logstart.write_checkpoint(self.directory, offset)
        except OSError as exc:
            raise StorageError(
                f"cannot write the log start offset {offset} in {self.directory}: {exc}"
            ) from exc

    def _drop_oldest_locked(self, count: int, now_ms: int) -> None:
        """Delete the ``count`` oldest segments (retention, or below the log start); when
        that is all of them an empty segment is rolled first (the log end never moves
        back). Under ``_lock`` (and ``_flush_lock`` once the log is open)."""
        if count == len(self._segments):
            self._roll(now_ms)
        doomed, self._segments = self._segments[:count], self._segments[count:]
        for segment in doomed:
            segment.delete()
        self._bases = [s.base_offset for s in self._segments]
        self._dirty = [s for s in self._dirty if s.fd >= 0]
        self._forget_removed()
        self._dir_dirty = True
        self.generation += 1
        self._start_offset = max(self._start_offset, self._segments[0].base_offset)

    # ---- compaction (driven by cleaner.py) -----------------------------------------------

    def allow_gaps(self) -> None:
        """From now on offsets may jump between batches (before the first cleaning)."""
        with self._lock:
            self._allow_gaps_locked()

    def _allow_gaps_locked(self) -> None:
        if self.gaps_allowed:
            return
        marker = self.directory / GAPS_FILE
        with marker.open("wb") as f:
            os.fsync(f.fileno())
        swap.fsync_directory(self.directory)  # durable before any gap is written
        self.gaps_allowed = True
        for segment in self._segments:
            segment.gaps_allowed = True

    def cleaning_view(self) -> CleaningView:
        with self._lock:
            self._check_usable()
            sealed = [
                SegmentSpan(s.base_offset, s.next_offset, s.size_bytes, s.max_timestamp_ms)
                for s in self._segments[:-1]
            ]
            active = self._segments[-1].base_offset
            cleaned = min(max(self.cleaned_offset, self.log_start_offset), active)
            return CleaningView(self.generation, sealed, active, cleaned, self.config)

    def swap_cleaned(
        self, generation: int, bases: list[int], cleaned: LogSegment, cleaned_offset: int
    ) -> int | None:
        """Put ``cleaned`` (written and fsynced at ``cleaned.log_path``) in place of the
        sealed segments starting at ``bases``; returns the log's new generation. None when
        the log changed since ``generation``: nothing changes and the cleaned file is
        deleted. The file steps and
        why a crash at any point is safe are in ``swap.py``; an error after the commit
        leaves the swap for the next open to finish (the cleaned file is kept)."""
        with self._flush_lock:
            try:
                with self._lock:
                    first = bisect.bisect_left(self._bases, bases[0])
                    last = first + len(bases)
                    if (
                        self._closed
                        or self._failure is not None
                        or self.generation != generation
                        or last >= len(self._segments)
                        or self._bases[first:last] != bases
                    ):
                        cleaned.delete()
                        return None
                    end_offset = self._bases[last]
                    # Every marker is kept (cleaning.py): the replaced segments' entries
                    # and the first one's open transactions are the cleaned one's.
                    open_txns = txnrecovery.open_at_base(self._segments, first)
                    aborted = [
                        entry
                        for i in range(first, last)
                        for entry in txnrecovery.loaded(self._segments, i).entries()
                    ]
                swap_file = swap.commit(self.directory, cleaned.log_path, bases[0], end_offset)
                # in memory before a lookup can see it (its file is written once swapped in)
                cleaned.aborted.set_loaded(open_txns, aborted, sealed=True)
            except BaseException:
                cleaned.delete()
                raise
            with self._lock:
                replaced = self._segments[first:last]
                self._segments[first:last] = [cleaned]
                self._bases = [s.base_offset for s in self._segments]
                self._dirty = [s for s in self._dirty if s not in replaced]
                for segment in replaced:
                    segment.close()  # under _lock: no read is using its file now
                self._forget_removed()
                self._keep_loaded([cleaned])
                self.generation += 1
                new_generation = self.generation
                self.cleaned_offset = cleaned_offset
            for segment in replaced:
                segment.delete()
            cleaned.swapped_in(swap.finish(self.directory, swap_file, bases[0]))
            swap.fsync_directory(self.directory)
            swap.write_checkpoint(self.directory, cleaned_offset)
        log.info(
            "%s: cleaned segments %s into %d (%d bytes); cleaned up to offset %d",
            self.directory,
            bases,
            bases[0],
            cleaned.size_bytes,
            cleaned_offset,
        )
        return new_generation

    def reconfigure(self, config: LogConfig) -> None:
        """Apply new settings in place (a topic config change: no reopen, no pause). The
        next append, roll, retention or cleaning uses them."""
        with self._lock:
            self._check_usable()
            old, self.config = self.config, config
        if old.flush.mode == "interval":
            self._flusher.remove_interval(self)
        if config.flush.mode == "interval":
            self._flusher.add_interval(self, config.flush.interval_ms)
        if old.flush.mode == "always" and config.flush.mode != "always":
            self.request_flush()  # wake waiters: they count as durable from now on
        log.info("%s: settings changed: %s", self.directory, config)

    # ---- lifetime ------------------------------------------------------------------------

    def close(self) -> None:
        """Flush everything, close files, and mark the shutdown clean (no rescan on open)."""
        if self._closed:
            return
        self._flusher.remove_interval(self)
        with self._lock:  # the flush below makes the cut durable before the marker
            self._cut_tail_locked(self._segments[-1])
        self.flush()
        with self._flush_lock, self._lock:
            self._closed = True
            for segment in self._segments:
                segment.close()
            if self._failure is None:
                ongoing = self.txns.ongoing
                txnrecovery.write_open_checkpoint(
                    self.directory, self.log_end_offset, ongoing, len(self._segments[-1].aborted)
                )
                (self.directory / CLEAN_SHUTDOWN_FILE).touch()
                _fsync_directory(self.directory)
        if self._owns_flusher:
            self._flusher.close()

    def __enter__(self) -> PartitionLog:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()


def _rebased(header: BatchHeader, base_offset: int) -> BatchHeader:
    if header.base_offset == base_offset:
        return header
    return BatchHeader(
        base_offset,
        header.batch_length,
        header.partition_leader_epoch,
        header.magic,
        header.crc,
        header.attributes,
        header.last_offset_delta,
        header.base_timestamp,
        header.max_timestamp,
        header.producer_id,
        header.producer_epoch,
        header.base_sequence,
        header.records_count,
    )


def _fsync_directory(directory: Path) -> None:
    fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
