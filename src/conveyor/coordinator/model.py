"""The coordinator's cluster state, the records that change it, and ``apply`` (replay).

Modelled on Kafka's controller: a decision never edits the state. It returns *records*
(facts such as "partition orders-3 now has leader 2 at epoch 5"); the shell persists the
durable ones and only then swaps in ``apply(state, records)``. Recovery replays the stored
records through the same ``apply``, so the live path and the restart path are one code path.

Everything here is pure: no clock, no I/O. ``ClusterState`` is treated as immutable:
``apply`` copies only the mappings a batch of records touches (the broker table on a
heartbeat, the partition table on a topic change), so old states stay valid snapshots that
readers may keep using while a transition is being persisted. Committed offsets, the one
table that grows with the clients (groups x partitions) and changes on every commit, are
persistent maps instead (``immutables.Map``, a hash array mapped trie, CPython's own for
``contextvars``): a commit makes a new version in O(log n) sharing the rest, where a
dict copy cost O(n) per commit (11.7 ms at 100,000 offsets: docs/benchmarks.md). They are
held by group (group -> its offsets), so a group's offsets (describing it, its lag, an
offset fetch, the group list) are one lookup, not a walk over every group's.

Soft state (``durable = False``): heartbeat times and the offsets brokers report. It is not
written to SQLite; a restarted coordinator relearns it within one heartbeat interval, which
saves an fsync per broker per second.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field, replace
from typing import Any, ClassVar

import msgspec
from immutables import Map
from immutables._protocols import MapMutation

from conveyor.coordinator.txn_model import Transaction, TransactionCompleted, TransactionRecord
from conveyor.protocol.errors import ErrorCode, FatalError
from conveyor.protocol.messages import BrokerId, Epoch, PartitionReport, TopicConfig
from conveyor.protocol.share import ShareGroupConfig

PartitionKey = tuple[str, int]  # (topic, partition)
OffsetKey = tuple[str, str, int]  # (group, topic, partition)


@dataclass(frozen=True, slots=True)
class Broker:
    broker_id: BrokerId
    url: str
    alive: bool
    last_heartbeat_ms: int  # coordinator clock; see transport.clock
    capacity: int = 1  # recorded for weighted placement later; placement ignores it today
    decommissioning: bool = False  # being drained: its replicas move to other brokers
    incarnation: str = ""  # the broker process's id from its heartbeats (stored: see state.py)
    kafka_address: str = ""  # its Kafka listener's advertised HOST:PORT ("" none; stored)


@dataclass(frozen=True, slots=True)
class Topic:
    name: str
    partition_count: int
    replication_factor: int
    config: TopicConfig
    created_ms: int


@dataclass(frozen=True, slots=True)
class Partition:
    """One partition's replica set. ``replicas[0]`` is the preferred leader."""

    topic: str
    partition: int
    replicas: tuple[BrokerId, ...]
    leader: BrokerId | None  # None: offline (no live in-sync replica)
    leader_epoch: Epoch  # bumped on every leader change, including to and from None
    isr: tuple[BrokerId, ...]
    partition_epoch: Epoch = 0  # type: ignore[assignment]  # bumped on every change of leader, replicas or ISR
    # replicas a move will drop once every other replica is in the ISR (a rebalance)
    removing: tuple[BrokerId, ...] = ()

    @property
    def key(self) -> PartitionKey:
        return (self.topic, self.partition)


@dataclass(frozen=True, slots=True)
class CommittedOffset:
    group: str
    topic: str
    partition: int
    offset: int  # the next offset the group will read (Kafka's convention)
    metadata: str | None
    committed_ms: int
    leader_epoch: int = -1  # the committer's (Kafka's committed leader epoch); -1 none

    @property
    def key(self) -> OffsetKey:
        return (self.group, self.topic, self.partition)


GroupOffsets = Map[PartitionKey, CommittedOffset]


