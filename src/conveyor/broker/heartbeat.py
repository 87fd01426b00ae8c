"""The heartbeat loop: register, report, and reconcile toward the coordinator's answer.

Every ``heartbeat_interval_ms`` (the coordinator's answer sets it) the broker sends a
:class:`BrokerHeartbeat` with a :class:`PartitionReport` per hosted replica and reconciles
with the :class:`HeartbeatResponse`; when that changed what it hosts, it reports again at
once, so the coordinator (and every broker's Kafka Metadata) learns a new leader serves
within a round trip, not an interval. While the coordinator is unreachable the broker keeps
serving what it has and retries with jittered exponential backoff, warning once per
outage. Readiness turns on after the first successful heartbeat and reconcile
(``on_ready``: the broker then opens its Kafka listener, and /readyz says ready).

Narrow dependencies: what to report, how to send it, how to apply the answer, what to
refresh after (the security state), and the settings; never the whole service.
"""

from __future__ import annotations

import asyncio
import logging
import random
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

import msgspec

from conveyor.broker.rules import hosting_changed
from conveyor.protocol.backoff import BELOW, backoff_ms
from conveyor.protocol.errors import ConveyorError
from conveyor.protocol.messages import BrokerHeartbeat, HeartbeatResponse

log = logging.getLogger(__name__)

_BACKOFF_BASE_MS = 100


@dataclass(frozen=True, slots=True)
class HeartbeatLink:
    """How one heartbeat round is done: ``report`` what this broker hosts, ``send`` it to
    the coordinator, ``apply`` the answer (False: it belongs to another cluster), then
    ``refresh`` (the security state). ``interval_ms`` reads the interval the last answer
    set; ``stopping`` ends the loop."""

    report: Callable[[], BrokerHeartbeat]
    send: Callable[[BrokerHeartbeat], Awaitable[HeartbeatResponse]]
    apply: Callable[[HeartbeatResponse], Awaitable[bool]]
    refresh: Callable[[], Awaitable[None]]
    interval_ms: Callable[[], int]
    stopping: Callable[[], bool]
    broker_id: int
    coordinator: str  # for log lines
    max_backoff_ms: int


class Heartbeat:
    def __init__(
        self,
        link: HeartbeatLink,
        on_ready: Callable[[], Awaitable[None]],
        start: Callable[[], Awaitable[None]],
        rng: random.Random | None = None,
    ) -> None:
        self._link = link
        self._on_ready = on_ready
        self._start = start
        self._rng = rng or random.Random()
        self._failures = 0
        self.ready = False

    async def beat_once(self) -> bool:
        """One heartbeat and reconcile; True when the coordinator answered and it applied.

        When applying the answer changed what this broker hosts (it opened a new topic's
        replicas, or took over a partition), it reports again at once (``hosting_changed``):
        at most once per round, so a coordinator whose every answer changes something costs
        two heartbeats an interval, not a busy loop."""
        applied, changed = await self._exchange()
        if applied and changed:
            applied, _ = await self._exchange()
        await self._link.refresh()  # users, tokens, ACLs, when auth is on
        return applied

    async def _exchange(self) -> tuple[bool, bool]:
        """Send the report and apply the answer; returns (applied, hosting changed)."""
        sent = self._link.report()
        applied = await self._link.apply(await self._link.send(sent))
        return applied, applied and hosting_changed(sent.partitions, self._link.report().partitions)

    async def run(self) -> None:
        """Reopen the hosted replicas, then heartbeat until cancelled."""
        await self._start()
        while not self._link.stopping():
            delay_ms = await self._step()
            await asyncio.sleep(delay_ms / 1000)

    async def _step(self) -> int:
        """One round; returns how long to wait before the next."""
        link = self._link
        try:
            applied = await self.beat_once()
        except (ConveyorError, msgspec.DecodeError, OSError) as exc:
            # DecodeError: an answer we cannot read (a coordinator of another version).
            self._failures += 1
            if self._failures == 1:
                log.warning(
                    "heartbeat to %s failed, serving what this broker has and retrying: %s",
                    link.coordinator,
                    exc,
                )
            else:
                log.debug("heartbeat failed again (%d in a row): %s", self._failures, exc)
            return max(
                1,
                backoff_ms(
                    self._failures - 1,
                    base_ms=_BACKOFF_BASE_MS,
                    max_ms=link.max_backoff_ms,
                    draw=self._rng.random(),
                    jitter=BELOW,
                ),
            )
        if self._failures:
            log.info("heartbeat to %s works again", link.coordinator)
            self._failures = 0
        if applied and not self.ready:
            self.ready = True
            hosted = len(link.report().partitions)
            log.info("broker %d ready: %d partitions hosted", link.broker_id, hosted)
            await self._on_ready()
        return link.interval_ms()
