"""The active coordinator's lease is renewed on a thread of its own: an event loop kept
busy for longer than the lease (a request flood on a starved host; here a CPU-bound block
on the loop) must not make it step down. Real etcd, the real election shell."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

from conveyor.cli.etcd_local import LocalEtcd
from conveyor.coordinator.leadership import HaSettings, Leadership
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
