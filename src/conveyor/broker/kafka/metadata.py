"""Metadata: the live brokers with their Kafka addresses, and the asked topics' partitions.

Every broker answers alike from the coordinator's metadata (``MetadataCache.describe``):
node id = broker id, the cluster id, the controller id (the lowest live broker id with a
Kafka listener: every broker serves the admin APIs, so any stable choice works), topic
ids from v10 (``coordinator/views.topic_id``). Unknown topics are created with the
cluster's defaults under the same policy as HTTP: when the request allows it (v4+, and
always before v4), the coordinator allows it, and the principal may ``create_topic`` on
every unknown name asked; otherwise they are answered UNKNOWN_TOPIC_OR_PARTITION. When the
coordinator cannot be reached, the topics are answered with a retriable error and the
brokers this broker knows.
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import msgspec

from conveyor.broker.kafka.auth import Authorizer
from conveyor.broker.kafka.authorized_ops import cluster_operations, topic_operations
from conveyor.broker.kafka.registry import RequestContext
from conveyor.protocol.errors import ConveyorError, ErrorCode
from conveyor.protocol.kafka.apis import SERVED, ApiKey
from conveyor.protocol.kafka.errors import KafkaError, kafka_error
from conveyor.protocol.messages import BrokerId, BrokerInfo, Metadata, TopicDescription
from conveyor.protocol.topics import validate_topic_name

log = logging.getLogger(__name__)

Describe = Callable[[list[str] | None, bool], Awaitable[Metadata]]
# (leader epoch, high watermark) of a partition this broker leads and serves, else None
Leading = Callable[[str, int], tuple[int, int] | None]


class KnownBrokers(Protocol):
    """The brokers and cluster id this broker last heard of (heartbeats, lookups)."""

    brokers: dict[BrokerId, BrokerInfo]
    cluster_id: str | None


@dataclass(frozen=True, slots=True)
class KafkaNode:
    node_id: int
    host: str
    port: int


def kafka_nodes(brokers: Sequence[BrokerInfo]) -> list[KafkaNode]:
    """The live brokers that have a Kafka listener, by id."""
    nodes = []
    for broker in sorted(brokers, key=lambda b: b.broker_id):
        if not broker.alive or not broker.kafka_address:
            continue
        host, _, port = broker.kafka_address.rpartition(":")
        nodes.append(KafkaNode(broker.broker_id, host.strip("[]"), int(port)))
    return nodes


class MetadataHandler:
    def __init__(
        self,
        describe: Describe,
        known: KnownBrokers,
        authorizer: Authorizer,
        this: KafkaNode | None = None,
    ) -> None:
        self._describe = describe
        self._known = known
        self._authorizer = authorizer
        self._this = this

    async def __call__(self, ctx: RequestContext, request: Any) -> Any:
        version = ctx.api_version
        wanted: list[str] | None = None
        by_id: list[uuid.UUID] = []
        if request.topics is not None and (request.topics or version > 0):
            wanted = [t.name for t in request.topics if t.name is not None]
            if version >= 10:  # v10+: topics may be named by id only (KIP-516)
                by_id = [t.topic_id for t in request.topics if t.name is None and t.topic_id]
        if by_id:
            return await self._by_id(ctx, version, wanted or [], by_id)
        allow_create = version < 4 or bool(request.allow_auto_topic_creation)
        errors: dict[str, KafkaError] = {}
        valid = wanted
        if wanted is not None:
            valid = []
            for name in dict.fromkeys(wanted):
                try:
                    validate_topic_name(name)
                    valid.append(name)
                except ConveyorError:
                    errors[name] = KafkaError.INVALID_TOPIC_EXCEPTION
        metadata = await self._lookup(ctx, valid, allow_create, errors)
        answer = _response(version, metadata, wanted, errors, self._this)
        if version >= 8:
            self._authorized(ctx, request, answer)
        return answer

    def _authorized(self, ctx: RequestContext, request: Any, answer: Any) -> None:
        """v8+: the principal's authorized operations, when the request asks for them."""
        if version_has_cluster_operations(ctx.api_version) and (
            request.include_cluster_authorized_operations
        ):
            answer.authorized_operations = cluster_operations(self._authorizer, ctx.principal)
        if request.include_topic_authorized_operations:
            for topic in answer.topics:
                if topic.error_code == KafkaError.NONE:
                    topic.authorized_operations = topic_operations(
                        self._authorizer, ctx.principal, topic.name
                    )

    async def _by_id(
        self, ctx: RequestContext, version: int, names: list[str], ids: list[uuid.UUID]
    ) -> Any:
        """Topics asked by id (KIP-848 consumers learn their assignment as topic ids): every
        topic's metadata, the asked ones picked out; an unknown id is UNKNOWN_TOPIC_ID."""
        metadata = await self._lookup(ctx, None, False, {})
        known = {uuid.UUID(t.topic_id): t.name for t in metadata.topics if t.topic_id}
        wanted = set(names) | {known[i] for i in ids if i in known}
        chosen = msgspec.structs.replace(
            metadata, topics=[t for t in metadata.topics if t.name in wanted]
        )
        answer = _response(version, chosen, sorted(set(names)), {}, self._this)
        topic_cls = answer.MetadataResponseTopic
        for missing in (i for i in ids if i not in known):
            answer.topics.append(
                topic_cls(
                    error_code=KafkaError.UNKNOWN_TOPIC_ID,
                    name=None,
                    topic_id=missing,
                    is_internal=False,
                    partitions=[],
                )
            )
        return answer

    async def _lookup(
        self,
        ctx: RequestContext,
        names: list[str] | None,
        allow_create: bool,
        errors: dict[str, KafkaError],
    ) -> Metadata:
        auto_create = (
            allow_create
            and bool(names)
            and all(
                self._authorizer.allowed_now(ctx.principal, "create_topic", "topic", n)
                for n in names or ()
            )
        )
        while True:
            try:
                return await self._describe(names, auto_create)
            except ConveyorError as exc:
                missing = exc.details.get("topics") if exc.code is ErrorCode.UNKNOWN_TOPIC else None
                if names and isinstance(missing, list) and set(missing) <= set(names):
                    for name in missing:
                        errors[name] = KafkaError.UNKNOWN_TOPIC_OR_PARTITION
                    names = [n for n in names if n not in missing]
                    continue  # at most once more: the rest exist
                log.info("kafka metadata: coordinator lookup failed: %s", exc)
                code = kafka_error(exc.code)
                for name in names or ():
                    errors.setdefault(name, code)
                brokers = list(self._known.brokers.values())
                return Metadata(cluster_id=self._known.cluster_id or "", brokers=brokers, topics=[])


