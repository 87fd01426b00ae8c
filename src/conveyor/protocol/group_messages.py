"""The consumer-group messages of the Kafka adapter: what a broker's Kafka listener sends
the coordinator over its internal routes (``/internal/v1/kafka/groups/...``) and gets back.

Kafka requests arrive at brokers (clients connect to brokers); group state lives in the
coordinator, with Conveyor's own groups. The broker decodes the Kafka request, forwards
it as one of these (JSON, the cluster's identity), and encodes the answer in the
request's Kafka version. Opaque bytes (protocol metadata, assignments) travel as base64.
``error`` fields carry :class:`~conveyor.protocol.errors.ErrorCode` names (the broker maps
them onto Kafka's codes with ``protocol/kafka/errors.kafka_error``); a refusal of the
whole request is an ordinary HTTP error body instead.

Rules as in ``messages.py``: new fields optional with defaults, unknown fields ignored.
"""

from __future__ import annotations

import msgspec

from conveyor.protocol.messages import PartitionOffset, Wire

# ---- the classic protocol: JoinGroup, SyncGroup, Heartbeat, LeaveGroup ----------------------


class ClassicProtocol(Wire):
    name: str
    metadata: bytes = b""


class ClassicJoinRequest(Wire):
    protocol_type: str
    protocols: list[ClassicProtocol]
    session_timeout_ms: int
    rebalance_timeout_ms: int
    member_id: str = ""
    instance_id: str | None = None
    client_id: str = ""
    client_host: str = ""
    require_member_id: bool = True  # JoinGroup v4+ (KIP-394)


class ClassicJoinedMember(Wire):
    member_id: str
    instance_id: str | None = None
    metadata: bytes = b""


class ClassicJoinResponse(Wire):
    member_id: str = ""
    error: str | None = None
    generation: int = -1
    protocol_type: str | None = None
    protocol_name: str | None = None
    leader_id: str = ""
    members: list[ClassicJoinedMember] = msgspec.field(default_factory=list)
    skip_assignment: bool = False


class ClassicAssignment(Wire):
    member_id: str
    assignment: bytes = b""


class ClassicSyncRequest(Wire):
    member_id: str
    generation: int
    instance_id: str | None = None
    protocol_type: str | None = None
    protocol_name: str | None = None
    assignments: list[ClassicAssignment] = msgspec.field(default_factory=list)


class ClassicSyncResponse(Wire):
    error: str | None = None
    protocol_type: str | None = None
    protocol_name: str | None = None
    assignment: bytes = b""


class ClassicHeartbeatRequest(Wire):
    member_id: str
    generation: int
    instance_id: str | None = None


class GroupResult(Wire):
    """An answer that is only an error code (None: done)."""

    error: str | None = None


class ClassicLeaving(Wire):
    member_id: str = ""
    instance_id: str | None = None


class ClassicLeaveRequest(Wire):
    members: list[ClassicLeaving]


class ClassicLeft(Wire):
    member_id: str
    instance_id: str | None = None
    error: str | None = None


class ClassicLeaveResponse(Wire):
    error: str | None = None  # the group's (unknown group)
    members: list[ClassicLeft] = msgspec.field(default_factory=list)


# ---- offsets ---------------------------------------------------------------------------------


class KafkaCommitRequest(Wire):
    """OffsetCommit: ``generation`` is the classic generation or the KIP-848 member epoch
    (-1: a commit outside group management, allowed while the group has no members)."""

    offsets: list[PartitionOffset]
    member_id: str = ""
    instance_id: str | None = None
    generation: int = -1
    api_version: int = 0  # the Kafka request's (v9+: GROUP_ID_NOT_FOUND for an unknown group)


class PartitionResult(Wire):
    topic: str
    partition: int
    error: str | None = None


class KafkaCommitResponse(Wire):
    partitions: list[PartitionResult]


class OffsetFetchGroup(Wire):
    group: str
    partitions: list[PartitionOffset] | None = None  # offsets ignored; None: every one
    member_id: str | None = None  # KIP-848 members (v9+)
    member_epoch: int = -1


class KafkaOffsetFetchRequest(Wire):
    groups: list[OffsetFetchGroup]
    # KIP-447 (v7+): a partition whose offset an open transaction holds answers
    # UNSTABLE_OFFSET_COMMIT (the client retries) instead of the older committed offset
    require_stable: bool = False