class CommittedOffsets(Mapping[OffsetKey, CommittedOffset]):
    """Every group's committed offsets as one read-only mapping keyed (group, topic,
    partition): a view over ``ClusterState.group_offsets`` (nothing copied)."""

    __slots__ = ("_groups",)

    def __init__(self, groups: Map[str, GroupOffsets]) -> None:
        self._groups = groups

    def __getitem__(self, key: OffsetKey) -> CommittedOffset:
        group, topic, partition = key
        return self._groups[group][(topic, partition)]

    def __iter__(self) -> Iterator[OffsetKey]:
        for group, entries in self._groups.items():
            for topic, partition in entries:
                yield (group, topic, partition)

    def __len__(self) -> int:
        return sum(len(entries) for entries in self._groups.values())


@dataclass(frozen=True, slots=True)
class ShareGroup:
    """A share group's settings (issue 23, docs/queues.md); ``version`` goes up with
    every change, so brokers know when their cached copy is old."""

    name: str
    config: ShareGroupConfig
    version: int
    created_ms: int


@dataclass(frozen=True, slots=True)
class ClusterState:
    cluster_id: str
    brokers: Mapping[BrokerId, Broker] = field(default_factory=dict)
    topics: Mapping[str, Topic] = field(default_factory=dict)
    partitions: Mapping[PartitionKey, Partition] = field(default_factory=dict)
    # group -> its committed offsets by (topic, partition); a group with none is absent
    group_offsets: Map[str, GroupOffsets] = field(default_factory=Map)
    # producer id -> its current epoch (idempotent producers; ids are never reused)
    producers: Mapping[int, int] = field(default_factory=dict)
    # soft: per broker, its latest report of each replica it hosts
    reports: Mapping[BrokerId, Mapping[PartitionKey, PartitionReport]] = field(default_factory=dict)
    share_groups: Mapping[str, ShareGroup] = field(default_factory=dict)
    # transactional id -> its transaction (txn_model.py, issue 21)
    transactions: Mapping[str, Transaction] = field(default_factory=dict)

    @property
    def offsets(self) -> Mapping[OffsetKey, CommittedOffset]:
        """Every committed offset, keyed (group, topic, partition)."""
        return CommittedOffsets(self.group_offsets)

    def topic_partitions(self, topic: Topic) -> list[Partition]:
        return [self.partitions[(topic.name, p)] for p in range(topic.partition_count)]

    def alive_broker_ids(self) -> list[BrokerId]:
        return sorted(b.broker_id for b in self.brokers.values() if b.alive)


def canonical_config(config: TopicConfig) -> TopicConfig:
    """``config`` with every value equal to its default replaced by the default itself.

    msgspec's ``omit_defaults`` leaves a field out of the JSON only when it *is* the default
    object, so a config decoded from SQLite or sent by a client would otherwise show its
    defaults on the wire while a fresh one does not; one canonical form keeps replies the
    same before and after a restart.
    """
    explicit: dict[str, Any] = {}
    for info in msgspec.structs.fields(TopicConfig):
        value = getattr(config, info.name)
        if value != info.default:
            explicit[info.name] = value
    return TopicConfig(**explicit)


# ---- records -------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class BrokerRecord:
    """A broker registered, changed its URL, or was declared dead or alive."""

    durable: ClassVar[bool] = True
    broker: Broker


@dataclass(frozen=True, slots=True)
class BrokerSeen:
    """A heartbeat arrived (or a grace period was granted). ``reports`` None: unchanged."""

    durable: ClassVar[bool] = False
    broker_id: BrokerId
    now_ms: int
    reports: tuple[PartitionReport, ...] | None = None
    incarnation: str | None = None


@dataclass(frozen=True, slots=True)
class TopicRecord:
    durable: ClassVar[bool] = True
    topic: Topic


@dataclass(frozen=True, slots=True)
class PartitionRecord:
    """The whole new state of one partition (upsert)."""

    durable: ClassVar[bool] = True
    partition: Partition


@dataclass(frozen=True, slots=True)
class TopicRemoved:
    """A topic, its partitions, its reports and every group's committed offsets for it."""

    durable: ClassVar[bool] = True
    name: str


