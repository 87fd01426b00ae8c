"""Every JSON message that crosses a process: msgspec Structs, one place.

Rules (so that a rolling upgrade can mix versions): new fields are optional with defaults;
decoders ignore unknown fields (except in user-supplied configuration, where a typo must
be an error); names follow the domain nouns of STYLE.md, units last.

Record batches themselves are binary (Kafka RecordBatch v2, see ``batch.py``); JSON forms
of records exist for curl and other languages.
"""

from __future__ import annotations

from typing import Any, Literal, NewType

import msgspec

BrokerId = NewType("BrokerId", int)
Epoch = NewType("Epoch", int)
Offset = NewType("Offset", int)  # a logical position in a partition's log (not a byte)

Acks = Literal["0", "1", "all"]
Encoding = Literal["utf8", "base64"]

BATCH_CONTENT_TYPE = "application/vnd.conveyor.record-batch"
"""Content type of binary bodies: one or more concatenated Kafka v2 record batches.
``application/octet-stream`` is accepted as a synonym."""

DEFAULT_COORDINATOR_URL = "http://127.0.0.1:7700"


class Wire(msgspec.Struct, kw_only=True, omit_defaults=True):
    """Base of every message: keyword-only, defaults left out of the JSON."""


# ---- errors --------------------------------------------------------------------------------


class ErrorBody(Wire):
    code: str
    message: str
    retriable: bool = False
    details: dict[str, Any] | None = None


# ---- topics --------------------------------------------------------------------------------


class TopicConfig(Wire, forbid_unknown_fields=True):
    """Per-topic settings; unknown keys are rejected so a typo is not silently ignored."""

    retention_ms: int = 7 * 24 * 3600 * 1000
    retention_bytes: int = -1
    segment_bytes: int = 128 * 1024 * 1024
    max_message_bytes: int = 1024 * 1024
    flush: str = "always"  # always | never | interval:MS
    min_insync_replicas: int | None = None  # None: 2 when RF >= 3, else 1
    unclean_leader_election: bool = False
    # compaction (docs/storage-format.md#compaction), Kafka's names and defaults
    cleanup_policy: str = "delete"  # delete | compact | compact,delete
    delete_retention_ms: int = 24 * 3600 * 1000  # a tombstone stays readable this long
    min_cleanable_dirty_ratio: float = 0.5  # clean once this share of the log is dirty


class CreateTopicRequest(Wire):
    name: str
    partitions: int = 8
    replication_factor: int | None = None  # None: min(3, live brokers)
    config: TopicConfig | None = None
    validate_only: bool = False  # answer what would be created, create nothing
    # partition i -> its replicas, preferred leader first (None: the coordinator places)
    assignments: list[list[int]] | None = None


ConfigValue = int | float | str | bool | None


class AlterTopicConfigRequest(Wire, forbid_unknown_fields=True):
    """Change some of a topic's settings (``TopicConfig`` field names); the others keep
    their values. ``reset`` puts settings back to their defaults."""

    set: dict[str, ConfigValue] = msgspec.field(default_factory=dict)
    reset: list[str] = msgspec.field(default_factory=list)
    validate_only: bool = False


class AddPartitionsRequest(Wire, forbid_unknown_fields=True):
    """Grow a topic to ``partitions`` in all (never shrink: keys would move)."""

    partitions: int
    validate_only: bool = False
    assignments: list[list[int]] | None = None  # the new partitions' replicas, in order


class PartitionInfo(Wire):
    partition: int
    leader: BrokerId | None
    leader_epoch: Epoch
    replicas: list[BrokerId]
    isr: list[BrokerId]
    leader_url: str | None = None
    log_start_offset: int | None = None
    log_end_offset: int | None = None
    high_watermark: int | None = None
    partition_epoch: int = 0  # bumped on every change of leader, replicas or ISR


class TopicDescription(Wire):
    name: str
    partitions: list[PartitionInfo]
    replication_factor: int
    config: TopicConfig
    # Kafka's topic id (a UUID), stable for the topic's life: see coordinator/views.py
    topic_id: str | None = None


class TopicSummary(Wire):
    name: str
    partitions: int
    replication_factor: int


class TopicList(Wire):
    topics: list[TopicSummary]


# ---- cluster -------------------------------------------------------------------------------


class BrokerInfo(Wire):
    broker_id: BrokerId
    url: str
    alive: bool = True
    last_heartbeat_ms: int | None = None
    leader_count: int = 0
    replica_count: int = 0
    # HOST:PORT of the broker's Kafka listener (issue 16); None: it has none
    kafka_address: str | None = None


class Metadata(Wire):
    """What clients need to route: brokers and, per requested topic, leaders and epochs."""

    cluster_id: str
    brokers: list[BrokerInfo]
    topics: list[TopicDescription]