class FetchedOffset(Wire):
    topic: str
    partition: int
    offset: int = -1  # -1: nothing committed
    metadata: str | None = None
    error: str | None = None
    leader_epoch: int = -1  # the committed leader epoch (-1: none)


class FetchedGroup(Wire):
    group: str
    error: str | None = None
    partitions: list[FetchedOffset] = msgspec.field(default_factory=list)


class KafkaOffsetFetchResponse(Wire):
    groups: list[FetchedGroup]


class OffsetDeleteRequest(Wire):
    partitions: list[PartitionOffset]  # offsets ignored


class OffsetDeleteResponse(Wire):
    error: str | None = None
    partitions: list[PartitionResult] = msgspec.field(default_factory=list)


# ---- administration: ListGroups, DescribeGroups, DeleteGroups --------------------------------


class KafkaListGroupsRequest(Wire):
    states: list[str] = msgspec.field(default_factory=list)  # empty: every state
    types: list[str] = msgspec.field(default_factory=list)  # "classic", "consumer"; empty: both


class KafkaGroupListing(Wire):
    group: str
    protocol_type: str  # "consumer", or "" for a group that only has committed offsets
    state: str  # Kafka's state name (Empty, Stable, PreparingRebalance, ...)
    group_type: str  # "classic" or "consumer" (Conveyor's own groups and KIP-848 members)


class KafkaGroupList(Wire):
    groups: list[KafkaGroupListing]


class KafkaGroupsRequest(Wire):
    groups: list[str]


class KafkaGroupMember(Wire):
    member_id: str
    instance_id: str | None = None
    client_id: str = ""
    client_host: str = ""
    metadata: bytes = b""  # the chosen protocol's (a consumer's subscription)
    assignment: bytes = b""


class KafkaGroupDescription(Wire):
    group: str
    error: str | None = None
    state: str = "Dead"
    protocol_type: str = ""
    protocol_name: str = ""
    members: list[KafkaGroupMember] = msgspec.field(default_factory=list)


class KafkaGroupDescriptions(Wire):
    groups: list[KafkaGroupDescription]


class GroupDeletion(Wire):
    group: str
    error: str | None = None


class KafkaGroupDeletions(Wire):
    groups: list[GroupDeletion]


# ---- KIP-848: ConsumerGroupHeartbeat, ConsumerGroupDescribe ----------------------------------


class TopicIdPartitions(Wire):
    topic_id: str  # Kafka's topic id (a UUID; coordinator/views.topic_id)
    partitions: list[int]
    topic: str = ""  # the name, in descriptions


class ConsumerHeartbeatRequest(Wire):
    """Null fields mean "unchanged since the last heartbeat" (Kafka's rule)."""

    member_id: str
    member_epoch: int
    instance_id: str | None = None
    rack_id: str | None = None
    rebalance_timeout_ms: int = -1
    subscribed_topic_names: list[str] | None = None
    subscribed_topic_regex: str | None = None
    server_assignor: str | None = None
    owned: list[TopicIdPartitions] | None = None
    client_id: str = ""
    client_host: str = ""


class ConsumerHeartbeatResponse(Wire):
    error: str | None = None
    message: str | None = None
    member_id: str | None = None
    member_epoch: int = -1
    heartbeat_interval_ms: int = 1000
    assignment: list[TopicIdPartitions] | None = None  # None: unchanged


class ConsumerGroupMember(Wire):
    member_id: str
    member_epoch: int
    client_id: str = ""
    client_host: str = ""
    instance_id: str | None = None
    rack_id: str | None = None
    subscribed_topic_names: list[str] = msgspec.field(default_factory=list)
    subscribed_topic_regex: str | None = None
    assignment: list[TopicIdPartitions] = msgspec.field(default_factory=list)
    target_assignment: list[TopicIdPartitions] = msgspec.field(default_factory=list)


class ConsumerGroupDescription(Wire):
    group: str
    error: str | None = None
    state: str = "Dead"  # Kafka's: Empty, Assigning, Reconciling, Stable, Dead
    group_epoch: int = 0
    assignment_epoch: int = 0
    assignor_name: str = "uniform"
    members: list[ConsumerGroupMember] = msgspec.field(default_factory=list)


class ConsumerGroupDescriptions(Wire):
    groups: list[ConsumerGroupDescription]
