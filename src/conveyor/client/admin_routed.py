"""The default transport of an ``Admin`` given the coordinator's URL: what Kafka clients
read goes to the brokers' Kafka listeners, what the coordinator decides goes to it.

Routing (``ROUTES``; docs/client.md, "Which Admin calls go where"):

* **Reads, over the brokers' Kafka listeners** (``kafka_admin.py``, bootstrapped from the
  coordinator as ``Producer`` and ``Consumer`` are: it lists the brokers' Kafka
  addresses): ``describe_topic`` (Metadata, DescribeConfigs, ListOffsets on the leaders).
  That is the data path's answer: what a Kafka client in the same place would be told (a
  new topic's partition has a leader once it serves; the leaders' own offsets, not the
  last heartbeat's), on the listeners the data path already needs.
* **Groups, at the coordinator for now**: ``describe_group`` and ``list_groups`` over
  Kafka (DescribeGroups, OffsetFetch, ListOffsets) lose what ``conveyor group describe``
  shows of Conveyor's own groups: the generation, members' revoking and pending
  partitions and heartbeat ages, and a KIP-848 member's instance id (DescribeGroups is
  the classic protocol's; KIP-848's ConsumerGroupDescribe is not served yet).
* **Changes, the catalog and the cluster's state, at the coordinator** (``admin_http.py``):
  creating, deleting and growing topics, their settings, listing topics, the cluster's
  status, decommissioning, deleting records, deleting groups and resetting their offsets.
  The coordinator decides these; over HTTP a reset is refused atomically while the group
  has members (over Kafka it is a check, then a commit), the cluster's status has its
  fields (each broker's URL, version), decommissioning has no Kafka API at all, and
  listing topics keeps its ACL (``describe`` on the cluster: Kafka's Metadata lists every
  topic to any authenticated principal, as ``/v1/metadata`` does). A topic created or grown here is
  answered once the brokers' Metadata names every partition's leader (as the Kafka
  transport's ``create_topic``), so a read right after it, or a Kafka client, sees it.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Final, Literal

from msgspec.structs import replace

from conveyor.client.admin_http import HttpAdmin
from conveyor.client.admin_ops import RecordsTargets, ResetTarget
from conveyor.client.kafka_admin import KafkaAdmin
from conveyor.client.types import TopicPartition
from conveyor.protocol.messages import (
    ClusterStatus,
    ConfigValue,
    DecommissionResponse,
    GroupDescription,
    GroupSummary,
    OffsetFetchResponse,
    TopicConfig,
    TopicDescription,
    TopicSummary,
)
from conveyor.transport.waits import settle_all

Route = Literal["kafka", "coordinator"]
ROUTES: Final[dict[str, Route]] = {
    "create_topic": "coordinator",
    "list_topics": "coordinator",
    "describe_topic": "kafka",
    "delete_topic": "coordinator",
    "add_partitions": "coordinator",
    "alter_topic_config": "coordinator",
    "cluster": "coordinator",
    "decommission": "coordinator",
    "delete_records": "coordinator",
    "list_groups": "coordinator",
    "describe_group": "coordinator",
    "delete_group": "coordinator",
    "reset_offsets": "coordinator",
}


class RoutedAdmin:
    """:class:`~conveyor.client.admin_transport.AdminTransport` over both: ``ROUTES``."""

    def __init__(self, coordinator: HttpAdmin, brokers: KafkaAdmin) -> None:
        self._coordinator = coordinator
        self._brokers = brokers
        self.url = coordinator.url
        self._broker_urls: dict[int, str] = {}

    # ---- topics and the cluster -----------------------------------------------------------

    async def create_topic(
        self,
        name: str,
        partitions: int,
        replication_factor: int | None,
        config: TopicConfig | None,
    ) -> TopicDescription:
        created = await self._coordinator.create_topic(name, partitions, replication_factor, config)
        settled = await self._brokers.settled(
            name, lambda d: len(d.partitions) >= len(created.partitions) and _led(d)
        )
        return await self._with_http_urls(settled)

    async def list_topics(self) -> list[TopicSummary]:
        return await self._coordinator.list_topics()

    async def describe_topic(self, name: str) -> TopicDescription:
        return await self._with_http_urls(await self._brokers.describe_topic(name))

    async def _with_http_urls(self, described: TopicDescription) -> TopicDescription:
        """``leader_url`` as over HTTP: the leader's REST URL (Kafka's Metadata has only its
        Kafka address), from the coordinator's broker list (its metadata answer, which any
        authenticated principal may read), asked again for a broker not listed yet."""
        leaders = {p.leader for p in described.partitions if p.leader is not None}
        if not leaders <= self._broker_urls.keys():
            self._broker_urls = await self._coordinator.broker_urls(described.name)
        return with_leader_urls(described, self._broker_urls)

    async def delete_topic(self, name: str) -> None:
        await self._coordinator.delete_topic(name)

    async def add_partitions(self, name: str, partitions: int) -> TopicDescription:
        await self._coordinator.add_partitions(name, partitions)
        settled = await self._brokers.settled(
            name, lambda d: len(d.partitions) >= partitions and _led(d)
        )
        return await self._with_http_urls(settled)

    async def alter_topic_config(
        self, name: str, values: dict[str, ConfigValue], reset: list[str]
    ) -> TopicDescription:
        return await self._coordinator.alter_topic_config(name, values, reset)

    async def cluster(self) -> ClusterStatus:
        return await self._coordinator.cluster()

    async def decommission(self, broker_id: int, start: bool) -> DecommissionResponse:
        return await self._coordinator.decommission(broker_id, start)

    async def delete_records(
        self, offsets: RecordsTargets, timeout_ms: int
    ) -> dict[TopicPartition, int]:
        return await self._coordinator.delete_records(offsets, timeout_ms)

    # ---- consumer groups ------------------------------------------------------------------

    async def list_groups(self) -> list[GroupSummary]:
        return await self._coordinator.list_groups()

    async def describe_group(self, group: str) -> GroupDescription:
        return await self._coordinator.describe_group(group)

    async def delete_group(self, group: str) -> None:
        await self._coordinator.delete_group(group)

    async def reset_offsets(
        self, group: str, topic: str, to: ResetTarget, partitions: Iterable[int] | None
    ) -> OffsetFetchResponse:
        return await self._coordinator.reset_offsets(group, topic, to, partitions)

    async def close(self) -> None:
        for outcome in await settle_all(self._brokers.close(), self._coordinator.close()):
            if isinstance(outcome, BaseException):
                raise outcome


def with_leader_urls(described: TopicDescription, urls: Mapping[int, str]) -> TopicDescription:
    """Each partition's ``leader_url`` from ``urls`` (broker id -> REST URL; None for a
    leader it lacks). Pure."""
    partitions = [
        replace(p, leader_url=None if p.leader is None else urls.get(p.leader))
        for p in described.partitions
    ]
    return replace(described, partitions=partitions)


def _led(described: TopicDescription) -> bool:
    return all(p.leader is not None for p in described.partitions)