class ClusterStatus(Wire):
    cluster_id: str
    version: str
    brokers: list[BrokerInfo]
    topics: int
    partitions: int
    offline_partitions: int = 0
    under_replicated_partitions: int = 0


# ---- broker <-> coordinator ----------------------------------------------------------------


class PartitionReport(Wire):
    """A broker's view of one replica it hosts, sent in every heartbeat."""

    topic: str
    partition: int
    leader_epoch: Epoch
    log_start_offset: int
    log_end_offset: int
    high_watermark: int
    durable_offset: int | None = None  # what this replica has durably (per flush policy)
    # The replica's log cannot take writes (disk full, or an fsync error): the coordinator
    # moves leadership to another in-sync replica and drops this one from the ISR.
    log_failed: bool = False


class SharePartitionStats(Wire):
    """One share-partition's counts (docs/queues.md), reported in the heartbeats of the broker
    leading the partition."""

    group: str
    topic: str
    partition: int
    start_offset: int
    end_offset: int  # the window's read end
    in_flight: int  # acquired, not settled
    available: int  # in the window, deliverable now or after a delay
    acknowledged: int  # accepted, in the window (below start they are forgotten)
    archived: int  # rejected or dead-lettered, in the window
    dead_lettering: int = 0  # being written to the dead-letter topic
    oldest_in_flight_age_ms: int | None = None
    leader_epoch: int = -1


class BrokerHeartbeat(Wire):
    """Registration and heartbeat in one (level-triggered: the first one registers)."""

    broker_id: BrokerId
    url: str
    partitions: list[PartitionReport] = msgspec.field(default_factory=list)
    capacity: int = 0  # relative weight for placement; 0 means the default of 1
    # Random per broker process: a new one tells the coordinator the broker restarted (and
    # may have lost an unsynced tail), so it must not keep leading or count as in sync.
    incarnation: str = ""
    # HOST:PORT Kafka clients reach this broker at (its --kafka-advertise); None: no listener
    kafka_address: str | None = None
    # share groups (issue 23): the share-partitions this broker leads; None: not reported
    share_partitions: list[SharePartitionStats] | None = None


class ReplicaAssignment(Wire):
    """Desired state of one partition replica, as the coordinator wants it."""

    topic: str
    partition: int
    leader: BrokerId | None
    leader_epoch: Epoch
    replicas: list[BrokerId]
    isr: list[BrokerId]
    partition_epoch: int = 0  # bumped on every change of leader, replicas or ISR
    min_insync_replicas: int = 1


class HeartbeatResponse(Wire):
    """The whole desired state for one broker, answered to every heartbeat: the broker
    reconciles toward it (opens, leads, follows, deletes), so a lost reply heals itself."""

    cluster_id: str
    assignments: list[ReplicaAssignment]
    topic_configs: dict[str, TopicConfig]
    brokers: list[BrokerInfo]
    heartbeat_interval_ms: int = 1000
    # the answering coordinator's epoch (issue 20); brokers refuse answers from an epoch
    # older than one they have seen. 0: a single coordinator (SQLite), never fenced.
    coordinator_epoch: int = 0


# ---- produce and fetch (broker data plane) -------------------------------------------------


class JsonRecord(Wire):
    """A record for curl and other languages. ``value_encoding`` says how to read ``value``:
    ``utf8`` text (the default) or ``base64`` for arbitrary bytes; the same for the key."""

    value: str | None = None
    key: str | None = None
    headers: dict[str, str] | None = None
    key_encoding: Encoding = "utf8"
    value_encoding: Encoding = "utf8"
    partition: int | None = None  # only for the topic-level routing endpoint
    timestamp_ms: int | None = None


class JsonProduceRequest(Wire):
    records: list[JsonRecord]


class ProduceResponse(Wire):
    topic: str
    partition: int
    base_offset: int
    last_offset: int
    leader_epoch: Epoch
    log_start_offset: int = 0


class RoutedRecordResult(Wire):
    partition: int
    offset: int | None = None
    error: ErrorBody | None = None


class RoutedProduceResponse(Wire):
    topic: str
    results: list[RoutedRecordResult]


class FetchedRecord(Wire):
    offset: int
    timestamp_ms: int
    key: str | None
    value: str | None
    key_encoding: Encoding = "utf8"
    value_encoding: Encoding = "utf8"
    headers: dict[str, str] | None = None


class FetchResponse(Wire):
    """JSON form of a fetch. The binary form returns the batches as stored, with the same
    numbers in ``X-Conveyor-*`` response headers."""

    topic: str
    partition: int
    high_watermark: int
    log_start_offset: int
    log_end_offset: int
    next_offset: int
    records: list[FetchedRecord]


