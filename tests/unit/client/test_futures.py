from __future__ import annotations

import asyncio
import gc
import threading
import weakref
from typing import Any

import pytest

from conveyor.client.futures import BatchCompletion, RecordFuture
from conveyor.client.types import RecordMetadata
from conveyor.protocol.errors import ErrorCode, RetriableError
from tests.waiting import wait_for


def test_records_of_a_batch_resolve_to_consecutive_offsets() -> None:
    batch = BatchCompletion("t", 2)
    futures = [RecordFuture(batch, i) for i in range(3)]
    assert not futures[0].done()
    with pytest.raises(TimeoutError):
        futures[0].result(timeout=0)
    batch.complete(40)
    assert [f.result() for f in futures] == [RecordMetadata("t", 2, 40 + i) for i in range(3)]


def test_a_failed_batch_fails_every_record_and_callbacks_run() -> None:
    batch = BatchCompletion("t", 0)
    future = RecordFuture(batch, 0)
    seen: list[RecordFuture] = []
    future.add_done_callback(seen.append)
    batch.fail(RetriableError("gone", code=ErrorCode.NOT_LEADER))
    assert seen == [future]
    for _ in range(3):
        with pytest.raises(RetriableError):
            future.result()
    assert future.exception() is not None
    late: list[RecordFuture] = []
    future.add_done_callback(late.append)  # already done: called at once
    assert late == [future]


def test_acks_zero_reports_offset_minus_one() -> None:
    batch = BatchCompletion("t", 0)
    batch.complete(-1)
    assert RecordFuture(batch, 5).result().offset == -1


def test_await_from_a_loop_while_another_thread_completes() -> None:
    batch = BatchCompletion("t", 1)

    async def wait_both() -> list[RecordMetadata]:
        timer = threading.Timer(0.05, batch.complete, args=(7,))
        timer.start()
        try:
            return list(await asyncio.gather(RecordFuture(batch, 0), RecordFuture(batch, 1)))
        finally:
            timer.join()

    assert asyncio.run(wait_both()) == [RecordMetadata("t", 1, 7), RecordMetadata("t", 1, 8)]


class _CountingLatch:
    """The batch's latch, counting the waits that reached it (so the test completes the
    batch only once every waiter is at, or blocked in, its acquire)."""

    def __init__(self, latch: Any) -> None:
        self._latch = latch
        self._count_lock = threading.Lock()
        self.entered = 0

    def acquire(self, blocking: bool = True, timeout: float = -1) -> bool:
        with self._count_lock:
            self.entered += 1
        return bool(self._latch.acquire(blocking, timeout))

    def release(self) -> None:
        self._latch.release()


def test_every_thread_waiting_on_a_batch_wakes_and_later_waits_return_at_once() -> None:
    """Waiters share one latch that each hands on: all of them must wake, however many,
    and the latch stays open for every later wait; a wait that times out before the
    batch completes reports it."""
    batch = BatchCompletion("t", 3)
    assert not batch.wait(0) and not batch.wait(-1) and not batch.wait(0.01)
    latch = _CountingLatch(batch._latch)
    batch._latch = latch  # type: ignore[assignment]
    woke: list[RecordMetadata] = []

    def waiter(index: int) -> None:
        woke.append(RecordFuture(batch, index).result(timeout=600))

    threads = [threading.Thread(target=waiter, args=(i,), daemon=True) for i in range(8)]
    for thread in threads:
        thread.start()
    wait_for(lambda: latch.entered == 8, 10, "every waiter at the latch", interval_s=0.001)
    batch.complete(100)
    wait_for(lambda: len(woke) == 8, 10, "every waiter woken by the completion")
    assert sorted(woke) == [RecordMetadata("t", 3, 100 + i) for i in range(8)]
    for _ in range(3):
        assert batch.wait(None) and batch.wait(0) and batch.done


def test_completing_twice_is_a_bug() -> None:
    batch = BatchCompletion("t", 0)
    batch.complete(1)
    with pytest.raises(RuntimeError):
        batch.complete(2)


def test_record_futures_are_not_tracked_and_leave_no_cycle_behind() -> None:
    """The collector does not walk futures (a program may keep millions); what makes that
    safe: a completed batch holds no callback, so a callback that refers to its future
    (future -> batch -> callback -> future) leaves nothing the collector would have had
    to break."""

    class Witness:
        pass

    batch = BatchCompletion("t", 0)
    future = RecordFuture(batch, 0)
    assert not gc.is_tracked(future)
    witness = Witness()
    gone = weakref.ref(witness)
    future.add_done_callback(lambda f, w=witness: None)
    batch.complete(7)
    assert future.result().offset == 7
    del batch, future, witness
    gc.collect()
    assert gone() is None
