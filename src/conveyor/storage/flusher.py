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
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Protocol

log = logging.getLogger(__name__)


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
        self.rounds = 0  # flush rounds run so far (tests and benchmarks read it)
        # Called on a flush thread with the seconds each fsync of a log took (the broker
        # passes its metrics' recorder); None: not measured.
        self.on_flush = on_flush
        # Called after each round with the number of logs it flushed (the broker's metrics).
        self.on_round = on_round

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

    def _run_rounds(self) -> None:
        while True:
            with self._lock:
                logs = list(self._pending.values())
                self._pending.clear()
                if not logs:
                    self._round_running = False
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
