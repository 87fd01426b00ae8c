"""A private event loop on a background thread: the I/O engine of the sync clients.

The sync ``Producer`` and ``Consumer`` run the very same asyncio code as their async
twins, on a loop of their own in a daemon thread, so both APIs share one implementation
and the sync caller's thread only appends records or takes messages. Daemon, so that a
client the application forgot to close cannot keep the interpreter alive; the clients
close themselves at exit (``atexit``), which runs while daemon threads still live.
"""

from __future__ import annotations

import asyncio
import atexit
import concurrent.futures
import contextlib
import logging
import threading
import weakref
from collections.abc import Callable, Coroutine
from typing import Any, Protocol, TypeVar

from conveyor.transport.waits import settle_all

log = logging.getLogger(__name__)
T = TypeVar("T")


def new_event_loop() -> asyncio.AbstractEventLoop:
    """uvloop when installed (faster sockets and callbacks), else asyncio's default."""
    try:
        import uvloop
    except ImportError:
        return asyncio.new_event_loop()
    loop: asyncio.AbstractEventLoop = uvloop.new_event_loop()
    return loop


class LoopThread:
    """An event loop running forever on a daemon thread, until :meth:`stop`."""

    def __init__(self, name: str) -> None:
        self.loop = new_event_loop()
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        asyncio.set_event_loop(self.loop)
        try:
            self.loop.run_forever()
        finally:
            self._cancel_leftovers()
            self.loop.run_until_complete(self.loop.shutdown_asyncgens())
            self.loop.close()

    def _cancel_leftovers(self) -> None:
        tasks = [t for t in asyncio.all_tasks(self.loop) if not t.done()]
        for task in tasks:
            task.cancel()
        if tasks:
            self.loop.run_until_complete(settle_all(*tasks))

    @property
    def in_loop_thread(self) -> bool:
        return threading.current_thread() is self._thread

    def submit(self, coro: Coroutine[Any, Any, T]) -> concurrent.futures.Future[T]:
        return asyncio.run_coroutine_threadsafe(coro, self.loop)

    def run(self, coro: Coroutine[Any, Any, T], timeout_s: float | None = None) -> T:
        """Run ``coro`` on the loop and wait for its result from the calling thread."""
        if self.in_loop_thread:
            coro.close()
            raise RuntimeError("a sync client method was called from its own I/O thread")
        future = self.submit(coro)
        try:
            return future.result(timeout_s)
        except concurrent.futures.TimeoutError:
            future.cancel()
            raise TimeoutError(f"timed out after {timeout_s}s") from None

    def call_soon(self, callback: Callable[[], object]) -> None:
        """Schedule ``callback`` on the loop from any thread (no-op once stopped)."""
        if not self.loop.is_closed():
            with contextlib.suppress(RuntimeError):  # closed between the check and the call
                self.loop.call_soon_threadsafe(callback)

    def stop(self, timeout_s: float = 10.0) -> None:
        if self.in_loop_thread:
            raise RuntimeError("LoopThread.stop called from its own thread")
        if not self.loop.is_closed():
            self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join(timeout_s)


class Closeable(Protocol):
    def close(self) -> None: ...


_OPEN: weakref.WeakSet[Any] = weakref.WeakSet()


def close_at_exit(client: Closeable) -> None:
    """Close ``client`` at interpreter exit if the application has not (flushes records,
    commits positions), as the Java and kafka-python clients do."""
    _OPEN.add(client)


def forget_at_exit(client: Closeable) -> None:
    _OPEN.discard(client)


@atexit.register
def _close_all() -> None:
    for client in list(_OPEN):
        try:
            client.close()
        except Exception:  # at exit, report and go on closing the others
            log.exception("closing %r at exit failed", client)