class DeletedRecords(Wire):
    """The answer to deleting a partition's records below an offset (Kafka's DeleteRecords):
    ``low_watermark``, the lowest log start offset over the in-sync replicas, is at least
    the offset asked for."""

    topic: str
    partition: int
    low_watermark: int


class PartitionOffsets(Wire):
    """A partition leader's offsets (Kafka's ListOffsets)."""

    topic: str
    partition: int
    leader_epoch: Epoch
    log_start_offset: int
    high_watermark: int
    log_end_offset: int
    offset_for_timestamp: int | None = None  # answered when ?timestamp_ms= was given
    timestamp_found_ms: int | None = None  # that record's own timestamp
    # below it no transaction is open (issue 21): read_committed consumers' end
    last_stable_offset: int | None = None


class HostedPartition(Wire):
    topic: str
    partition: int
    role: Literal["leader", "follower"]
    leader_epoch: Epoch
    log_start_offset: int
    log_end_offset: int
    high_watermark: int
    size_bytes: int


class HostedPartitions(Wire):
    broker_id: BrokerId
    partitions: list[HostedPartition]


# ---- consumer positions --------------------------------------------------------------------


class PartitionOffset(Wire):
    topic: str
    partition: int
    offset: int
    metadata: str | None = None
    # the leader epoch of the record before ``offset`` when it was read (Kafka's committed
    # leader epoch, KIP-320: how a resuming consumer detects a truncated log); -1 unknown,
    # and what a commit or a stored offset from before this field reads as
    leader_epoch: int = -1


class OffsetCommitRequest(Wire):
    offsets: list[PartitionOffset]
    member_id: str | None = None
    generation: int = -1  # -1: no group membership (simple consumer)


class OffsetFetchResponse(Wire):
    group: str
    offsets: list[PartitionOffset]


# ---- health --------------------------------------------------------------------------------


HealthStatus = Literal["ok", "starting", "stopping"]


class Health(Wire):
    status: HealthStatus
    service: str
    version: str
    details: dict[str, Any] | None = None


# ---- broker data directory -----------------------------------------------------------------


class BrokerDataMeta(Wire):
    """``DATA/meta.json`` of a broker: which broker and cluster its data belongs to, so a
    data dir is never served under another broker id or reconciled against another
    cluster's coordinator (which would delete every partition in it)."""

    broker_id: BrokerId
    cluster_id: str | None = None


# ---- replication control (issue 4) ---------------------------------------------------------


class AlterIsrRequest(Wire):
    """A partition leader asks the coordinator to change the ISR (Kafka's AlterPartition).

    Rejected with STALE_EPOCH unless ``leader_epoch`` and ``partition_epoch`` are the
    coordinator's current ones, so a deposed leader cannot change anything."""

    broker_id: BrokerId
    topic: str
    partition: int
    leader_epoch: Epoch
    partition_epoch: int
    isr: list[BrokerId]


class AlterIsrResponse(Wire):
    assignment: ReplicaAssignment
    coordinator_epoch: int = 0  # as in HeartbeatResponse


CoordinatorRole = Literal["single", "active", "standby"]


class CoordinatorStatus(Wire):
    """``GET /v1/coordinator``, answered by every coordinator, active or not: which one is
    active. ``single``: one coordinator on SQLite. A standby names the active one's URL
    when it knows it (none during an election)."""

    role: CoordinatorRole
    epoch: int = 0  # the active coordinator's epoch as this one knows it
    url: str | None = None  # this coordinator's advertised URL
    active_url: str | None = None
    store: str = "sqlite"  # sqlite | etcd


class DecommissionResponse(Wire):
    """A draining broker's progress: ``done`` once it holds no replica (safe to stop)."""

    broker_id: BrokerId
    decommissioning: bool
    replica_count: int
    leader_count: int
    done: bool


class InitProducerIdRequest(Wire):
    """An idempotent producer asks for its id; with a previous id/epoch it bumps the epoch."""

    producer_id: int = -1
    producer_epoch: int = -1


class InitProducerIdResponse(Wire):
    producer_id: int
    producer_epoch: int


# ---- broker <-> broker replication (issue 4; internal routes) ------------------------------


class ReplicaFetchPartition(Wire):
    """One partition a follower fetches: from ``fetch_offset`` (its log end), reporting what
    it holds durably (the leader's high watermark builds on it)."""

    topic: str
    partition: int
    leader_epoch: Epoch  # the epoch the follower follows: fencing both ways
    fetch_offset: Offset
    durable_offset: Offset
    # Its log start offset (the leader answers DeleteRecords once every in-sync replica's
    # reached the asked offset); None from a broker older than that.
    log_start_offset: Offset | None = None


