from __future__ import annotations

import asyncio
import gc
import threading
import weakref

import pytest

from conveyor.client.futures import BatchCompletion, RecordFuture
from conveyor.client.types import RecordMetadata
from conveyor.protocol.errors import ErrorCode, RetriableError


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