@dataclass(frozen=True, slots=True)
class OffsetRecord:
    durable: ClassVar[bool] = True
    offset: CommittedOffset


@dataclass(frozen=True, slots=True)
class GroupRemoved:
    """A consumer group's committed offsets, all of them (the group was empty)."""

    durable: ClassVar[bool] = True
    group: str


@dataclass(frozen=True, slots=True)
class OffsetRemoved:
    """One partition's committed offset of a group (Kafka's OffsetDelete)."""

    durable: ClassVar[bool] = True
    group: str
    topic: str
    partition: int

    @property
    def key(self) -> OffsetKey:
        return (self.group, self.topic, self.partition)


@dataclass(frozen=True, slots=True)
class ProducerRecord:
    """A producer id was handed out, or its epoch bumped (InitProducerId)."""

    durable: ClassVar[bool] = True
    producer_id: int
    producer_epoch: int


@dataclass(frozen=True, slots=True)
class ShareGroupRecord:
    """A share group was created or its settings changed (upsert)."""

    durable: ClassVar[bool] = True
    group: ShareGroup


@dataclass(frozen=True, slots=True)
class ShareGroupRemoved:
    durable: ClassVar[bool] = True
    name: str


Record = (
    BrokerRecord
    | BrokerSeen
    | TopicRecord
    | PartitionRecord
    | TopicRemoved
    | OffsetRecord
    | GroupRemoved
    | OffsetRemoved
    | ProducerRecord
    | ShareGroupRecord
    | ShareGroupRemoved
    | TransactionRecord
    | TransactionCompleted
)


# ---- replay --------------------------------------------------------------------------------


def apply(state: ClusterState, records: Iterable[Record]) -> ClusterState:  # noqa: PLR0912 -- one arm per record type
    """The state after ``records``, in order. Copies each touched mapping once (offsets:
    one persistent-map mutation for the whole batch)."""
    brokers: dict[BrokerId, Broker] | None = None
    topics: dict[str, Topic] | None = None
    partitions: dict[PartitionKey, Partition] | None = None
    offsets = _Offsets(state.group_offsets)
    reports: dict[BrokerId, Mapping[PartitionKey, PartitionReport]] | None = None
    producers: dict[int, int] | None = None
    share_groups: dict[str, ShareGroup] | None = None
    transactions: dict[str, Transaction] | None = None
    for record in records:
        match record:
            case BrokerRecord(broker=broker):
                brokers = brokers if brokers is not None else dict(state.brokers)
                brokers[broker.broker_id] = broker
            case BrokerSeen():
                brokers = brokers if brokers is not None else dict(state.brokers)
                if record.reports is not None:
                    reports = reports if reports is not None else dict(state.reports)
                _apply_seen(record, brokers, reports)
            case TopicRecord(topic=topic):
                topics = topics if topics is not None else dict(state.topics)
                topics[topic.name] = topic
            case PartitionRecord(partition=partition):
                partitions = partitions if partitions is not None else dict(state.partitions)
                partitions[partition.key] = partition
            case TopicRemoved(name=name):
                topics = topics if topics is not None else dict(state.topics)
                partitions = partitions if partitions is not None else dict(state.partitions)
                reports = reports if reports is not None else dict(state.reports)
                _remove_topic(name, topics, partitions, reports)
                offsets.remove(topic=name)
            case OffsetRecord(offset=offset):
                offsets.set(offset)
            case GroupRemoved(group=group):
                offsets.remove(group=group)
            case OffsetRemoved():
                offsets.discard(record.key)
            case ProducerRecord(producer_id=producer_id, producer_epoch=producer_epoch):
                producers = producers if producers is not None else dict(state.producers)
                producers[producer_id] = producer_epoch
            case ShareGroupRecord() | ShareGroupRemoved():
                if share_groups is None:
                    share_groups = dict(state.share_groups)
                _apply_share_group(record, share_groups)
            case TransactionRecord(transaction=txn) | TransactionCompleted(transaction=txn):
                if transactions is None:
                    transactions = dict(state.transactions)
                transactions[txn.transactional_id] = txn
    return replace(
        state,
        brokers=state.brokers if brokers is None else brokers,
        topics=state.topics if topics is None else topics,
        partitions=state.partitions if partitions is None else partitions,
        group_offsets=offsets.finish(),
        reports=state.reports if reports is None else reports,
        producers=state.producers if producers is None else producers,
        share_groups=state.share_groups if share_groups is None else share_groups,
        transactions=state.transactions if transactions is None else transactions,
    )


