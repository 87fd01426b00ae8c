"""Read-only views of the cluster state as wire types. Pure.

Lookups raise the typed 4xx errors clients get (``UNKNOWN_TOPIC``, ``UNKNOWN_PARTITION``,
``INVALID_TOPIC``), so every route reports a missing name the same way.
"""

from __future__ import annotations

import hashlib
from collections import Counter
from collections.abc import Collection, Mapping, Sequence
from typing import Final

from conveyor._version import __version__
from conveyor.coordinator.model import (
    ClusterState,
    CommittedOffset,
    Partition,
    PartitionKey,
    Topic,
)
from conveyor.coordinator.validation import validate_group_name, validate_topic_name
from conveyor.protocol.errors import ErrorCode, InvalidRequestError
from conveyor.protocol.messages import (
    BrokerId,
    BrokerInfo,
    ClusterStatus,
    HeartbeatResponse,
    Metadata,
    OffsetFetchResponse,
    PartitionInfo,
    PartitionOffset,
    PartitionReport,
    ReplicaAssignment,
    TopicConfig,
    TopicDescription,
    TopicList,
    TopicSummary,
)
from conveyor.protocol.topics import min_insync_replicas

# uuid5 namespace of Conveyor's topic ids (a fixed random UUID: never change it)
_TOPIC_ID_NAMESPACE: Final = bytes.fromhex("6f0c3b529a4e4f558d0e2b7c1e5a9d31")


def require_topic(state: ClusterState, name: str) -> Topic:
    validate_topic_name(name)
    topic = state.topics.get(name)
    if topic is None:
        raise InvalidRequestError(
            f"unknown topic {name!r}", code=ErrorCode.UNKNOWN_TOPIC, topic=name
        )
    return topic


def require_partition(topic: Topic, partition: int) -> None:
    if not 0 <= partition < topic.partition_count:
        raise InvalidRequestError(
            f"topic {topic.name!r} has partitions 0..{topic.partition_count - 1}, not {partition}",
            code=ErrorCode.UNKNOWN_PARTITION,
            topic=topic.name,
            partition=partition,
        )


def _latest_report(state: ClusterState, partition: Partition) -> PartitionReport | None:
    """The leader's report when there is one (its high watermark is the real one), else
    the last report of any replica (an offline partition still shows where it stood)."""
    candidates = [partition.leader] if partition.leader is not None else []
    candidates += [b for b in partition.replicas if b != partition.leader]
    for broker_id in candidates:
        report = state.reports.get(broker_id, {}).get(partition.key)
        if report is not None:
            return report
    return None


def partition_info(state: ClusterState, partition: Partition) -> PartitionInfo:
    leader = partition.leader
    leader_broker = state.brokers.get(leader) if leader is not None else None
    report = _latest_report(state, partition)
    return PartitionInfo(
        partition=partition.partition,
        leader=leader,
        leader_epoch=partition.leader_epoch,
        replicas=list(partition.replicas),
        isr=list(partition.isr),
        partition_epoch=partition.partition_epoch,
        leader_url=leader_broker.url if leader_broker is not None else None,
        log_start_offset=report.log_start_offset if report is not None else None,
        log_end_offset=report.log_end_offset if report is not None else None,
        high_watermark=report.high_watermark if report is not None else None,
    )


def topic_id(cluster_id: str, topic: Topic) -> str:
    """Kafka's topic id: derived, not stored, from what identifies this topic for its whole
    life (the cluster, the name and the creation time), so it is the same on every
    coordinator restart and differs for a topic deleted and created again."""
    name = f"{cluster_id}/{topic.name}/{topic.created_ms}".encode()
    sha1 = hashlib.sha1(_TOPIC_ID_NAMESPACE + name, usedforsecurity=False)
    digest = bytearray(sha1.digest()[:16])
    digest[6] = (digest[6] & 0x0F) | 0x50  # RFC 4122 version 5 (the uuid module's uuid5)
    digest[8] = (digest[8] & 0x3F) | 0x80  # RFC 4122 variant
    h = digest.hex()
    return f"{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:]}"


def _description(state: ClusterState, topic: Topic) -> TopicDescription:
    return TopicDescription(
        name=topic.name,
        partitions=[partition_info(state, p) for p in state.topic_partitions(topic)],
        replication_factor=topic.replication_factor,
        config=topic.config,
        topic_id=topic_id(state.cluster_id, topic),
    )


def describe_topic(state: ClusterState, name: str) -> TopicDescription:
    return _description(state, require_topic(state, name))


