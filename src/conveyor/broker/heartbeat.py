"""The heartbeat loop: register, report, and reconcile toward the coordinator's answer.

Every ``heartbeat_interval_ms`` (the coordinator's answer sets it) the broker sends a
:class:`BrokerHeartbeat` with a :class:`PartitionReport` per hosted replica and reconciles
with the :class:`HeartbeatResponse`. While the coordinator is unreachable the broker keeps
serving what it has and retries with jittered exponential backoff, warning once per
outage. Readiness turns on after the first successful heartbeat and reconcile.
"""

from __future__ import annotations

import asyncio
import logging
import random
from collections.abc import Callable

import msgspec

from conveyor.broker.security import refresh_security
from conveyor.broker.service import BrokerService
from conveyor.protocol.backoff import BELOW, backoff_ms
from conveyor.protocol.errors import ConveyorError
from conveyor.protocol.messages import BrokerHeartbeat, HeartbeatResponse

log = logging.getLogger(__name__)

_BACKOFF_BASE_MS = 100


class Heartbeat:
    def __init__(
        self,
        service: BrokerService,
        on_ready: Callable[[], None],
        rng: random.Random | None = None,
    ) -> None:
        self.service = service
        self._on_ready = on_ready
        self._rng = rng or random.Random()
        self._failures = 0
        self.ready = False

    async def beat_once(self) -> bool:
        """One heartbeat and reconcile; True when the coordinator answered and it applied."""
        service = self.service
        config = service.config
        request = BrokerHeartbeat(
            broker_id=service.broker_id,
            url=config.advertised_url,
            partitions=service.replicas.reports(),
            incarnation=service.incarnation,
            kafka_address=config.kafka.advertise if config.kafka is not None else None,
        )
        response = await service.http.call(
            "POST",
            f"{config.coordinator_url.rstrip('/')}/v1/brokers/heartbeat",
            HeartbeatResponse,
            body=request,
            timeout_s=config.heartbeat_timeout_ms / 1000,
        )
        applied = await service.apply_heartbeat_response(response)
        await refresh_security(service)  # users, tokens, ACLs, when auth is on
        return applied

    async def run(self) -> None:
        """Reopen the hosted replicas, then heartbeat until cancelled."""
        await self.service.start()
        while not self.service.stopping:
            delay_ms = await self._step()
            await asyncio.sleep(delay_ms / 1000)

    async def _step(self) -> int:
        """One round; returns how long to wait before the next."""
        config = self.service.config
        try:
            applied = await self.beat_once()
        except (ConveyorError, msgspec.DecodeError, OSError) as exc:
            # DecodeError: an answer we cannot read (a coordinator of another version).
            self._failures += 1
            if self._failures == 1:
                log.warning(
                    "heartbeat to %s failed, serving what this broker has and retrying: %s",
                    config.coordinator_url,
                    exc,
                )
            else:
                log.debug("heartbeat failed again (%d in a row): %s", self._failures, exc)
            return max(
                1,
                backoff_ms(
                    self._failures - 1,
                    base_ms=_BACKOFF_BASE_MS,
                    max_ms=config.heartbeat_backoff_ms_max,
                    draw=self._rng.random(),
                    jitter=BELOW,
                ),
            )
        if self._failures:
            log.info("heartbeat to %s works again", config.coordinator_url)
            self._failures = 0
        if applied and not self.ready:
            self.ready = True
            log.info(
                "broker %d ready: %d partitions hosted",
                self.service.broker_id,
                len(self.service.replicas.partitions),
            )
            self._on_ready()
        return self.service.heartbeat_interval_ms
