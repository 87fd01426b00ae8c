"""Background fsync threads shared by many partition logs.

Appends never wait for the disk on the caller's thread: a log hands its flush rounds to a
:class:`Flusher`, whose threads run ``fsync`` (which releases the GIL). Group commit lives in
:meth:`PartitionLog._flush_round`: one round per log at a time; appends that arrive while it
runs are covered by the next round, so one fsync serves everything waiting at that moment.
The interval policy is driven by the timer thread here.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Protocol


class _IntervalLog(Protocol):
    def flush_due(self, now_monotonic: float) -> bool: ...

    def request_flush(self) -> None: ...


class Flusher:
    def __init__(self, threads: int = 2, on_flush: Callable[[float], None] | None = None) -> None:
        self._executor = ThreadPoolExecutor(
            max_workers=threads, thread_name_prefix="conveyor-flush"
        )
        self._interval_logs: dict[int, tuple[_IntervalLog, float]] = {}
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._timer: threading.Thread | None = None
        # Called on a flush thread with the seconds each fsync round of a log took (the
        # broker passes its metrics' recorder); None: not measured.
        self.on_flush = on_flush

    def flushed(self, seconds: float, files: int) -> None:
        """A log's fsync round covered ``files`` files in ``seconds``."""
        if files and self.on_flush is not None:
            self.on_flush(seconds)

    def submit(self, fn: Callable[[], None]) -> None:
        self._executor.submit(fn)

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
