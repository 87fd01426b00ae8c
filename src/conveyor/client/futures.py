"""Completion of produced records: one shared object per batch, a tiny handle per record.

A batch holds thousands of records, so a ``concurrent.futures.Future`` per record (a lock,
a condition, a callback list each) would cost more than encoding the record. Instead every
record of a batch shares one :class:`BatchCompletion`, and :class:`RecordFuture` is two
slots: the completion and the record's index in the batch, from which its offset follows
(``base_offset + index``) once the broker has answered. Kafka's Java client does the same
(``FutureRecordMetadata`` over ``ProduceRequestResult``).

A completion is set on the producer's I/O thread and may be waited on from any thread
(``result``) or from any event loop (``await``).
"""

from __future__ import annotations

import _thread
import asyncio
import logging
import threading
from collections.abc import Callable, Generator
from typing import Any

import msgspec

from conveyor.client.types import RecordMetadata
from conveyor.protocol.errors import ConveyorError

log = logging.getLogger(__name__)


class BatchCompletion:
    """The outcome of one produce request: a base offset or an error, set once."""

    __slots__ = (
        "_callbacks",
        "_done",
        "_latch",
        "_lock",
        "_waiters",
        "base_offset",
        "error",
        "partition",
        "topic",
    )

    def __init__(self, topic: str, partition: int) -> None:
        self.topic = topic
        self.partition = partition
        self.base_offset = -1
        self.error: ConveyorError | None = None
        self._done = False
        # Held until the batch completes; each waiter that gets it hands it on at once, so
        # all wake. Not a threading.Event: its Condition costs ~6 us per batch made, set
        # and waited for (three AttributeErrors raised in Condition.__init__ alone), and at
        # linger 0 (W3) a batch is one send (docs/benchmarks.md, "W3: the client's share").
        self._latch = _thread.allocate_lock()
        self._latch.acquire()
        self._lock = threading.Lock()
        self._callbacks: list[Callable[[], None]] = []
        self._waiters: list[asyncio.Future[None]] = []

    @property
    def done(self) -> bool:
        return self._done

    def wait(self, timeout_s: float | None) -> bool:
        """Block until done or ``timeout_s`` passed (None: no limit); whether done."""
        if self._done:
            return True
        if timeout_s is not None and timeout_s <= 0:
            return False
        latch = self._latch
        if latch.acquire(True, -1 if timeout_s is None else timeout_s):
            latch.release()  # the next waiter's turn
            return True
        return self._done

    def complete(self, base_offset: int) -> None:
        self.base_offset = base_offset
        self._finish()

    def fail(self, error: ConveyorError) -> None:
        self.error = error
        self._finish()

    def _finish(self) -> None:
        with self._lock:
            if self._done:
                raise RuntimeError("a batch completion was set twice")  # a sender bug
            self._done = True
            self._latch.release()
            callbacks, self._callbacks = self._callbacks, []
            waiters, self._waiters = self._waiters, []
        for waiter in waiters:
            _resolve_threadsafe(waiter)
        for callback in callbacks:
            try:
                callback()
            except Exception:  # a user's callback must not stop the I/O thread
                log.exception("a send callback raised")

    def add_callback(self, callback: Callable[[], None]) -> None:
        """Call ``callback()`` when done: at once if already done, else on the I/O thread."""
        with self._lock:
            if not self._done:
                self._callbacks.append(callback)
                return
        callback()

    async def wait_async(self) -> None:
        loop = asyncio.get_running_loop()
        with self._lock:
            if self._done:
                return
            # Records of one batch awaited on one loop share one loop future.
            waiter = next((w for w in self._waiters if w.get_loop() is loop), None)
            if waiter is None:
                waiter = loop.create_future()
                self._waiters.append(waiter)
        await asyncio.shield(waiter)


def _resolve_threadsafe(waiter: asyncio.Future[None]) -> None:
    loop = waiter.get_loop()
    try:
        running = asyncio.get_running_loop()
    except RuntimeError:
        running = None
    if running is loop:
        _resolve(waiter)
    elif not loop.is_closed():
        loop.call_soon_threadsafe(_resolve, waiter)


def _resolve(waiter: asyncio.Future[None]) -> None:
    if not waiter.done():
        waiter.set_result(None)


class RecordFuture(msgspec.Struct, gc=False, eq=False):
    """The pending result of one ``send``: ``result()`` blocks, ``await`` suspends.

    Both return :class:`RecordMetadata` or raise the error that failed the record's batch.

    Not tracked by CPython's cycle collector (``gc=False``): a program that keeps its
    futures (a million alive in W1) would otherwise have the collector walk every one of
    them over and over, which cost more than ``send`` itself (docs/benchmarks.md). Safe
    because a future is never part of a cycle the collector must break: it refers only to
    its batch's completion, which refers back to it only through the callbacks and loop
    waiters it holds until the batch completes, and it drops them then.
    """

    _batch: BatchCompletion
    _index: int

    def done(self) -> bool:
        return self._batch.done

    def result(self, timeout: float | None = None) -> RecordMetadata:
        """Wait up to ``timeout`` seconds (None: forever) for the acknowledgement."""
        if not self._batch.wait(timeout):
            raise TimeoutError(f"record not acknowledged within {timeout}s")
        return self._metadata()

    def exception(self, timeout: float | None = None) -> ConveyorError | None:
        if not self._batch.wait(timeout):
            raise TimeoutError(f"record not acknowledged within {timeout}s")
        return self._batch.error

    def add_done_callback(self, callback: Callable[[RecordFuture], None]) -> None:
        """Call ``callback(future)`` when done; it runs on the producer's I/O thread (or at
        once when already done), so it must be quick and must not block."""
        self._batch.add_callback(lambda: callback(self))

    def _metadata(self) -> RecordMetadata:
        batch = self._batch
        if batch.error is not None:
            # The error object is shared by the batch's records: drop the traceback of the
            # previous raise so that it does not grow with every record that re-raises it.
            raise batch.error.with_traceback(None)
        offset = batch.base_offset + self._index if batch.base_offset >= 0 else -1
        return RecordMetadata(batch.topic, batch.partition, offset)

    def __await__(self) -> Generator[Any, None, RecordMetadata]:
        if not self._batch.done:
            yield from self._batch.wait_async().__await__()
        return self._metadata()

    def __repr__(self) -> str:
        state = "done" if self._batch.done else "pending"
        return f"<RecordFuture {self._batch.topic}[{self._batch.partition}] #{self._index} {state}>"
