"""A connection's Produce requests append in the order they arrived, even when one of
them has to wait before its append (an ACL catch-up, a transaction's verification): the
next request's handler starts at once (the listener runs requests as tasks) but appends
only after the previous one has appended or refused everything (Kafka handles a
connection's requests one at a time)."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from types import SimpleNamespace
from typing import Any

from conveyor.broker.kafka.auth import Authorizer
from conveyor.broker.kafka.produce import ProduceHandler
from conveyor.protocol.errors import ErrorCode, InvalidRequestError
from conveyor.protocol.kafka.produce_request import ProduceData
from conveyor.protocol.messages import ProduceResponse


@dataclass
class _Source:
    snapshot: None = None

    async def catch_up(self) -> bool:
        return False


class _Log:
    """The produce operation: appends in call order; a partition in ``slow`` first waits
    for ``released`` (as a produce that must suspend before its append), and sets
    ``entered`` when it starts to."""

    def __init__(self, slow: set[int]) -> None:
        self.appended: list[tuple[int, bytes]] = []
        self.slow = slow
        self.entered = asyncio.Event()
        self.released = asyncio.Event()

    async def produce(self, _topic: str, partition: int, records: bytes, **_: Any) -> Any:
        if partition in self.slow:
            self.entered.set()
            await self.released.wait()
        if records == b"bad":
            raise InvalidRequestError("corrupt", code=ErrorCode.CORRUPT_MESSAGE)
        self.appended.append((partition, bytes(records)))
        return _acknowledged(len(self.appended) - 1)


async def _acknowledged(offset: int) -> ProduceResponse:
    return ProduceResponse(
        topic="t", partition=0, base_offset=offset, last_offset=offset, leader_epoch=0
    )


def _handler(log: _Log) -> ProduceHandler:
    return ProduceHandler(
        log.produce, SimpleNamespace(brokers={}, cluster_id=None), Authorizer(_Source(), False)
    )


def _request(*partitions: tuple[int, bytes]) -> ProduceData:
    return ProduceData(None, -1, 1000, tuple(("t", p, r) for p, r in partitions))


def _ctx(connection: Any) -> Any:
    return SimpleNamespace(api_version=9, principal=None, connection=connection)


def _connection() -> Any:
    return SimpleNamespace(appending=asyncio.Lock())


def test_a_request_behind_one_that_waits_before_its_append_appends_after_it() -> None:
    async def run() -> list[tuple[int, bytes]]:
        log = _Log(slow={1})
        handler = _handler(log)
        connection = _connection()
        # the first request's partition 1 waits before its append; the second request
        # carries partition 0 and 1 again, and must not overtake it
        first = asyncio.ensure_future(handler(_ctx(connection), _request((1, b"a1"), (0, b"a0"))))
        second = asyncio.ensure_future(handler(_ctx(connection), _request((0, b"b0"))))
        third = asyncio.ensure_future(handler(_ctx(connection), _request((1, b"c1"))))
        # woken after the other two requests' first steps (queued before the wake-up)
        await asyncio.wait_for(log.entered.wait(), 5)
        assert log.appended == []
        log.slow.clear()
        log.released.set()
        await asyncio.wait_for(asyncio.gather(first, second, third), 5)
        assert not connection.appending.locked()  # nothing held once the phases are over
        return log.appended

    assert asyncio.run(run()) == [(1, b"a1"), (0, b"a0"), (0, b"b0"), (1, b"c1")]


def test_a_refused_or_cancelled_request_does_not_hold_the_next_one_back() -> None:
    async def run() -> list[tuple[int, bytes]]:
        log = _Log(slow={1})
        handler = _handler(log)
        connection = _connection()
        stuck = asyncio.ensure_future(handler(_ctx(connection), _request((1, b"x"))))
        refused = asyncio.ensure_future(handler(_ctx(connection), _request((0, b"bad"))))
        after = asyncio.ensure_future(handler(_ctx(connection), _request((0, b"y"))))
        await asyncio.wait_for(log.entered.wait(), 5)
        stuck.cancel()  # its connection went away while it waited
        await asyncio.wait_for(asyncio.gather(refused, after), 5)
        return log.appended

    assert asyncio.run(run()) == [(0, b"y")]


def test_requests_on_other_connections_do_not_wait_for_each_other() -> None:
    async def run() -> list[tuple[int, bytes]]:
        log = _Log(slow={1})
        handler = _handler(log)
        waiting = asyncio.ensure_future(handler(_ctx(_connection()), _request((1, b"a"))))
        await asyncio.wait_for(log.entered.wait(), 5)
        await asyncio.wait_for(handler(_ctx(_connection()), _request((0, b"b"))), 5)
        appended = list(log.appended)
        log.released.set()
        await waiting
        return appended

    assert asyncio.run(run()) == [(0, b"b")]