def list_topics(state: ClusterState) -> TopicList:
    return TopicList(
        topics=[
            TopicSummary(
                name=t.name, partitions=t.partition_count, replication_factor=t.replication_factor
            )
            for t in sorted(state.topics.values(), key=lambda t: t.name)
        ]
    )


def broker_infos(state: ClusterState) -> list[BrokerInfo]:
    leaders = Counter(p.leader for p in state.partitions.values() if p.leader is not None)
    replicas = Counter(b for p in state.partitions.values() for b in p.replicas)
    return [
        BrokerInfo(
            broker_id=b.broker_id,
            url=b.url,
            alive=b.alive,
            last_heartbeat_ms=b.last_heartbeat_ms,
            leader_count=leaders[b.broker_id],
            replica_count=replicas[b.broker_id],
            kafka_address=b.kafka_address or None,
        )
        for b in sorted(state.brokers.values(), key=lambda b: b.broker_id)
    ]


def metadata(state: ClusterState, names: Sequence[str] | None) -> Metadata:
    """Routing data for ``names`` (None: every topic). Every name must exist: the service
    auto-creates before asking, when it may."""
    if names is None:
        topics = sorted(state.topics.values(), key=lambda t: t.name)
    else:
        for name in names:
            validate_topic_name(name)
        missing = sorted({n for n in names if n not in state.topics})
        if missing:
            raise InvalidRequestError(
                f"unknown topic(s) {missing}", code=ErrorCode.UNKNOWN_TOPIC, topics=missing
            )
        topics = [state.topics[n] for n in dict.fromkeys(names)]
    return Metadata(
        cluster_id=state.cluster_id,
        brokers=broker_infos(state),
        topics=[_description(state, t) for t in topics],
    )


def cluster_status(state: ClusterState) -> ClusterStatus:
    partitions = state.partitions.values()
    return ClusterStatus(
        cluster_id=state.cluster_id,
        version=__version__,
        brokers=broker_infos(state),
        topics=len(state.topics),
        partitions=len(partitions),
        offline_partitions=sum(1 for p in partitions if p.leader is None),
        under_replicated_partitions=sum(1 for p in partitions if len(p.isr) < len(p.replicas)),
    )


def fetch_offsets(
    state: ClusterState,
    group: str,
    topic: str | None,
    only: Collection[PartitionKey] | None = None,
) -> OffsetFetchResponse:
    """A group's committed offsets, optionally of one topic (which must exist) or of the
    partitions in ``only``. A group that never committed has an empty list, not an error."""
    validate_group_name(group)
    if topic is not None:
        require_topic(state, topic)
    committed: Mapping[PartitionKey, CommittedOffset] = state.group_offsets.get(group, {})
    if only is not None:  # a commit's answer: look its keys up
        found = [c for key in only if (c := committed.get(key)) is not None]
    else:
        found = list(committed.values())
    found = [c for c in found if topic in (None, c.topic)]
    found.sort(key=lambda c: (c.topic, c.partition))
    return OffsetFetchResponse(
        group=group,
        offsets=[
            PartitionOffset(
                topic=c.topic,
                partition=c.partition,
                offset=c.offset,
                metadata=c.metadata,
                leader_epoch=c.leader_epoch,
            )
            for c in found
        ],
    )


def replica_assignment(state: ClusterState, partition: Partition) -> ReplicaAssignment:
    topic = state.topics[partition.topic]
    return ReplicaAssignment(
        topic=partition.topic,
        partition=partition.partition,
        leader=partition.leader,
        leader_epoch=partition.leader_epoch,
        replicas=list(partition.replicas),
        isr=list(partition.isr),
        partition_epoch=partition.partition_epoch,
        min_insync_replicas=min_insync_replicas(
            topic.config.min_insync_replicas, topic.replication_factor
        ),
    )


def heartbeat_response(
    state: ClusterState, broker_id: BrokerId, heartbeat_interval_ms: int
) -> HeartbeatResponse:
    """Everything ``broker_id`` should host: each partition whose replicas include it, the
    configs of those topics, and the broker table (so it can find leaders to follow)."""
    assignments: list[ReplicaAssignment] = []
    configs: dict[str, TopicConfig] = {}
    for partition in sorted(state.partitions.values(), key=lambda p: p.key):
        if broker_id not in partition.replicas:
            continue
        assignments.append(replica_assignment(state, partition))
        configs.setdefault(partition.topic, state.topics[partition.topic].config)
    return HeartbeatResponse(
        cluster_id=state.cluster_id,
        assignments=assignments,
        topic_configs=configs,
        brokers=broker_infos(state),
        heartbeat_interval_ms=heartbeat_interval_ms,
    )