class _Offsets:
    """The offsets of one ``apply``: a mutation of the group table and one of each
    touched group's offsets, made on first use (a heartbeat batch leaves the maps
    themselves untouched); a group left without offsets leaves the table."""

    __slots__ = ("_base", "_groups", "_touched")

    def __init__(self, base: Map[str, GroupOffsets]) -> None:
        self._base = base
        self._groups: MapMutation[str, GroupOffsets] | None = None
        self._touched: dict[str, MapMutation[PartitionKey, CommittedOffset]] = {}

    def _group(self, group: str) -> MapMutation[PartitionKey, CommittedOffset]:
        entries = self._touched.get(group)
        if entries is None:
            if self._groups is None:
                self._groups = self._base.mutate()
            entries = self._touched[group] = self._groups.get(group, Map()).mutate()
        return entries

    def set(self, offset: CommittedOffset) -> None:
        self._group(offset.group)[(offset.topic, offset.partition)] = offset

    def discard(self, key: OffsetKey) -> None:
        group, topic, partition = key
        if group in self._touched or group in self._base:
            self._group(group).pop((topic, partition), None)

    def remove(self, *, group: str | None = None, topic: str | None = None) -> None:
        """Drop a group's offsets, or every group's of a topic (a scan of every offset,
        for the rare topic deletion)."""
        if group is not None:
            self._touched.pop(group, None)
            if group in self._base or self._groups is not None:
                if self._groups is None:
                    self._groups = self._base.mutate()
                self._groups.pop(group, None)
            return
        current = self.finish()
        for name, entries in current.items():
            doomed = [key for key in entries if key[0] == topic]
            if doomed:
                mutation = self._group(name)
                for key in doomed:
                    del mutation[key]

    def finish(self) -> Map[str, GroupOffsets]:
        if self._groups is not None:
            for group, entries in self._touched.items():
                if len(entries):
                    self._groups[group] = entries.finish()
                else:
                    self._groups.pop(group, None)
            self._base, self._groups, self._touched = self._groups.finish(), None, {}
        return self._base


def _apply_seen(
    record: BrokerSeen,
    brokers: dict[BrokerId, Broker],
    reports: dict[BrokerId, Mapping[PartitionKey, PartitionReport]] | None,
) -> None:
    known = brokers.get(record.broker_id)
    if known is None:
        raise _bug(f"heartbeat record for unregistered broker {record.broker_id}")
    brokers[record.broker_id] = replace(
        known,
        last_heartbeat_ms=record.now_ms,
        incarnation=record.incarnation or known.incarnation,
    )
    if record.reports is not None and reports is not None:
        reports[record.broker_id] = {(r.topic, r.partition): r for r in record.reports}


def _apply_share_group(
    record: ShareGroupRecord | ShareGroupRemoved, share_groups: dict[str, ShareGroup]
) -> None:
    if isinstance(record, ShareGroupRecord):
        share_groups[record.group.name] = record.group
    else:
        share_groups.pop(record.name, None)


def _remove_topic(
    name: str,
    topics: dict[str, Topic],
    partitions: dict[PartitionKey, Partition],
    reports: dict[BrokerId, Mapping[PartitionKey, PartitionReport]],
) -> None:
    topic = topics.pop(name, None)
    if topic is None:
        raise _bug(f"removing unknown topic {name!r}")
    for p in range(topic.partition_count):
        del partitions[(name, p)]
    # a re-created topic of the same name must not show the old log's offsets
    for broker_id, hosted in reports.items():
        if any(key[0] == name for key in hosted):
            reports[broker_id] = {k: r for k, r in hosted.items() if k[0] != name}


