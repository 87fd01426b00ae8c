"""A replica whose disk is full reports its log failed until space returns."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from pathlib import Path

import pytest

from conveyor.broker import core
from conveyor.broker import replica as replica_module
from conveyor.protocol.errors import ConveyorError, DiskFullError, ErrorCode
from conveyor.protocol.records import encode_batch
from conveyor.protocol.replica import Tick, TopicPartition
from conveyor.storage import AppendResult
from tests.clock import ManualClock
from tests.unit.broker.conftest import FakeNetwork, brokers, heartbeat_answer

Run = Callable[[Callable[[], Awaitable[None]]], None]


def test_disk_full_is_reported_until_the_filesystem_has_room_again(
    tmp_path: Path, network: FakeNetwork, run: Run, monkeypatch: pytest.MonkeyPatch
) -> None:
    clock = ManualClock()

    async def body() -> None:
        async with brokers(tmp_path, network, clock=clock) as (broker,):
            await broker.apply_heartbeat_response(heartbeat_answer(1, "t", [1]))
            await broker.produce("t", 0, encode_batch([(None, b"before")]), acks="all")
            tp = TopicPartition("t", 0)

            def log_failed() -> bool:
                (report,) = core.reports(broker.driver.state)
                return report.log_failed

            async def probe() -> None:  # a second later, the core probes the disk again
                clock.advance(1001)
                broker.driver.step(Tick())
                await broker.driver.settle()

            assert not log_failed()

            def no_space(*_: object, **__: object) -> AppendResult:
                raise DiskFullError("no space to append (test)")

            monkeypatch.setattr(broker.replicas.logs[tp], "append", no_space)
            with pytest.raises(ConveyorError) as caught:
                await broker.produce("t", 0, encode_batch([(None, b"lost")]), acks="all")
            assert caught.value.code is ErrorCode.DISK_FULL
            assert log_failed()
            # checked again (at most once a second): still too little free space
            monkeypatch.setattr(replica_module, "DISK_FREE_TO_RESUME_BYTES", 1 << 62)
            await probe()
            assert log_failed()
            # the filesystem has room again: the log takes writes
            monkeypatch.setattr(replica_module, "DISK_FREE_TO_RESUME_BYTES", 1)
            await probe()
            assert not log_failed()
            monkeypatch.undo()
            answer = await broker.produce("t", 0, encode_batch([(None, b"after")]), acks="all")
            assert answer.base_offset == 1 and not broker.driver.state.replicas[tp].disk_full

    run(body)
