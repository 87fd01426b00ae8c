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


def test_free_space_is_never_measured_on_the_event_loop(
    tmp_path: Path, network: FakeNetwork, run: Run, monkeypatch: pytest.MonkeyPatch
) -> None:
    """statvfs can block (a failing disk, NFS): /metrics shows what the heartbeat round
    measured in a worker thread, never a system call made during the scrape."""
    import os
    import threading

    real_statvfs = os.statvfs
    callers: list[str] = []

    def statvfs(path: object) -> os.statvfs_result:
        callers.append(threading.current_thread().name)
        return real_statvfs(path)  # type: ignore[arg-type]

    async def body() -> None:
        async with brokers(tmp_path, network) as (broker,):
            await broker.apply_heartbeat_response(heartbeat_answer(1, "t", [1]))
            monkeypatch.setattr(os, "statvfs", statvfs)
            loop_thread = threading.current_thread().name
            names = {m.name for m in broker.metrics.collect()}
            assert callers == [] and "conveyor_broker_disk_free_bytes" not in names
            await broker.refresh_round()  # what each heartbeat round does after its answer
            assert callers and loop_thread not in callers
            names = {m.name for m in broker.metrics.collect()}
            assert "conveyor_broker_disk_free_bytes" in names
            assert len(callers) == 1  # the scrape itself measured nothing

    run(body)