def snapshot_records(state: ClusterState) -> list[Record]:
    """Durable records that rebuild ``state`` from an empty one through :func:`apply` (its
    soft parts aside): what a store writes as a snapshot, and what a migration copies."""
    records: list[Record] = [BrokerRecord(b) for b in state.brokers.values()]
    records += [TopicRecord(t) for t in state.topics.values()]
    records += [PartitionRecord(p) for p in state.partitions.values()]
    records += [ProducerRecord(pid, epoch) for pid, epoch in state.producers.items()]
    records += [OffsetRecord(o) for o in state.offsets.values()]
    records += [ShareGroupRecord(g) for g in state.share_groups.values()]
    records += [TransactionRecord(t) for t in state.transactions.values()]
    return records


# ---- invariants ----------------------------------------------------------------------------


def check_invariants(state: ClusterState) -> None:
    """Raise FatalError when the state breaks a rule no valid sequence of records can break.

    Run after loading from SQLite (check twice: before the write, after the read) and by the
    tests after every transition. A failure here is a bug or a damaged database, never bad
    user input.
    """
    problems: list[str] = []
    for name, topic in state.topics.items():
        if topic.partition_count < 1:
            problems.append(f"topic {name!r} has no partitions")
        for p in range(topic.partition_count):
            partition = state.partitions.get((name, p))
            if partition is None:
                problems.append(f"topic {name!r} is missing partition {p}")
            else:
                problems.extend(_partition_problems(partition, topic, state.brokers))
    for topic_name, p in state.partitions:
        if topic_name not in state.topics:
            problems.append(f"partition {topic_name}-{p} belongs to no topic")
    problems.extend(_offset_problems(state))
    if problems:
        raise _bug("; ".join(problems[:10]))


def _offset_problems(state: ClusterState) -> list[str]:
    problems = []
    for group, entries in state.group_offsets.items():
        if not entries:
            problems.append(f"group {group!r} is held without committed offsets")
        for (topic_name, p), committed in entries.items():
            if (topic_name, p) not in state.partitions:
                problems.append(f"group {group!r} has an offset for unknown {topic_name}-{p}")
            if committed.key != (group, topic_name, p):
                problems.append(f"group {group!r} holds {committed.key} under {topic_name}-{p}")
    return problems


def _partition_problems(
    partition: Partition, topic: Topic, brokers: Mapping[BrokerId, Broker]
) -> list[str]:
    label = f"partition {partition.topic}-{partition.partition}"
    problems = []
    # a move or a restoration adds the new replica before it drops the old one, so a
    # partition may briefly hold more replicas than the topic's RF, never fewer than one
    if not partition.replicas:
        problems.append(f"{label} has no replicas")
    if len(set(partition.replicas)) != len(partition.replicas):
        problems.append(f"{label} lists a broker twice in its replicas")
    if not set(partition.isr) <= set(partition.replicas):
        problems.append(f"{label} has an ISR member outside its replicas")
    if not partition.isr:
        problems.append(f"{label} has an empty ISR")
    if partition.leader is not None and partition.leader not in partition.isr:
        problems.append(f"{label} has a leader outside its ISR")
    if not set(partition.removing) <= set(partition.replicas):
        problems.append(f"{label} is removing a broker outside its replicas")
    if partition.leader_epoch < 0 or partition.partition_epoch < 0:
        problems.append(f"{label} has a negative epoch")
    unknown = [b for b in partition.replicas if b not in brokers]
    if unknown:
        problems.append(f"{label} is placed on unknown brokers {unknown}")
    return problems


def _bug(message: str) -> FatalError:
    return FatalError(
        f"coordinator state invariant broken: {message}", code=ErrorCode.INTERNAL_ERROR
    )