def with_own_leadership(metadata: Metadata, broker_id: int, leading: Leading) -> Metadata:
    """The coordinator's metadata with what this broker knows better: a partition the
    coordinator names it leader of, at the epoch it leads, serves here (its high watermark)
    even when the coordinator has no report of it yet (the report is a round trip behind
    the open: ``rules.hosting_changed``). Everything else is the coordinator's.

    Worked example: the coordinator says t-0 leader 2 epoch 1 with no high watermark (not
    reported yet); broker 2 leads t-0 at epoch 1, high watermark 0: broker 2 answers t-0
    served by 2 (high watermark 0); broker 1 answers as the coordinator does."""
    topics = [_with_own_leadership(topic, broker_id, leading) for topic in metadata.topics]
    if all(new is old for new, old in zip(topics, metadata.topics, strict=True)):
        return metadata
    return msgspec.structs.replace(metadata, topics=topics)


def _with_own_leadership(
    topic: TopicDescription, broker_id: int, leading: Leading
) -> TopicDescription:
    partitions = []
    for p in topic.partitions:
        own = leading(topic.name, p.partition) if p.leader == broker_id else None
        if own is not None and p.high_watermark is None and own[0] == p.leader_epoch:
            partitions.append(msgspec.structs.replace(p, high_watermark=own[1]))
        else:
            partitions.append(p)
    if all(new is old for new, old in zip(partitions, topic.partitions, strict=True)):
        return topic
    return msgspec.structs.replace(topic, partitions=partitions)


def version_has_cluster_operations(version: int) -> bool:
    """Metadata v8-10 carry the cluster's authorized operations (v11 moved them to
    DescribeCluster)."""
    return 8 <= version <= 10


def _response(
    version: int,
    metadata: Metadata,
    wanted: list[str] | None,
    errors: dict[str, KafkaError],
    this: KafkaNode | None = None,
) -> Any:
    response = SERVED[ApiKey.METADATA].response[version]
    topic_cls = response.MetadataResponseTopic
    nodes = kafka_nodes(metadata.brokers)
    live = {node.node_id for node in nodes}
    if this is not None and this.node_id not in live:
        # The broker answering is up, whatever the coordinator has heard yet (a broker just
        # restarted answers before its first heartbeat is known): librdkafka drops a broker
        # missing from a Metadata answer, and a group member whose coordinator it was then
        # never sends its next JoinGroup. It leads nothing until the coordinator says so.
        nodes = sorted([*nodes, this], key=lambda n: n.node_id)
    topics = [_topic(topic_cls, t, live) for t in metadata.topics]
    described = {t.name for t in metadata.topics}
    for name in wanted or ():
        if name not in described:
            code = errors.get(name, KafkaError.UNKNOWN_TOPIC_OR_PARTITION)
            topics.append(topic_cls(error_code=code, name=name, is_internal=False, partitions=[]))
    return response(
        throttle_time_ms=0,
        brokers=[
            response.MetadataResponseBroker(node_id=n.node_id, host=n.host, port=n.port, rack=None)
            for n in nodes
        ],
        cluster_id=metadata.cluster_id or None,
        controller_id=min(live) if live else -1,
        topics=topics,
    )


def _topic(topic_cls: Any, topic: TopicDescription, live: set[int]) -> Any:
    partition_cls = topic_cls.MetadataResponsePartition
    partitions = []
    for p in topic.partitions:
        # Serving once a replica has reported hosting it (the coordinator's reports): a
        # new partition is not advertised before its leader opens it, as Kafka answers
        # LEADER_NOT_AVAILABLE for a just-created topic. Otherwise a producer's first
        # batches are refused while later ones land, and without idempotence the
        # retried ones come after them (librdkafka's 0005 saw it).
        serving = p.leader is not None and p.high_watermark is not None
        leader = p.leader if serving and p.leader is not None else -1
        code = KafkaError.NONE if serving else KafkaError.LEADER_NOT_AVAILABLE
        partitions.append(
            partition_cls(
                error_code=code,
                partition_index=p.partition,
                leader_id=leader,
                leader_epoch=p.leader_epoch,
                replica_nodes=list(p.replicas),
                isr_nodes=list(p.isr),
                offline_replicas=[r for r in p.replicas if r not in live],
            )
        )
    return topic_cls(
        error_code=KafkaError.NONE,
        name=topic.name,
        topic_id=uuid.UUID(topic.topic_id) if topic.topic_id else uuid.UUID(int=0),
        is_internal=False,
        partitions=partitions,
    )
