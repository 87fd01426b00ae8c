"""Raw baselines for the storage benchmark: ``os.write`` of the same batch bytes to a plain
file, fsynced on the same schedule as a flush policy, with no log around it.

Each policy has two variants, and the benchmark holds the log to the faster one:

* ``always``: *serial* writes then fsyncs on the writing thread, batch by batch;
  *pipelined* keeps up to ``depth`` writes waiting while a background thread fsyncs
  whatever has been written (group commit, as the log does).
* ``interval``: *serial* fsyncs on the writing thread once ``interval_s`` has passed since
  the last fsync; *pipelined* fsyncs on a background thread every ``interval_s``.

Every variant ends with all its writes fsynced, inside the timing.
"""

from __future__ import annotations

import os
import threading
import time
from collections import deque
from concurrent.futures import Future
from typing import Literal, NamedTuple

Variant = Literal["serial", "pipelined"]
VARIANTS: tuple[Variant, ...] = ("serial", "pipelined")


class RawRun(NamedTuple):
    seconds: float
    fsyncs: int


def raw_append(
    fd: int,
    policy: Literal["always", "interval"],
    variant: Variant,
    batch: bytes,
    batches: int,
    *,
    depth: int,
    interval_s: float,
) -> RawRun:
    """Write ``batch`` ``batches`` times at the end of the open file ``fd``, fsynced on the
    schedule of ``policy``; every write is fsynced when this returns."""
    started = time.perf_counter()
    if policy == "always" and variant == "serial":
        fsyncs = _always_serial(fd, batch, batches)
    elif policy == "always":
        fsyncs = _always_pipelined(fd, batch, batches, depth)
    elif variant == "serial":
        fsyncs = _interval_serial(fd, batch, batches, interval_s)
    else:
        fsyncs = _interval_background(fd, batch, batches, interval_s)
    return RawRun(time.perf_counter() - started, fsyncs)


def _write_all(fd: int, data: bytes) -> None:
    written = os.write(fd, data)
    if written != len(data):  # regular files write whole buffers unless the disk is full
        view = memoryview(data)
        while written < len(data):
            written += os.write(fd, view[written:])


def _always_serial(fd: int, batch: bytes, batches: int) -> int:
    for _ in range(batches):
        _write_all(fd, batch)
        os.fsync(fd)
    return batches


def _always_pipelined(fd: int, batch: bytes, batches: int, depth: int) -> int:
    committer = _GroupCommitter(fd)
    pending: deque[Future[None]] = deque()
    try:
        for _ in range(batches):
            if len(pending) >= depth:
                pending.popleft().result()
            _write_all(fd, batch)
            pending.append(committer.written())
        while pending:
            pending.popleft().result()
    finally:
        committer.close()
    return committer.fsyncs


def _interval_serial(fd: int, batch: bytes, batches: int, interval_s: float) -> int:
    fsyncs = 0
    last_fsync = time.perf_counter()
    for _ in range(batches):
        _write_all(fd, batch)
        if time.perf_counter() - last_fsync >= interval_s:
            os.fsync(fd)
            fsyncs += 1
            last_fsync = time.perf_counter()
    os.fsync(fd)
    return fsyncs + 1


def _interval_background(fd: int, batch: bytes, batches: int, interval_s: float) -> int:
    stop = threading.Event()
    fsyncs = [0]
    failure: list[OSError] = []

    def fsync_every_interval() -> None:
        try:
            while not stop.wait(interval_s):
                os.fsync(fd)
                fsyncs[0] += 1
        except OSError as exc:
            failure.append(exc)

    thread = threading.Thread(target=fsync_every_interval, name="bench-raw-fsync", daemon=True)
    thread.start()
    try:
        for _ in range(batches):
            _write_all(fd, batch)
    finally:
        stop.set()
        thread.join()
    if failure:
        raise failure[0]
    os.fsync(fd)
    return fsyncs[0] + 1


class _GroupCommitter:
    """A background thread that fsyncs everything written so far and resolves the futures
    of the writes it covered: the same group commit as the log, on a plain file."""

    def __init__(self, fd: int) -> None:
        self._fd = fd
        self._condition = threading.Condition()
        self._written = 0
        self._waiters: deque[tuple[int, Future[None]]] = deque()
        self._closing = False
        self._failure: OSError | None = None
        self.fsyncs = 0
        self._thread = threading.Thread(target=self._run, name="bench-group-fsync", daemon=True)
        self._thread.start()

    def written(self) -> Future[None]:
        """Call after each complete write; the future resolves once an fsync covers it."""
        future: Future[None] = Future()
        with self._condition:
            if self._failure is not None:
                future.set_exception(self._failure)
                return future
            self._written += 1
            self._waiters.append((self._written, future))
            self._condition.notify()
        return future

    def close(self) -> None:
        with self._condition:
            self._closing = True
            self._condition.notify()
        self._thread.join()

    def _run(self) -> None:
        while True:
            with self._condition:
                while not self._waiters and not self._closing:
                    self._condition.wait()
                if not self._waiters:
                    return
                covered = self._written
            try:
                os.fsync(self._fd)
            except OSError as exc:
                self._fail(exc)
                return
            self.fsyncs += 1
            done = []
            with self._condition:
                while self._waiters and self._waiters[0][0] <= covered:
                    done.append(self._waiters.popleft()[1])
            for future in done:
                future.set_result(None)

    def _fail(self, exc: OSError) -> None:
        with self._condition:
            self._failure = exc
            waiters, self._waiters = self._waiters, deque()
        for _, future in waiters:
            future.set_exception(exc)
