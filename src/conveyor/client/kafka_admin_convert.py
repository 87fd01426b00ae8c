"""Kafka admin answers as Conveyor's admin result types, and the reverse (pure).

What ``kafka_admin.py`` sends and reads, kept apart from its I/O so that the mapping can
be tested on its own. Conveyor's types carry a few facts no Kafka answer has; over the
Kafka transport they read as "unknown": a group's ``generation`` (-1) and ``rebalances``
(0), a partition's ``log_end_offset`` (None: ListOffsets answers the high watermark), a
broker's HTTP ``url`` ("") and the cluster's ``version`` ("").
"""

from __future__ import annotations

import uuid
from collections.abc import Iterable, Mapping
from typing import Any, Final, Literal

from msgspec.structs import replace

from conveyor.client.types import TopicPartition
from conveyor.protocol.kafka import consumer_protocol
from conveyor.protocol.kafka.errors import KafkaError, conveyor_error
from conveyor.protocol.messages import (
    BrokerId,
    BrokerInfo,
    ClusterStatus,
    GroupDescription,
    GroupMemberDescription,
    GroupPartition,
    GroupPartitionLag,
    GroupSummary,
    Metadata,
    TopicConfig,
    TopicDescription,
    TopicSummary,
)

GroupState = Literal["empty", "stable", "rebalancing"]
GENERATION_UNKNOWN: Final = -1  # DescribeGroups does not say a group's generation
EARLIEST: Final = -2  # ListOffsets' timestamps for the log start and the high watermark
LATEST: Final = -1
TOPIC_RESOURCE: Final = 2  # DescribeConfigs/IncrementalAlterConfigs ResourceType TOPIC
SET, DELETE = 0, 1  # IncrementalAlterConfigs' config_operation


def check(code: int, what: str, message: str | None = None, **details: object) -> None:
    """Raise the typed error of a Kafka error ``code`` in an answer (nothing for NONE)."""
    if code != KafkaError.NONE:
        raise conveyor_error(code, f"{what}: {message}" if message else what, **details)


def topic_id(raw: Any) -> str | None:
    """A Metadata topic id as Conveyor writes it (None for Kafka's all-zero "no id")."""
    if raw is None or raw == uuid.UUID(int=0):
        return None
    return str(raw)


def with_offsets(
    described: TopicDescription,
    config: TopicConfig,
    earliest: Mapping[int, int],
    latest: Mapping[int, int],
    raw_topic_id: Any = None,
) -> TopicDescription:
    """A topic's description from Metadata, completed with its DescribeConfigs settings
    and each partition's log start and high watermark (ListOffsets; missing: None)."""
    partitions = [
        replace(
            p, log_start_offset=earliest.get(p.partition), high_watermark=latest.get(p.partition)
        )
        for p in described.partitions
    ]
    return replace(described, partitions=partitions, config=config, topic_id=topic_id(raw_topic_id))


def topic_summaries(metadata: Metadata) -> list[TopicSummary]:
    return [
        TopicSummary(
            name=t.name, partitions=len(t.partitions), replication_factor=t.replication_factor
        )
        for t in sorted(metadata.topics, key=lambda t: t.name)
    ]


def cluster_status(cluster_id: str, brokers: Iterable[Any], metadata: Metadata) -> ClusterStatus:
    """DescribeCluster's live brokers and the topics of a Metadata answer as the cluster's
    status (counts of leaders and replicas per broker, offline and under-replicated
    partitions)."""
    leaders: dict[int, int] = {}
    replicas: dict[int, int] = {}
    offline = under = partitions = 0
    for topic in metadata.topics:
        for p in topic.partitions:
            partitions += 1
            if p.leader is None:
                offline += 1
            else:
                leaders[p.leader] = leaders.get(p.leader, 0) + 1
            for r in p.replicas:
                replicas[r] = replicas.get(r, 0) + 1
            under += len(p.isr) < len(p.replicas)
    return ClusterStatus(
        cluster_id=cluster_id,
        version="",
        brokers=[
            BrokerInfo(
                broker_id=BrokerId(b.broker_id),
                url="",
                kafka_address=f"{b.host}:{b.port}",
                leader_count=leaders.get(b.broker_id, 0),
                replica_count=replicas.get(b.broker_id, 0),
            )
            for b in sorted(brokers, key=lambda b: b.broker_id)
        ],
        topics=len(metadata.topics),
        partitions=partitions,
        offline_partitions=offline,
        under_replicated_partitions=under,
    )


def group_state(kafka_state: str) -> GroupState:
    """Kafka's group state names (classic and KIP-848) as Conveyor's three."""
    if kafka_state == "Stable":
        return "stable"
    if kafka_state in ("Empty", "Dead", ""):
        return "empty"
    return "rebalancing"


def _members(described: Any) -> list[GroupMemberDescription]:
    members = []
    for m in described.members:
        assigned = consumer_protocol.assigned_partitions(bytes(m.member_assignment or b""))
        members.append(
            GroupMemberDescription(
                member_id=m.member_id,
                client_id=m.client_id,
                topics=consumer_protocol.subscribed_topics(bytes(m.member_metadata or b"")) or [],
                assigned=[GroupPartition(topic=t, partition=p) for t, p in assigned or ()],
                host=m.client_host.lstrip("/"),
                instance_id=m.group_instance_id,
            )
        )
    return members


def group_topics(described: Any, committed: Iterable[TopicPartition]) -> list[str]:
    """The topics a group's description covers: those its members read or were given,
    and those it committed offsets on (as the coordinator's own description)."""
    topics = {tp.topic for tp in committed}
    for member in _members(described):
        topics.update(member.topics)
        topics.update(a.topic for a in member.assigned)
    return sorted(topics)


def group_description(
    described: Any,
    committed: Mapping[TopicPartition, int],
    high_watermarks: Mapping[TopicPartition, int],
) -> GroupDescription:
    """A DescribeGroups entry, the group's committed offsets (OffsetFetch) and the high
    watermark of every partition of its topics (ListOffsets; ``group_topics``) as a
    ``GroupDescription``, one row per partition: lag is the high watermark minus the
    committed offset (0 when nothing is committed), where the high watermark is known."""
    members = _members(described)
    owners = {
        TopicPartition(a.topic, a.partition): m.member_id for m in members for a in m.assigned
    }
    partitions = []
    for tp in sorted({*high_watermarks, *committed, *owners}):
        offset, high = committed.get(tp), high_watermarks.get(tp)
        partitions.append(
            GroupPartitionLag(
                topic=tp.topic,
                partition=tp.partition,
                member_id=owners.get(tp),
                committed_offset=offset,
                high_watermark=high,
                lag=None if high is None else max(high - (offset or 0), 0),
            )
        )
    conveyor = described.protocol_data == consumer_protocol.CONVEYOR_ASSIGNOR
    return GroupDescription(
        group=described.group_id,
        state=group_state(described.group_state),
        generation=GENERATION_UNKNOWN,
        rebalances=0,
        members=members,
        partitions=partitions,
        lag=sum(p.lag or 0 for p in partitions),
        protocol="conveyor" if conveyor else "classic",
    )


def group_summary(description: GroupDescription) -> GroupSummary:
    """A listed group from its description."""
    topics = {p.topic for p in description.partitions}
    for member in description.members:
        topics.update(member.topics)
    return GroupSummary(
        group=description.group,
        state=description.state,
        generation=description.generation,
        members=len(description.members),
        lag=description.lag,
        topics=sorted(topics),
        protocol=description.protocol,
    )
