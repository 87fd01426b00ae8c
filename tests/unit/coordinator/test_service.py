"""The service shell on a real SQLite file with a manual clock, without HTTP."""

from __future__ import annotations

import asyncio
from collections.abc import Coroutine
from pathlib import Path
from typing import Any

import pytest

from conveyor.coordinator.service import CoordinatorService, CoordinatorSettings
from conveyor.coordinator.store import CoordinatorStore
from conveyor.protocol.errors import ConveyorError, ErrorCode
from conveyor.protocol.messages import BrokerId, CreateTopicRequest
from conveyor.transport.clock import SystemClock
from tests.clock import ManualClock
from tests.unit.coordinator.helpers import heartbeat
from tests.waiting import wait_for_async


def run(coro: Coroutine[Any, Any, None]) -> None:
    asyncio.run(coro)


def test_expiry_is_persisted_and_survives_a_restart(tmp_path: Path) -> None:
    clock = ManualClock()
    settings = CoordinatorSettings(data_dir=tmp_path, session_timeout_ms=6000)

    async def scenario() -> None:
        service = CoordinatorService(settings, clock)
        await service.start(run_expiry=False)
        await service.heartbeat(heartbeat(1))
        await service.create_topic(CreateTopicRequest(name="t", partitions=2))
        clock.now += 6001
        await service.expire_brokers()
        assert not service.state.brokers[BrokerId(1)].alive
        await service.close()

    run(scenario())
    store = CoordinatorStore.open(tmp_path)
    try:
        loaded = store.load()
    finally:
        store.close()
    assert not loaded.brokers[BrokerId(1)].alive
    assert {p.leader for p in loaded.partitions.values()} == {None}


def test_a_restarted_coordinator_gives_brokers_a_fresh_session(tmp_path: Path) -> None:
    clock = ManualClock()
    settings = CoordinatorSettings(data_dir=tmp_path, session_timeout_ms=6000)

    async def scenario() -> None:
        first = CoordinatorService(settings, clock)
        await first.start(run_expiry=False)
        await first.heartbeat(heartbeat(1))
        await first.close()
        clock.now += 3_600_000  # down for an hour
        second = CoordinatorService(settings, clock)
        await second.start(run_expiry=False)
        await second.expire_brokers()
        assert second.state.brokers[BrokerId(1)].alive
        clock.now += 6001
        await second.expire_brokers()
        assert not second.state.brokers[BrokerId(1)].alive
        await second.close()

    run(scenario())


def test_metadata_auto_create_needs_both_the_caller_and_the_setting(tmp_path: Path) -> None:
    async def scenario() -> None:
        for allowed in (False, True):
            settings = CoordinatorSettings(
                data_dir=tmp_path / str(allowed), auto_create_topics=allowed
            )
            service = CoordinatorService(settings, ManualClock())
            await service.start(run_expiry=False)
            await service.heartbeat(heartbeat(1))
            with pytest.raises(ConveyorError) as caught:
                await service.metadata(["fresh"], auto_create=False)
            assert caught.value.code is ErrorCode.UNKNOWN_TOPIC
            if allowed:
                metadata = await service.metadata(["fresh"], auto_create=True)
                assert len(metadata.topics[0].partitions) == 8
            else:
                with pytest.raises(ConveyorError, match="auto-creation is off") as caught:
                    await service.metadata(["fresh"], auto_create=True)
                assert caught.value.code is ErrorCode.UNKNOWN_TOPIC
            await service.close()

    run(scenario())


def test_a_cancelled_caller_does_not_leave_memory_behind_the_disk(tmp_path: Path) -> None:
    settings = CoordinatorSettings(data_dir=tmp_path)

    async def scenario() -> None:
        service = CoordinatorService(settings, ManualClock())
        await service.start(run_expiry=False)
        await service.heartbeat(heartbeat(1))
        task = asyncio.create_task(service.create_topic(CreateTopicRequest(name="t")))
        await asyncio.sleep(0)  # let it take the lock and start writing
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        await service.close()  # waits for the shielded write to finish
        assert "t" in service.state.topics

    run(scenario())
    store = CoordinatorStore.open(tmp_path)
    try:
        assert "t" in store.load().topics
    finally:
        store.close()


def test_the_timer_declares_silent_brokers_dead(tmp_path: Path) -> None:
    settings = CoordinatorSettings(data_dir=tmp_path, session_timeout_ms=100)

    async def scenario() -> None:
        service = CoordinatorService(settings, SystemClock())
        await service.start()
        await service.heartbeat(heartbeat(1))
        await wait_for_async(
            lambda: not service.state.brokers[BrokerId(1)].alive, 5.0, "broker 1 expired"
        )
        await service.close()

    run(scenario())


def test_a_stalled_coordinator_restarts_sessions_instead_of_expiring(tmp_path: Path) -> None:
    clock = ManualClock()
    settings = CoordinatorSettings(data_dir=tmp_path, session_timeout_ms=200)

    async def scenario() -> None:
        service = CoordinatorService(settings, clock)
        await service.start()
        await service.heartbeat(heartbeat(1))
        clock.now += 10_000  # as if the process had been paused for 10 s
        await wait_for_async(
            lambda: service.state.brokers[BrokerId(1)].last_heartbeat_ms == clock.now,
            5.0,
            "a grace period granted",
        )
        assert service.state.brokers[BrokerId(1)].alive
        await service.close()

    run(scenario())


def test_settings_derive_safe_intervals(tmp_path: Path) -> None:
    settings = CoordinatorSettings(data_dir=tmp_path, session_timeout_ms=1000)
    assert settings.broker_heartbeat_interval_ms == 333
    assert settings.expiry_check_interval_ms == 250
    default = CoordinatorSettings(data_dir=tmp_path)
    assert (default.broker_heartbeat_interval_ms, default.expiry_check_interval_ms) == (1000, 500)
