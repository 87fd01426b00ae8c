"""Background fsync threads shared by many partition logs: broker-wide group commit.

Appends never wait for the disk on the caller's thread. A log that has durability waiters
(or a sealed segment to flush) asks the :class:`Flusher` for a flush round with
:meth:`Flusher.request_round`. Rounds run one at a time, broker-wide: a round takes every
log that asked since the last one began, fsyncs all their dirty files concurrently on the
flush threads (``fsync`` releases the GIL), and wakes, in each log, exactly the waiters
whose appends that log's fsync covered (:meth:`PartitionLog.flush_step`). Logs whose
waiters arrived during the round are taken by the next one. So concurrent produce
requests to many partitions share one flush cycle instead of queueing one round per
partition per request (Kafka leaves fsync to the OS; this is the group commit that
PostgreSQL's WAL and etcd's batched backend commit do, across every dirty segment).
The interval policy is driven by the timer thread here.

The one exception to "never on the caller's thread": a caller that may block briefly (the
broker's event loop, for one small acks=all produce) asks for an *inline* round with
:meth:`Flusher.begin_inline`. When that produce is the only request the loop has to
serve, the flusher has been idle for a while and the log's unflushed bytes are few
(:func:`inline_round`), the round runs on the caller's thread:
its fsync (~140 us here) costs less than the two thread wake-ups of a hand-off (the
flush thread's, then the loop's), which preempt the loop on a busy machine. Requests that
arrive meanwhile, or soon after, find the flusher busy or not idle long enough and go to
the flush threads as before, so concurrent produces still share rounds (an inline round
happens at most once per idle spell).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Protocol

log = logging.getLogger(__name__)

# An inline round needs the flusher idle for this long: a request that comes sooner after
# a round is likely one of several concurrent ones, which should share the next round on
# the flush threads rather than each take the caller's thread for an fsync in turn.
INLINE_IDLE_MIN_S = 0.0001
# ... and at most this many unflushed bytes in one file (no directory): a small fsync,
# whose time on the caller's thread is the disk's journal commit, not a data write-back.
# A lone small request is latency-bound; larger ones come from throughput-bound producers
# (W1: 25-60 KB a request), for which the loop working while the disk does is worth more.
INLINE_BYTES_MAX = 8 * 1024


def inline_round(
    *,
    requests_waiting: int,
    busy: bool,
    idle_s: float,
    files: int,
    dir_dirty: bool,
    dirty_bytes: int,
    idle_min_s: float = INLINE_IDLE_MIN_S,
    bytes_max: int = INLINE_BYTES_MAX,
) -> bool:
    """Whether a log's flush round may run on the caller's thread (an event loop) instead
    of a flush thread: only when the round's request is the only one the caller has to
    serve (``requests_waiting`` counts it: with others, the loop has work to do while the
    disk works, and their rounds should be shared, not run one after another), no round
    runs or waits (``busy``), the flusher has been idle for at least ``idle_min_s``, and
    the log has at most one dirty file, no directory entry to flush, and at most
    ``bytes_max`` bytes to write back."""
    return (
        requests_waiting == 1
        and not busy
        and idle_s >= idle_min_s
        and files <= 1
        and not dir_dirty
        and dirty_bytes <= bytes_max
    )


class _IntervalLog(Protocol):
    def flush_due(self, now_monotonic: float) -> bool: ...

    def request_flush(self) -> None: ...


class RoundLog(Protocol):
    def flush_step(self) -> bool:
        """Fsync what the log wrote so far, wake the waiters it covered; True when more
        waiters arrived meanwhile (the log needs another round)."""
        ...


class Flusher:
    def __init__(
        self,
        threads: int = 2,
        on_flush: Callable[[float], None] | None = None,
        on_round: Callable[[int], None] | None = None,
        *,
        inline: bool = True,
        inline_idle_min_s: float = INLINE_IDLE_MIN_S,
        on_inline: Callable[[], None] | None = None,
    ) -> None:
        self.threads = max(1, threads)
        self._executor = ThreadPoolExecutor(
            max_workers=self.threads, thread_name_prefix="conveyor-flush"
        )
        self._interval_logs: dict[int, tuple[_IntervalLog, float]] = {}
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._timer: threading.Thread | None = None
        # Logs waiting for the next round (insertion-ordered, one entry per log).
        self._pending: dict[int, RoundLog] = {}
        self._round_running = False
        # When the last round ended (the flusher is idle since); inline rounds need a gap.
        self._idle_since = time.monotonic()
        self.inline_enabled = inline  # False: every round on the flush threads
        self.inline_idle_min_s = inline_idle_min_s
        self.rounds = 0  # flush rounds run so far (tests and benchmarks read it)
        self.inline_rounds = 0  # of which on the caller's thread (begin_inline)
        # Called on a flush thread with the seconds each fsync of a log took (the broker
        # passes its metrics' recorder); None: not measured.
        self.on_flush = on_flush
        # Called after each round with the number of logs it flushed (the broker's metrics).
        self.on_round = on_round
        # Called for each round run on the caller's thread (begin_inline), after on_round.
        self.on_inline = on_inline

    def flushed(self, seconds: float, files: int) -> None:
        """A log's fsync step covered ``files`` files in ``seconds``."""
        if files and self.on_flush is not None:
            self.on_flush(seconds)

    def submit(self, fn: Callable[[], None]) -> None:
        self._executor.submit(fn)

    def request_round(self, partition_log: RoundLog) -> None:
        """Have ``partition_log`` flushed by the next round (started now if none runs)."""
        with self._lock:
            self._pending[id(partition_log)] = partition_log
            if self._round_running:
                return
            self._round_running = True
        self._executor.submit(self._run_rounds)

    def begin_inline(
        self, *, requests_waiting: int, files: int, dir_dirty: bool, dirty_bytes: int
    ) -> bool:
        """Claim a round for the caller's own thread (see :func:`inline_round`); True: the
        caller fsyncs its log now and then calls :meth:`end_inline`, and every other
        request meanwhile waits for the flush threads' next round, started by
        ``end_inline``. False: the caller hands off with :meth:`request_round`."""
        with self._lock:
            if not self.inline_enabled or not inline_round(
                requests_waiting=requests_waiting,
                busy=self._round_running or bool(self._pending),
                idle_s=time.monotonic() - self._idle_since,
                files=files,
                dir_dirty=dir_dirty,
                dirty_bytes=dirty_bytes,
                idle_min_s=self.inline_idle_min_s,
            ):
                return False
            self._round_running = True
            self.rounds += 1
            self.inline_rounds += 1
        if self.on_round is not None:
            self.on_round(1)
        if self.on_inline is not None:
            self.on_inline()
        return True

    def end_inline(self, again: RoundLog | None) -> None:
        """The inline round is over; ``again``: its log still has waiters. Runs the rounds
        that were asked for meanwhile on the flush threads."""
        with self._lock:
            if again is not None:
                self._pending.setdefault(id(again), again)
            if not self._pending:
                self._round_running = False
                self._idle_since = time.monotonic()
                return
        self._executor.submit(self._run_rounds)

    def _run_rounds(self) -> None:
        while True:
            with self._lock:
                logs = list(self._pending.values())
                self._pending.clear()
                if not logs:
                    self._round_running = False
                    self._idle_since = time.monotonic()
                    return
                self.rounds += 1
            if self.on_round is not None:
                # Before the round wakes anyone, so an ack never precedes its round's count.
                self.on_round(len(logs))
            again = self._round(logs)
            if again:
                with self._lock:
                    for partition_log in again:
                        self._pending.setdefault(id(partition_log), partition_log)

    def _round(self, logs: list[RoundLog]) -> list[RoundLog]:
        """One flush cycle over ``logs``: their fsyncs run concurrently on up to
        ``threads`` threads (this one included); returns the logs that need another round."""
        work = list(reversed(logs))  # popped from the end: the oldest request first
        again: list[RoundLog] = []
        helpers: list[Future[None]] = [
            self._executor.submit(self._drain, work, again)
            for _ in range(min(self.threads, len(logs)) - 1)
        ]
        self._drain(work, again)
        for helper in helpers:
            # A helper that has not started yet (its thread is busy) has nothing left to do.
            if not helper.cancel():
                helper.result()
        return again

    def _drain(self, work: list[RoundLog], again: list[RoundLog]) -> None:
        while True:
            try:
                partition_log = work.pop()  # list.pop is atomic under the GIL
            except IndexError:
                return
            try:
                more = partition_log.flush_step()
            except Exception:
                # A bug in one log must not strand the waiters of the others in this round.
                log.exception("flush step of %r failed", partition_log)
                continue
            if more:
                again.append(partition_log)

    def add_interval(self, log: _IntervalLog, interval_ms: int) -> None:
        with self._lock:
            self._interval_logs[id(log)] = (log, interval_ms / 1000)
            if self._timer is None:
                self._timer = threading.Thread(
                    target=self._tick_loop, name="conveyor-flush-timer", daemon=True
                )
                self._timer.start()

    def remove_interval(self, log: _IntervalLog) -> None:
        with self._lock:
            self._interval_logs.pop(id(log), None)

    def _tick_loop(self) -> None:
        while True:
            with self._lock:
                logs = list(self._interval_logs.values())
            tick_s = min((interval for _, interval in logs), default=0.1) / 2
            if self._stop.wait(max(0.001, min(tick_s, 0.1))):
                return
            now = time.monotonic()
            for log, _ in logs:
                if log.flush_due(now):
                    log.request_flush()

    def close(self) -> None:
        self._stop.set()
        if self._timer is not None:
            self._timer.join()
        self._executor.shutdown(wait=True)