class ReplicaFetchRequest(Wire):
    broker_id: BrokerId
    partitions: list[ReplicaFetchPartition]
    max_wait_ms: int = 500
    partition_max_bytes: int = 1024 * 1024
    max_bytes: int = 8 * 1024 * 1024


class ReplicaFetchResult(Wire):
    """The header of one partition's answer; its ``size_bytes`` of batches follow in the body
    in the order of the results."""

    topic: str
    partition: int
    error: ErrorBody | None = None
    high_watermark: Offset = Offset(0)
    log_start_offset: Offset = Offset(0)
    log_end_offset: Offset = Offset(0)
    size_bytes: int = 0


class ReplicaFetchResponse(Wire):
    """Framed as: 4-byte big-endian length of this JSON, this JSON, the batches."""

    partitions: list[ReplicaFetchResult]


class EpochEndPartition(Wire):
    topic: str
    partition: int
    current_leader_epoch: Epoch  # fencing: the epoch the follower follows
    epoch: Epoch  # the follower's latest epoch: where does it end in the leader's log?


class EpochEndRequest(Wire):
    """Kafka's OffsetsForLeaderEpoch (KIP-101/279): what a follower of a new leader asks
    before fetching, to truncate any suffix the leader does not have."""

    broker_id: BrokerId
    partitions: list[EpochEndPartition]


class EpochEndResult(Wire):
    topic: str
    partition: int
    error: ErrorBody | None = None
    epoch: Epoch = Epoch(-1)  # the largest epoch <= the asked one in the leader's log; -1 none
    end_offset: Offset = Offset(-1)


class EpochEndResponse(Wire):
    partitions: list[EpochEndResult]


# ---- consumer groups (issue 5) -------------------------------------------------------------


class GroupPartition(Wire):
    topic: str
    partition: int


class GroupHeartbeatRequest(Wire):
    """Join (no ``member_id``), stay, or leave a group, reporting what the member owns:
    the partitions it consumes now (level-triggered, as Kafka's KIP-848 heartbeat)."""

    member_id: str | None = None
    # static membership (Kafka's group.instance.id, KIP-345): a member joining with the id
    # of a current member takes its place and its partitions, without a rebalance
    instance_id: str | None = None
    client_id: str = ""
    topics: list[str] = msgspec.field(default_factory=list)
    owned: list[GroupPartition] = msgspec.field(default_factory=list)
    session_timeout_ms: int = 10_000
    max_poll_interval_ms: int = 300_000
    poll_age_ms: int = 0  # how long ago the application last polled
    leave: bool = False


class GroupHeartbeatResponse(Wire):
    """``assigned``: consume these now; anything else the member owns it must stop
    consuming, commit and stop reporting (revocation); ``pending``: coming once their
    previous owner has released them."""

    member_id: str
    generation: int
    assigned: list[GroupPartition]
    pending: list[GroupPartition] = msgspec.field(default_factory=list)
    heartbeat_interval_ms: int = 1000


class GroupMemberDescription(Wire):
    member_id: str
    client_id: str
    topics: list[str]
    assigned: list[GroupPartition]
    revoking: list[GroupPartition] = msgspec.field(default_factory=list)
    pending: list[GroupPartition] = msgspec.field(default_factory=list)
    last_heartbeat_age_ms: int = 0
    host: str = ""  # the address the member's heartbeats come from
    instance_id: str | None = None  # a Kafka static member's group.instance.id


class GroupPartitionLag(Wire):
    topic: str
    partition: int
    member_id: str | None = None
    committed_offset: int | None = None
    high_watermark: int | None = None
    log_end_offset: int | None = None
    lag: int | None = None  # high watermark - committed offset (messages not yet consumed)


class GroupDescription(Wire):
    group: str
    state: Literal["empty", "stable", "rebalancing"]
    generation: int
    rebalances: int
    members: list[GroupMemberDescription]
    partitions: list[GroupPartitionLag]
    lag: int = 0
    # "conveyor": Conveyor's own protocol (its clients, and Kafka clients with
    # group.protocol=consumer, KIP-848); "classic": Kafka's JoinGroup/SyncGroup protocol
    protocol: str = "conveyor"


class GroupSummary(Wire):
    group: str
    state: Literal["empty", "stable", "rebalancing"]
    generation: int
    members: int
    lag: int = 0
    topics: list[str] = msgspec.field(default_factory=list)  # read by members or committed
    protocol: str = "conveyor"  # as GroupDescription.protocol


class GroupList(Wire):
    groups: list[GroupSummary]


class ResetOffsetsRequest(Wire):
    """Set a group's committed offsets (only while it has no members)."""

    offsets: list[PartitionOffset]
