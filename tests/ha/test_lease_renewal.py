"""The active coordinator's lease is renewed on a thread of its own: an event loop kept
busy for longer than the lease (a request flood on a starved host; here a CPU-bound block
on the loop) must not make it step down; and a renewal thread that is stuck must not keep
it active. Real etcd, the real election shell."""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from pathlib import Path

import pytest

from conveyor.cli.etcd_local import LocalEtcd
from conveyor.coordinator.leadership import HaSettings, Leadership, monotonic_ms
from conveyor.coordinator.lease import LeaseSettings
from conveyor.coordinator.service import CoordinatorService, CoordinatorSettings
from conveyor.transport.etcd import EtcdClient, EtcdSettings, parse_endpoints

TTL_MS = 2000


def test_a_busy_event_loop_keeps_its_lease(
    tmp_path: Path, shared_etcd: LocalEtcd, prefix: str
) -> None:
    async def scenario() -> None:
        etcd = EtcdSettings(parse_endpoints(shared_etcd.store_url))
        service = CoordinatorService(CoordinatorSettings(data_dir=tmp_path))
        client = EtcdClient(etcd)
        ha = HaSettings(etcd, prefix, "http://127.0.0.1:1", LeaseSettings.for_ttl(TTL_MS))
        leadership = Leadership(service, client, ha)
        running = asyncio.create_task(leadership.run())
        try:
            deadline = time.monotonic() + 20
            while not service.active:
                assert time.monotonic() < deadline, "never became active"
                await asyncio.sleep(0.02)
            epoch = service.epoch
            busy_until = time.monotonic() + 2 * TTL_MS / 1000  # twice the lease, no await
            while time.monotonic() < busy_until:
                sum(range(1000))
            assert leadership.may_act(), "the lease lapsed while the loop was busy"
            await asyncio.sleep(0.2)  # let anything pending run: still the same epoch
            assert service.active and service.epoch == epoch
        finally:
            running.cancel()
            await asyncio.gather(running, return_exceptions=True)
            await client.close()
            await service.close()

    asyncio.run(scenario())


def test_a_stuck_renewal_thread_does_not_keep_it_active(
    tmp_path: Path, shared_etcd: LocalEtcd, prefix: str, caplog: pytest.LogCaptureFixture
) -> None:
    """Issue 15: cut from etcd, a coordinator stayed active 10 s and more because only the
    renewal thread's return made it step down, and that thread was stuck in I/O. Here the
    thread is frozen (its clock blocks, whatever it was doing): the service's loop must
    step down by its own clock when the lease may have expired, and say where the thread
    is stuck."""
    frozen, release = threading.Event(), threading.Event()

    def clock_ms() -> int:
        if frozen.is_set() and threading.current_thread() is not threading.main_thread():
            release.wait()
        return monotonic_ms()

    async def scenario() -> None:
        etcd = EtcdSettings(parse_endpoints(shared_etcd.store_url))
        service = CoordinatorService(CoordinatorSettings(data_dir=tmp_path))
        client = EtcdClient(etcd)
        ha = HaSettings(etcd, prefix, "http://127.0.0.1:1", LeaseSettings.for_ttl(TTL_MS))
        leadership = Leadership(service, client, ha, clock_ms=clock_ms)
        running = asyncio.create_task(leadership.run())
        try:
            deadline = time.monotonic() + 20
            while not service.active:
                assert time.monotonic() < deadline, "never became active"
                await asyncio.sleep(0.02)
            frozen.set()
            # the lease is valid ttl - margin after the last renewal sent: at the latest
            # this long from now; + 1 s for a loaded host's scheduling
            deadline = time.monotonic() + TTL_MS / 1000 + 1.0
            while service.active:
                assert time.monotonic() < deadline, "still active with its renewals stuck"
                await asyncio.sleep(0.02)
            assert not release.is_set()  # stepped down with the thread still stuck
            deadline = time.monotonic() + 10
            while "renewal thread has not ended" not in caplog.text:
                assert time.monotonic() < deadline, "the stuck thread was not reported"
                await asyncio.sleep(0.05)
            assert "release.wait()" in caplog.text  # its stack says where it is stuck
        finally:
            release.set()
            running.cancel()
            await asyncio.gather(running, return_exceptions=True)
            await client.close()
            await service.close()

    with caplog.at_level(logging.INFO, logger="conveyor.coordinator"):
        asyncio.run(scenario())
    assert "no longer active" in caplog.text
    assert "its lease may have expired (own clock): stepping down" in caplog.text
