"""``ShareHandle.durable()``: a dead-letter batch waits for the operation that numbered it.

Found by the chaos queue workload (seed 2424, docs/reliability.md): a leader wrote
dead-letter batch 31 while the state write holding its numbering was being fenced; the
next leader, without that operation, numbered another record 31 and the dead-letter
topic's idempotence dropped it as a duplicate (a confirmed reject never dead-lettered,
an accepted record in the dead-letter topic).
"""

from __future__ import annotations

import asyncio

import pytest

from conveyor.broker.share.handle import Context, ShareHandle
from conveyor.broker.share.state import ShareState
from conveyor.protocol.errors import ConveyorError, ErrorCode
from conveyor.protocol.share import OpSkip


class Store:
    """A state client whose writes wait for ``release`` and then succeed or fail."""

    def __init__(self) -> None:
        self.release = asyncio.Event()
        self.started = asyncio.Event()  # a write is under way
        self.fail = False
        self.writes = 0

    async def write(self, key: bytes, epoch: int, entries: object) -> None:
        self.started.set()
        await self.release.wait()
        self.writes += 1
        if self.fail:
            raise ConveyorError("fenced", code=ErrorCode.STALE_EPOCH)

    async def read(self, key: bytes, epoch: int) -> list[bytes]:
        return []


def handle_with(store: Store) -> ShareHandle:
    async def no_data(topic: str, partition: int) -> object:
        raise AssertionError("not used")

    context = Context(data_partition=no_data, state=store, now_ms=lambda: 0)  # type: ignore[arg-type]
    handle = ShareHandle("g", "t", 0, context)
    handle.state = ShareState("unordered", 0)
    return handle


def test_durable_waits_for_every_submitted_write() -> None:
    asyncio.run(_waits())


async def _waits() -> None:
    store = Store()
    handle = handle_with(store)
    assert handle.durable().done()  # nothing submitted
    first = handle.submit([OpSkip(1)])
    await asyncio.wait_for(store.started.wait(), 5)  # the write of OpSkip(1) is under way
    during = handle.durable()  # joins the write under way
    second = handle.submit([OpSkip(2)])
    after = handle.durable()  # waits for the second write too
    await asyncio.sleep(0.01)
    assert not during.done() and not after.done()
    store.release.set()
    await asyncio.wait_for(after, 5)
    assert first.done() and during.done() and second.done()
    assert store.writes == 2


def test_durable_fails_with_the_write() -> None:
    asyncio.run(_fails())


async def _fails() -> None:
    store = Store()
    store.fail = True
    handle = handle_with(store)
    handle.submit([OpSkip(1)])
    await asyncio.wait_for(store.started.wait(), 5)
    during = handle.durable()  # joins the write under way
    store.release.set()
    with pytest.raises(ConveyorError):
        await asyncio.wait_for(during, 5)
    assert handle.broken
