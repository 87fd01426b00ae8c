"""Where each partition's leader is: a cache (pure) and the async client that fills it.

Clients ask the coordinator for metadata once per topic and then talk to leaders
directly. The cache goes stale when leadership moves; a broker then answers NOT_LEADER
(often naming the new leader, which the cache takes at once) and the client refreshes.
Refreshes are coalesced (callers waiting on one refresh share it) and backed off
exponentially while the coordinator is unreachable, so a partition-wide leader change
costs one metadata request, not one per batch.
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from collections.abc import Iterable
from dataclasses import dataclass
from urllib.parse import quote

from conveyor.protocol.backoff import backoff_ms
from conveyor.protocol.errors import ConveyorError, ErrorCode, InvalidRequestError
from conveyor.protocol.messages import Metadata, TopicDescription, TopicList
from conveyor.transport.client import AsyncHTTP
from conveyor.transport.throttle import throttled

log = throttled(logging.getLogger(__name__))  # one line per repeated warning per 30 s


@dataclass(frozen=True, slots=True)
class PartitionRoute:
    partition: int
    leader: int | None
    leader_url: str | None
    leader_epoch: int


class MetadataCache:
    """Topic -> partition routes, as of the last answer of the coordinator.

    ``version`` grows with every update, so that a caller that saw a stale route can tell
    whether someone refreshed since (then it just retries) or it must refresh itself.
    """

    def __init__(self) -> None:
        self._topics: dict[str, tuple[PartitionRoute, ...]] = {}
        self._missing: set[str] = set()
        # topic -> partition count: read on every send, so a plain dict, not a method
        self.partition_counts: dict[str, int] = {}
        self.version = 0
        self.updated_ms: int | None = None

    def update(self, metadata: Metadata, requested: Iterable[str], now_ms: int) -> None:
        answered = {topic.name: topic for topic in metadata.topics}
        for name in requested:
            description = answered.get(name)
            if description is None:
                self.mark_missing(name)
            else:
                routes = self._topics[name] = _routes(description)
                self.partition_counts[name] = len(routes)
                self._missing.discard(name)
        self.version += 1
        self.updated_ms = now_ms

    def mark_missing(self, topic: str) -> None:
        self._topics.pop(topic, None)
        self.partition_counts.pop(topic, None)
        self._missing.add(topic)

    def partitions(self, topic: str) -> tuple[PartitionRoute, ...] | None:
        return self._topics.get(topic)

    def partition_count(self, topic: str) -> int | None:
        return self.partition_counts.get(topic)

    def is_missing(self, topic: str) -> bool:
        """The coordinator said the topic does not exist (at the last refresh)."""
        return topic in self._missing

    def leader_url(self, topic: str, partition: int) -> str | None:
        routes = self._topics.get(topic)
        if routes is None or partition >= len(routes):
            return None
        return routes[partition].leader_url

    def move_leader(
        self, topic: str, partition: int, leader_url: str, leader_epoch: int | None = None
    ) -> None:
        """Take a broker's NOT_LEADER hint at once, unless it is older than what this
        cache knows (a broker that has not heard of the newest election points back at
        the old leader, maybe a dead or paused one)."""
        routes = self._topics.get(topic)
        if routes is None or partition >= len(routes):
            return
        old = routes[partition]
        if leader_epoch is not None and leader_epoch <= old.leader_epoch:
            return
        epoch = old.leader_epoch if leader_epoch is None else leader_epoch
        new = PartitionRoute(partition, None, leader_url.rstrip("/"), epoch)
        self._topics[topic] = (*routes[:partition], new, *routes[partition + 1 :])

    def topics(self) -> set[str]:
        return set(self._topics) | self._missing


def _routes(description: TopicDescription) -> tuple[PartitionRoute, ...]:
    by_partition = {info.partition: info for info in description.partitions}
    routes = []
    for partition in range(len(by_partition)):
        info = by_partition.get(partition)
        if info is None:  # a gap would misroute every key: a coordinator bug
            raise ConveyorError(f"metadata of {description.name} lacks partition {partition}")
        url = info.leader_url.rstrip("/") if info.leader_url else None
        routes.append(PartitionRoute(partition, info.leader, url, info.leader_epoch))
    return tuple(routes)


class MetadataClient:
    """Fetches metadata into a :class:`MetadataCache`; used on one event loop."""

    def __init__(
        self,
        http: AsyncHTTP,
        url: str,
        *,
        auto_create: bool,
        backoff_base_ms: int = 50,
        backoff_max_ms: int = 2000,
        request_timeout_ms: int = 30_000,
    ) -> None:
        self._http = http
        self._url = url
        self._auto_create = auto_create
        self._backoff_base_ms = backoff_base_ms
        self._backoff_max_ms = backoff_max_ms
        self._request_timeout_s = request_timeout_ms / 1000
        self._lock = asyncio.Lock()
        self._failures = 0
        self._next_allowed_ms = 0
        self.cache = MetadataCache()

    async def refresh(self, topics: Iterable[str] = (), *, seen_version: int | None = None) -> None:
        """Fetch metadata for ``topics`` and every topic already cached.

        With ``seen_version``, return at once if the cache has been refreshed since the
        caller read that version (another caller fetched what it needs meanwhile).
        """
        wanted = self.cache.topics() | set(topics)
        async with self._lock:
            if seen_version is not None and self.cache.version > seen_version:
                return
            delay_ms = self._next_allowed_ms - _now_ms()
            if delay_ms > 0:
                await asyncio.sleep(delay_ms / 1000)
            try:
                metadata = await self._fetch(sorted(wanted))
            except ConveyorError as exc:
                self._failures += 1
                delay = backoff_ms(
                    self._failures - 1,
                    base_ms=self._backoff_base_ms,
                    max_ms=self._backoff_max_ms,
                    draw=random.random(),
                )
                self._next_allowed_ms = _now_ms() + delay
                # no delay in the text: repeats are identical, so the filter throttles them
                if exc.retriable:
                    log.warning("metadata refresh failed, retrying: %s", exc)
                else:
                    log.warning("metadata refresh failed: %s", exc)
                raise
            self._failures = 0
            self.cache.update(metadata, wanted, _now_ms())

    async def _fetch(self, topics: list[str]) -> Metadata:
        try:
            return await self._get(topics)
        except InvalidRequestError as exc:
            if exc.code is not ErrorCode.UNKNOWN_TOPIC or len(topics) <= 1:
                if exc.code is ErrorCode.UNKNOWN_TOPIC:
                    return Metadata(cluster_id="", brokers=[], topics=[])
                raise
        # One unknown topic failed the whole request: ask per topic to learn which exist.
        answers: list[TopicDescription] = []
        base: Metadata | None = None
        for topic in topics:
            try:
                single = await self._get([topic])
            except InvalidRequestError as exc:
                if exc.code is ErrorCode.UNKNOWN_TOPIC:
                    continue
                raise
            base = base or single
            answers += single.topics
        return Metadata(
            cluster_id=base.cluster_id if base else "",
            brokers=base.brokers if base else [],
            topics=answers,
        )

    async def _get(self, topics: list[str]) -> Metadata:
        names = quote(",".join(topics), safe=",")
        auto = "true" if self._auto_create else "false"
        url = f"{self._url}/v1/metadata?topics={names}&auto_create={auto}"
        return await self._http.call("GET", url, Metadata, timeout_s=self._request_timeout_s)

    async def topic_names(self) -> list[str]:
        """Every topic of the cluster (a pattern subscription matches against them)."""
        url = f"{self._url}/v1/topics"
        listed = await self._http.call("GET", url, TopicList, timeout_s=self._request_timeout_s)
        return [t.name for t in listed.topics]

    async def routes(self, topic: str) -> tuple[PartitionRoute, ...] | None:
        """The topic's partitions, fetching metadata if not cached (None: no such topic)."""
        routes = self.cache.partitions(topic)
        if routes is None:
            await self.refresh([topic])
            routes = self.cache.partitions(topic)
        return routes

    def on_routing_error(self, topic: str, partition: int, error: ConveyorError) -> None:
        """Apply what a broker's error says about leadership before the next refresh."""
        hint = error.details.get("leader_url")
        epoch = error.details.get("leader_epoch")
        if error.code is ErrorCode.NOT_LEADER and isinstance(hint, str) and hint:
            self.cache.move_leader(
                topic, partition, hint, epoch if isinstance(epoch, int) else None
            )


def _now_ms() -> int:
    return time.monotonic_ns() // 1_000_000
