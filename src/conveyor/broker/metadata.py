"""A cache of the coordinator's topic metadata, for routing and for NOT_LEADER answers.

Lookups are rate-limited per topic (``metadata_refresh_due``): a burst of requests for an
unknown topic costs the coordinator one lookup a second, and concurrent lookups of one
topic share one request. When the coordinator is unreachable a stale entry is served.

A broker's Kafka address is soft state at the coordinator: one that just restarted (or
took over) knows none until each broker's next heartbeat. A broker that reported one
keeps it here for ``KAFKA_ADDRESS_GRACE_MS`` while the coordinator reports none, so Kafka
Metadata never answers without brokers that are there: librdkafka (2.12) decommissions a
broker missing from a Metadata answer, and a transactional producer whose group or
transaction coordinator it was then hangs in send_offsets_to_transaction past its timeout
(librdkafka issues 5456 and 5511; seen as the two-broker coordinator-kill stall of
tests/kafka/test_transactions.py).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Final
from urllib.parse import urlencode

import msgspec

from conveyor.broker.rules import metadata_refresh_due
from conveyor.protocol.errors import ConveyorError, ErrorCode
from conveyor.protocol.messages import (
    BrokerId,
    BrokerInfo,
    ClusterStatus,
    Metadata,
    TopicDescription,
)
from conveyor.transport.client import AsyncHTTP

log = logging.getLogger(__name__)

# How long a broker's last reported Kafka address outlives the coordinator's silence about
# it: many heartbeat intervals (1 s), so a coordinator that restarted has heard from every
# live broker by then; a broker restarted without a listener loses its address after it.
KAFKA_ADDRESS_GRACE_MS: Final = 30_000


@dataclass(frozen=True, slots=True)
class _Entry:
    description: TopicDescription | None  # None: the coordinator said it does not exist
    fetched_ms: int
    auto_create_tried: bool


def _monotonic_ms() -> int:
    return int(time.monotonic() * 1000)


class MetadataCache:
    def __init__(
        self,
        http: AsyncHTTP,
        coordinator_url: str,
        *,
        refresh_ms_min: int = 1000,
        max_age_ms: int = 30_000,
        timeout_s: float = 5.0,
        clock_ms: Callable[[], int] = _monotonic_ms,
    ) -> None:
        self._http = http
        self._url = coordinator_url.rstrip("/")
        self._refresh_ms_min = refresh_ms_min
        self._max_age_ms = max_age_ms
        self._timeout_s = timeout_s
        self._clock_ms = clock_ms
        self._topics: dict[str, _Entry] = {}
        self._inflight: dict[tuple[str, bool], asyncio.Future[TopicDescription | None]] = {}
        # The last failed lookup per topic: repeated within refresh_ms_min without asking
        # again, so a coordinator outage does not turn every request into a connect.
        self._failures: dict[str, tuple[int, ConveyorError]] = {}
        self.broker_urls: dict[BrokerId, str] = {}
        # The live brokers as the coordinator last described them (Kafka addresses).
        self.brokers: dict[BrokerId, BrokerInfo] = {}
        self.cluster_id: str | None = None
        # each broker's last reported Kafka address, its URL then and when (clock_ms)
        self._kafka_addresses: dict[BrokerId, tuple[str, str, int]] = {}

    def update_brokers(self, brokers: Iterable[BrokerInfo]) -> list[BrokerInfo]:
        """Take the coordinator's view of the brokers; returns it with the Kafka addresses
        it lacks filled in from what was reported lately (see the module docstring)."""
        now_ms = self._clock_ms()
        merged = []
        for reported in brokers:
            broker = reported
            self.broker_urls[broker.broker_id] = broker.url.rstrip("/")
            known = self._kafka_addresses.get(broker.broker_id)
            if broker.kafka_address:
                self._kafka_addresses[broker.broker_id] = (broker.kafka_address, broker.url, now_ms)
            elif (
                known is not None
                and known[1] == broker.url
                and now_ms - known[2] <= KAFKA_ADDRESS_GRACE_MS
            ):
                broker = msgspec.structs.replace(broker, kafka_address=known[0])
            self.brokers[broker.broker_id] = broker
            merged.append(broker)
        return merged

    async def describe(self, topics: list[str] | None, *, auto_create: bool = False) -> Metadata:
        """The coordinator's metadata for ``topics`` (None: every topic; empty: none, just
        the brokers), auto-creating unknown ones when asked; unlike :meth:`topic`, always
        a fresh lookup (Kafka clients ask when they need fresh metadata). Raises
        UNKNOWN_TOPIC with ``details["topics"]`` naming the missing ones."""
        if topics is not None and not topics:
            status = await self._http.call(
                "GET", f"{self._url}/v1/cluster", ClusterStatus, timeout_s=self._timeout_s
            )
            brokers = self.update_brokers(status.brokers)
            self.cluster_id = status.cluster_id
            return Metadata(cluster_id=status.cluster_id, brokers=brokers, topics=[])
        query = {"auto_create": "true" if auto_create else "false"}
        if topics is not None:
            query["topics"] = ",".join(topics)
        url = f"{self._url}/v1/metadata?{urlencode(query)}"
        metadata = await self._http.call("GET", url, Metadata, timeout_s=self._timeout_s)
        metadata = msgspec.structs.replace(metadata, brokers=self.update_brokers(metadata.brokers))
        self.cluster_id = metadata.cluster_id
        for description in metadata.topics:
            self._store(description.name, description, auto_create)
        return metadata

    def cached(self, topic: str) -> TopicDescription | None:
        entry = self._topics.get(topic)
        return None if entry is None else entry.description

    async def topic(
        self, topic: str, *, auto_create: bool = False, force: bool = False
    ) -> TopicDescription | None:
        """The topic's description, None when it does not exist. ``force``: the caller
        learnt the entry is wrong (still at most one lookup per ``refresh_ms_min``)."""
        entry = self._topics.get(topic)
        if entry is not None:
            # An auto-creating lookup is not answered by an earlier plain "unknown".
            retry_create = auto_create and entry.description is None and not entry.auto_create_tried
            due = metadata_refresh_due(
                entry.fetched_ms,
                self._clock_ms(),
                forced=force or retry_create,
                min_interval_ms=0 if retry_create else self._refresh_ms_min,
                max_age_ms=self._max_age_ms,
            )
            if not due:
                return entry.description
        failure = self._failures.get(topic)
        if failure is not None and self._clock_ms() - failure[0] < self._refresh_ms_min:
            if entry is not None:
                return entry.description  # stale beats nothing while the coordinator is away
            raise failure[1]
        key = (topic, auto_create)
        pending = self._inflight.get(key)
        if pending is None:
            pending = asyncio.ensure_future(self._lookup(topic, auto_create))
            self._inflight[key] = pending
            pending.add_done_callback(lambda done: self._lookup_done(key, done))
        return await asyncio.shield(pending)

    def _lookup_done(
        self, key: tuple[str, bool], done: asyncio.Future[TopicDescription | None]
    ) -> None:
        self._inflight.pop(key, None)
        if not done.cancelled():
            done.exception()  # retrieved here too: every waiter may have been cancelled

    async def _lookup(self, topic: str, auto_create: bool) -> TopicDescription | None:
        query = urlencode({"topics": topic, "auto_create": "true" if auto_create else "false"})
        try:
            metadata = await self._http.call(
                "GET", f"{self._url}/v1/metadata?{query}", Metadata, timeout_s=self._timeout_s
            )
        except ConveyorError as exc:
            if exc.code is ErrorCode.UNKNOWN_TOPIC:
                self._store(topic, None, auto_create)
                return None
            stale = self._topics.get(topic)
            if exc.retriable:
                self._failures[topic] = (self._clock_ms(), exc)
            if exc.retriable and stale is not None:
                log.warning("metadata of topic %s: %s; serving the cached entry", topic, exc)
                return stale.description
            raise
        self._failures.pop(topic, None)
        self.update_brokers(metadata.brokers)
        found = next((t for t in metadata.topics if t.name == topic), None)
        self._store(topic, found, auto_create)
        return found

    def _store(self, topic: str, description: TopicDescription | None, auto_create: bool) -> None:
        self._topics[topic] = _Entry(description, self._clock_ms(), auto_create)

    def leader_url(self, leader: BrokerId | None, hint: str | None = None) -> str | None:
        if hint:
            return hint.rstrip("/")
        return None if leader is None else self.broker_urls.get(leader)
