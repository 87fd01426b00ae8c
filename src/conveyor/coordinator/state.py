"""The coordinator's decisions: ``(state, event, now_ms) -> Result(state, records, reply)``.

Pure: no clock, no I/O, no randomness (placement's seed comes from the topic name). Every
transition validates first and raises a typed error before deciding anything, so a
rejected request changes nothing. On success it returns the records that express the
change, the state after them (``model.apply``), the reply computed from that state, and
the decisions with their reasons for the shell to log. The shell persists the durable
records and only then makes the new state current.

Read-only views (metadata, describe, cluster status, offsets) live in ``views.py``.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Generic, TypeVar

import msgspec

from conveyor.coordinator import views
from conveyor.coordinator.election import (
    on_broker_alive,
    on_broker_dead,
    on_broker_restarted,
    on_replica_failed,
)
from conveyor.coordinator.model import (
    Broker,
    BrokerRecord,
    BrokerSeen,
    ClusterState,
    CommittedOffset,
    GroupRemoved,
    OffsetRecord,
    OffsetRemoved,
    Partition,
    PartitionRecord,
    Record,
    Topic,
    TopicRecord,
    TopicRemoved,
    apply,
    canonical_config,
)
from conveyor.coordinator.placement import place_partitions, topic_seed
from conveyor.coordinator.validation import (
    OFFSETS_PER_COMMIT_MAX,
    offset_refusal,
    validate_assignments,
    validate_broker_id,
    validate_broker_url,
    validate_group_name,
    validate_kafka_address,
    validate_partition_count,
    validate_replication_factor,
    validate_topic_config,
    validate_topic_name,
)
from conveyor.protocol.errors import ErrorCode, InvalidRequestError, RetriableError
from conveyor.protocol.messages import (
    AddPartitionsRequest,
    AlterTopicConfigRequest,
    BrokerHeartbeat,
    BrokerId,
    ConfigValue,
    CreateTopicRequest,
    Epoch,
    HeartbeatResponse,
    OffsetCommitRequest,
    OffsetFetchResponse,
    PartitionReport,
    TopicConfig,
    TopicDescription,
)

T = TypeVar("T")

# re-exported so callers find every view of the state beside its transitions
metadata = views.metadata
describe_topic = views.describe_topic
list_topics = views.list_topics
cluster_status = views.cluster_status
fetch_offsets = views.fetch_offsets
heartbeat_response = views.heartbeat_response


@dataclass(frozen=True, slots=True)
class TopicDefaults:
    """Cluster defaults for topics created without explicit settings (and auto-created).

    ``replication_factor`` None: min(3, live brokers) at creation time.
    """

    partitions: int = 8
    replication_factor: int | None = None
    config: TopicConfig = field(default_factory=TopicConfig)


@dataclass(frozen=True, slots=True)
class Result(Generic[T]):
    state: ClusterState  # after the records
    records: tuple[Record, ...]
    reply: T
    decisions: tuple[str, ...] = ()  # one line per decision, with its reason, for the log

    @property
    def durable_records(self) -> list[Record]:
        return [r for r in self.records if r.durable]


def make_result(
    state: ClusterState, records: Sequence[Record], reply: T, decisions: Sequence[str] = ()
) -> Result[T]:
    return Result(state, tuple(records), reply, tuple(decisions))


# ---- brokers -------------------------------------------------------------------------------


def handle_heartbeat(
    state: ClusterState, heartbeat: BrokerHeartbeat, now_ms: int, heartbeat_interval_ms: int
) -> Result[HeartbeatResponse]:
    """Register or refresh a broker; answer with its whole desired state.

    The first heartbeat registers; a new URL or capacity updates the broker; a broker that
    was declared dead comes back alive, and offline partitions it can lead are given it as
    leader (with a new epoch) in the same step, so the reply already tells it to lead them.
    """
    validate_broker_id(heartbeat.broker_id)
    validate_broker_url(heartbeat.url)
    if heartbeat.kafka_address is not None:
        validate_kafka_address(heartbeat.kafka_address)
    if heartbeat.capacity < 0:
        raise InvalidRequestError(f"capacity must be >= 0, not {heartbeat.capacity}")
    broker_id = heartbeat.broker_id
    known = state.brokers.get(broker_id)
    capacity = heartbeat.capacity or 1
    records: list[Record] = []
    decisions: list[str] = []
    # the incarnation is durable (as KRaft's broker registration): a coordinator that
    # restarted, or took over, must still tell a broker that restarted meanwhile
    incarnation = heartbeat.incarnation or (known.incarnation if known is not None else "")
    # the Kafka listener is durable too (as KRaft's registration keeps listeners): a
    # coordinator that took over must name it to Kafka clients before the next heartbeat
    kafka_address = heartbeat.kafka_address or ""
    if (
        known is None
        or not known.alive
        or known.url != heartbeat.url
        or known.capacity != capacity
        or known.incarnation != incarnation
        or known.kafka_address != kafka_address
    ):
        draining = known is not None and known.decommissioning
        broker = Broker(
            broker_id, heartbeat.url, True, now_ms, capacity, draining, incarnation, kafka_address
        )
        records.append(BrokerRecord(broker))
        decisions.append(_registration_reason(known, broker, now_ms))
    # reports of partitions that no longer exist are dropped: the broker deletes them soon
    reports = tuple(r for r in heartbeat.partitions if (r.topic, r.partition) in state.partitions)
    records.append(BrokerSeen(broker_id, now_ms, reports, heartbeat.incarnation or None))
    if known is not None and known.alive and _restarted(known.incarnation, heartbeat.incarnation):
        records, decisions = _on_restart(state, broker_id, records, decisions)
    records, decisions = _on_failed_logs(state, broker_id, reports, records, decisions)
    if known is None or not known.alive:
        alive = {*state.alive_broker_ids(), broker_id}
        for partition in state.partitions.values():
            if broker_id not in partition.replicas:
                continue
            unclean = state.topics[partition.topic].config.unclean_leader_election
            change = on_broker_alive(partition, alive, unclean)
            if change is not None:
                records.append(PartitionRecord(change[0]))
                decisions.append(partition_decision(change[0], change[1]))
    new_state = apply(state, records)
    reply = views.heartbeat_response(new_state, broker_id, heartbeat_interval_ms)
    return make_result(new_state, records, reply, decisions)


def _restarted(known: str, now: str) -> bool:
    return bool(known) and bool(now) and known != now


def _on_restart(
    state: ClusterState, broker_id: BrokerId, records: list[Record], decisions: list[str]
) -> tuple[list[Record], list[str]]:
    """A broker restarted within its session (a new incarnation): it may have lost an
    unsynced tail (power loss), so it must not go on leading at the same epoch or count as
    in sync. Treated as a failure it has already recovered from (Kafka's handling of an
    unclean shutdown, KIP-966): out of the ISR, leadership to another in-sync replica; it
    catches up as a follower and its leader re-adds it. The sole ISR member stays leader,
    at a new epoch (``election.on_broker_restarted``)."""
    others = set(state.alive_broker_ids()) - {broker_id}
    for partition in state.partitions.values():
        if broker_id not in partition.replicas:
            continue
        unclean = state.topics[partition.topic].config.unclean_leader_election
        change = on_broker_restarted(partition, broker_id, others, unclean)
        if change is not None:
            records.append(PartitionRecord(change[0]))
            decisions.append(partition_decision(*change))
    return records, decisions


def _on_failed_logs(
    state: ClusterState,
    broker_id: BrokerId,
    reports: tuple[PartitionReport, ...],
    records: list[Record],
    decisions: list[str],
) -> tuple[list[Record], list[str]]:
    """Replicas the broker reports cannot take writes leave the ISR, and lose leadership
    to another in-sync replica (``election.on_replica_failed``)."""
    failed = [r for r in reports if r.log_failed]
    if not failed:
        return records, decisions
    alive = set(state.alive_broker_ids()) - {broker_id}
    changed = {
        record.partition.key: record.partition
        for record in records
        if isinstance(record, PartitionRecord)
    }
    for report in failed:
        key = (report.topic, report.partition)
        partition = changed.get(key, state.partitions[key])
        change = on_replica_failed(partition, broker_id, alive)
        if change is not None:
            records.append(PartitionRecord(change[0]))
            decisions.append(partition_decision(change[0], change[1]))
    return records, decisions


def _registration_reason(known: Broker | None, broker: Broker, now_ms: int) -> str:
    broker_id, url, capacity = broker.broker_id, broker.url, broker.capacity
    if known is None:
        return f"broker {broker_id} registered at {url} with capacity {capacity}"
    if not known.alive:
        silent_ms = now_ms - known.last_heartbeat_ms
        return f"broker {broker_id} is alive again after {silent_ms} ms at {url}"
    if known.url != url:
        return f"broker {broker_id} changed its url from {known.url} to {url}"
    if known.capacity != capacity:
        return f"broker {broker_id} changed its capacity from {known.capacity} to {capacity}"
    if known.kafka_address != broker.kafka_address:
        return (
            f"broker {broker_id} changed its Kafka listener from "
            f"{known.kafka_address or 'none'} to {broker.kafka_address or 'none'}"
        )
    return (
        f"broker {broker_id} is a new incarnation {broker.incarnation} "
        f"(was {known.incarnation or 'unknown'})"
    )


def expire_brokers(state: ClusterState, now_ms: int, session_timeout_ms: int) -> Result[None]:
    """Declare dead every live broker silent for longer than ``session_timeout_ms``, and move
    or drop the leadership of its partitions (see ``election.on_broker_dead``)."""
    expired = [
        b
        for b in state.brokers.values()
        if b.alive and now_ms - b.last_heartbeat_ms > session_timeout_ms
    ]
    if not expired:
        return make_result(state, (), None)
    dead_ids = {b.broker_id for b in expired}
    alive = set(state.alive_broker_ids()) - dead_ids
    records: list[Record] = []
    decisions: list[str] = []
    for broker in sorted(expired, key=lambda b: b.broker_id):
        records.append(BrokerRecord(replace(broker, alive=False)))
        decisions.append(
            f"broker {broker.broker_id} declared dead: no heartbeat for "
            f"{now_ms - broker.last_heartbeat_ms} ms (session timeout {session_timeout_ms} ms)"
        )
    for partition in state.partitions.values():
        unclean = state.topics[partition.topic].config.unclean_leader_election
        current, reasons = partition, []
        for dead in sorted(dead_ids):
            change = on_broker_dead(current, dead, alive, unclean)
            if change is not None:
                current, reason = change
                reasons.append(reason)
        if current != partition:
            records.append(PartitionRecord(current))
            decisions.append(partition_decision(current, "; ".join(reasons)))
    return make_result(apply(state, records), records, None, decisions)


def grant_grace(state: ClusterState, now_ms: int) -> Result[None]:
    """Restart every live broker's session clock at ``now_ms``.

    Used after loading from disk (heartbeat times are soft state) and after the coordinator
    itself stalled: silence that was the coordinator's fault must not kill brokers.
    """
    records: list[Record] = [
        BrokerSeen(b.broker_id, now_ms) for b in state.brokers.values() if b.alive
    ]
    return make_result(apply(state, records), records, None)


def partition_decision(partition: Partition, reason: str) -> str:
    return (
        f"partition {partition.topic}-{partition.partition}: leader={partition.leader} "
        f"leader_epoch={partition.leader_epoch} isr={list(partition.isr)}: {reason}"
    )


# ---- topics --------------------------------------------------------------------------------


def create_topic(
    state: ClusterState, request: CreateTopicRequest, now_ms: int, defaults: TopicDefaults
) -> Result[TopicDescription]:
    """Validate, place on live brokers, and return the new topic's description.

    Every partition starts with its preferred leader ``replicas[0]`` at epoch 0 and all its
    replicas in the ISR (the logs are empty, so every replica is trivially in sync).
    """
    name = request.name
    validate_topic_name(name)
    if name in state.topics:
        raise InvalidRequestError(
            f"topic {name!r} already exists", code=ErrorCode.TOPIC_ALREADY_EXISTS, topic=name
        )
    validate_partition_count(request.partitions)
    # a draining broker takes no new replicas
    live = [b for b in state.alive_broker_ids() if not state.brokers[b].decommissioning]
    replication_factor = request.replication_factor
    if replication_factor is None and request.assignments:
        replication_factor = len(request.assignments[0])
    if replication_factor is None:
        replication_factor = default_replication_factor(defaults, len(live))
    validate_replication_factor(replication_factor, len(live))
    config = canonical_config(request.config if request.config is not None else defaults.config)
    validate_topic_config(config, replication_factor)
    placement = _placement(
        state, live, request.partitions, replication_factor, topic_seed(name), request.assignments
    )
    topic = Topic(name, request.partitions, replication_factor, config, now_ms)
    records: list[Record] = [TopicRecord(topic)]
    for index, replicas in enumerate(placement):
        ids = tuple(replicas)
        records.append(PartitionRecord(Partition(name, index, ids, ids[0], Epoch(0), ids)))
    new_state = apply(state, records)
    reply = views.describe_topic(new_state, name)
    if request.validate_only:
        return make_result(state, [], reply)
    leaders = dict(sorted(Counter(replicas[0] for replicas in placement).items()))
    decision = (
        f"created topic {name}: partitions={request.partitions} "
        f"replication_factor={replication_factor} leaders per broker {leaders}"
    )
    return make_result(new_state, records, reply, [decision])


def add_partitions(
    state: ClusterState, name: str, request: AddPartitionsRequest
) -> Result[TopicDescription]:
    """Grow a topic to ``request.partitions``, placing only the new partitions.

    The new partitions are placed like a new topic's (``place_partitions``) with the
    cluster's current load, the topic's own partitions included, so leaders and replicas
    stay spread; each starts empty at epoch 0 with all its replicas in the ISR, and brokers
    open them from their next heartbeat answer. Shrinking is refused (INVALID_PARTITIONS,
    as Kafka: keys would move to other partitions and data would be lost).

    Worked example: topic ``t`` with 2 partitions on brokers 1 and 2 (RF 1), broker 3 idle;
    growing to 4 places p2 and p3 on the least-loaded brokers first: p2 on 3, p3 on 1 or 2
    by the seeded tie-break; ``test_add_partitions_spreads_the_new_ones`` checks this.
    """
    topic = views.require_topic(state, name)
    count = request.partitions
    if count <= topic.partition_count:
        raise InvalidRequestError(
            f"topic {name!r} has {topic.partition_count} partitions; the new count {count} "
            "must be larger (partitions are never removed)",
            code=ErrorCode.INVALID_PARTITIONS,
            topic=name,
        )
    validate_partition_count(count)
    live = [b for b in state.alive_broker_ids() if not state.brokers[b].decommissioning]
    validate_replication_factor(topic.replication_factor, len(live))
    seed = topic_seed(name) + topic.partition_count
    added, rf = count - topic.partition_count, topic.replication_factor
    placement = _placement(state, live, added, rf, seed, request.assignments)
    records: list[Record] = [TopicRecord(replace(topic, partition_count=count))]
    for index, replicas in enumerate(placement, start=topic.partition_count):
        ids = tuple(replicas)
        records.append(PartitionRecord(Partition(name, index, ids, ids[0], Epoch(0), ids)))
    new_state = apply(state, records)
    reply = views.describe_topic(new_state, name)
    if request.validate_only:
        return make_result(state, [], reply)
    decision = (
        f"topic {name}: partitions {topic.partition_count} -> {count}, new ones on "
        f"{[list(r) for r in placement]}"
    )
    return make_result(new_state, records, reply, [decision])


def alter_topic_config(
    state: ClusterState, name: str, request: AlterTopicConfigRequest
) -> Result[TopicDescription]:
    """Change some of a topic's settings. Validated like a new topic's config, all or
    nothing; brokers apply it from their next heartbeat answer (a changed log setting
    reopens the partition's log, ``broker/reconcile.py``), the coordinator at once
    (``unclean_leader_election``, the ISR minimum)."""
    topic = views.require_topic(state, name)
    config = merge_config(topic.config, request.set, request.reset)
    validate_topic_config(config, topic.replication_factor)
    records: list[Record] = [TopicRecord(replace(topic, config=config))]
    new_state = apply(state, records)
    reply = views.describe_topic(new_state, name)
    changed = sorted({*request.set, *request.reset})
    if request.validate_only or config == topic.config:
        return make_result(state, [], reply)
    return make_result(new_state, records, reply, [f"topic {name}: config changed: {changed}"])


def merge_config(
    config: TopicConfig, values: Mapping[str, ConfigValue], reset: Sequence[str]
) -> TopicConfig:
    """``config`` with ``reset`` back to their defaults, then ``values`` set. Unknown names
    and values of the wrong type are INVALID_CONFIG; a name both set and reset too."""
    fields = {f.name: f for f in msgspec.structs.fields(TopicConfig)}
    unknown = sorted(n for n in (*values, *reset) if n not in fields)
    if unknown:
        raise InvalidRequestError(
            f"unknown topic setting(s) {unknown}; known: {sorted(fields)}",
            code=ErrorCode.INVALID_CONFIG,
        )
    both = sorted(set(values) & set(reset))
    if both:
        raise InvalidRequestError(
            f"setting(s) {both} both set and reset", code=ErrorCode.INVALID_CONFIG
        )
    merged = msgspec.structs.asdict(config)
    for key in reset:
        merged[key] = fields[key].default
    merged.update(values)
    try:
        return canonical_config(msgspec.convert(merged, TopicConfig, strict=True))
    except msgspec.ValidationError as exc:
        raise InvalidRequestError(
            f"invalid topic setting: {exc}", code=ErrorCode.INVALID_CONFIG
        ) from None


def _placement(  # noqa: PLR0917 -- what placing partitions depends on, in order
    state: ClusterState,
    live: list[BrokerId],
    partition_count: int,
    replication_factor: int,
    seed: int,
    assignments: list[list[int]] | None,
) -> list[list[BrokerId]]:
    """The given assignments once validated, else ``place_partitions`` with the cluster's
    current leader and replica load."""
    if assignments is not None:
        validate_assignments(assignments, partition_count, replication_factor, list(live))
        return [[BrokerId(b) for b in replicas] for replicas in assignments]
    leader_load = Counter(p.leader for p in state.partitions.values() if p.leader is not None)
    replica_load = Counter(b for p in state.partitions.values() for b in p.replicas)
    return place_partitions(
        live,
        partition_count,
        replication_factor,
        seed=seed,
        leader_load=leader_load,
        replica_load=replica_load,
    )


def default_replication_factor(defaults: TopicDefaults, live_count: int) -> int:
    """The configured default, else min(3, live brokers) (at least 1, so that with no
    live broker the usual "exceeds the live brokers" error explains the problem)."""
    if defaults.replication_factor is not None:
        return defaults.replication_factor
    return max(1, min(3, live_count))


def auto_create_topics(
    state: ClusterState, names: Sequence[str], now_ms: int, defaults: TopicDefaults
) -> Result[None]:
    """Create the unknown topics among ``names`` with the cluster defaults.

    Too few live brokers for the default replication factor is retriable here (brokers may
    still be starting: a producer retries), unlike an explicit create, which is the
    caller's mistake to fix.
    """
    missing = sorted({n for n in names if n not in state.topics})
    for name in missing:
        validate_topic_name(name)
    live_count = len(state.alive_broker_ids())
    if missing and default_replication_factor(defaults, live_count) > live_count:
        raise RetriableError(
            f"cannot auto-create {missing}: {live_count} live broker(s), default replication "
            f"factor {defaults.replication_factor or 'min(3, live brokers)'}",
            code=ErrorCode.LEADER_NOT_AVAILABLE,
            topics=missing,
        )
    records: list[Record] = []
    decisions: list[str] = []
    current = state
    for name in missing:
        request = CreateTopicRequest(name=name, partitions=defaults.partitions)
        created = create_topic(current, request, now_ms, defaults)
        current = created.state
        records.extend(created.records)
        decisions.extend(f"auto-create: {d}" for d in created.decisions)
    return make_result(current, records, None, decisions)


def delete_topic(state: ClusterState, name: str) -> Result[None]:
    """Remove a topic with its committed offsets. Brokers drop its logs when it vanishes
    from their assignments on their next heartbeat."""
    topic = views.require_topic(state, name)
    dropped = sum(1 for key in state.offsets if key[1] == name)
    records: list[Record] = [TopicRemoved(name)]
    decision = (
        f"deleted topic {name}: {topic.partition_count} partitions; "
        f"dropped {dropped} committed offset(s)"
    )
    return make_result(apply(state, records), records, None, [decision])


# ---- committed offsets ---------------------------------------------------------------------


def delete_group(state: ClusterState, group: str) -> Result[None]:
    """Forget a group's committed offsets (Kafka's DeleteGroups). That the group has no
    members is checked before, in ``group_service``: membership is soft state."""
    validate_group_name(group)
    dropped = len(state.group_offsets.get(group, {}))
    if not dropped:
        raise InvalidRequestError(
            f"group {group!r} has no committed offsets", code=ErrorCode.UNKNOWN_GROUP, group=group
        )
    records: list[Record] = [GroupRemoved(group)]
    decision = f"deleted group {group}: dropped {dropped} committed offset(s)"
    return make_result(apply(state, records), records, None, [decision])


def delete_offsets(
    state: ClusterState, group: str, partitions: Sequence[tuple[str, int]]
) -> Result[None]:
    """Forget some of a group's committed offsets (Kafka's OffsetDelete); partitions it
    never committed are skipped. Whether the group may lose them (its members do not
    read those topics) is checked before, in the shell: membership is soft state."""
    validate_group_name(group)
    records: list[Record] = [
        OffsetRemoved(group, t, p)
        for t, p in dict.fromkeys(partitions)
        if (group, t, p) in state.offsets
    ]
    decision = f"group {group}: deleted {len(records)} committed offset(s)"
    return make_result(apply(state, records), records, None, [decision] if records else [])


def commit_offsets(
    state: ClusterState, group: str, request: OffsetCommitRequest, now_ms: int
) -> Result[OffsetFetchResponse]:
    """Record a group's positions; all or nothing. Fencing (member and generation against
    the group's membership) happens before, in ``group_service``: membership is soft
    state outside ``ClusterState``."""
    validate_group_name(group)
    if len(request.offsets) > OFFSETS_PER_COMMIT_MAX:
        raise InvalidRequestError(
            f"{len(request.offsets)} offsets in one commit; the limit is {OFFSETS_PER_COMMIT_MAX}"
        )
    records: list[Record] = []
    for item in request.offsets:
        topic = views.require_topic(state, item.topic)
        views.require_partition(topic, item.partition)
        refusal = offset_refusal(item)
        if refusal is not None:  # HTTP's code for every one of them is INVALID_REQUEST
            raise InvalidRequestError(refusal[1], topic=item.topic, partition=item.partition)
        committed = CommittedOffset(
            group, item.topic, item.partition, item.offset, item.metadata, now_ms, item.leader_epoch
        )
        records.append(OffsetRecord(committed))
    new_state = apply(state, records)
    keys = {(item.topic, item.partition) for item in request.offsets}
    reply = views.fetch_offsets(new_state, group, None, only=keys)
    return make_result(new_state, records, reply)
