"""The broker core's vocabulary: what a replica is, what happens to it, what to do about it.

The broker's replication rules are a pure state machine (``broker/core.py``, per replica
``broker/replica.py``), shaped like etcd-raft's: ``step(state, event, now_ms) -> (state,
effects)``. It does no I/O and reads no clock. **Events** say what happened (a produce was
appended up to an offset, a follower fetched at an offset and epoch, a flush completed, a
heartbeat answer brought a new assignment, time passed, a disk filled); **effects** say
what to do (append, truncate, fsync, send an AlterIsr, answer the produce waiters the
high watermark covers, fetch from a leader). The shell (``broker/driver.py``) performs the
effects with real storage and HTTP, and the simulation (``tests/sim``) performs them with
an in-memory log and network, so both run the very same rules.

Messages to other processes are the wire types of ``messages.py`` (an AlterIsrRequest, a
ReplicaFetchRequest, ...) addressed to a broker id or the coordinator, never URLs: which
transport carries them (HTTP today, the Kafka protocol later) is the shell's business.

Every type here is an immutable ``msgspec.Struct`` (``frozen``): cheap to build and to
copy with one field changed (``msgspec.structs.replace``, ~0.3 us), which the hot produce
path does a few times per request.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Literal, NamedTuple

import msgspec

from conveyor.protocol.errors import ConveyorError
from conveyor.protocol.messages import (
    AlterIsrRequest,
    BrokerId,
    Epoch,
    EpochEndRequest,
    EpochEndResponse,
    ErrorBody,
    HeartbeatResponse,
    Offset,
    ReplicaAssignment,
    ReplicaFetchRequest,
    ReplicaFetchResponse,
)
from conveyor.protocol.topics import LogConfig

Role = Literal["leader", "follower"]
UNKNOWN_EPOCH = Epoch(-1)  # a reopened replica before the first heartbeat tells its epoch


class TopicPartition(NamedTuple):
    topic: str
    partition: int

    def __str__(self) -> str:
        return f"{self.topic}-{self.partition}"


class Value(msgspec.Struct, frozen=True, kw_only=True):
    """Base of the core's immutable values (state, events, effects)."""


# ---- what a replica is ----------------------------------------------------------------------


class ReplicaState(Value, frozen=True):
    """What a hosted replica is (or should be): role, epochs, peers and log settings,
    as the coordinator assigned them (``broker/reconcile.py`` derives it)."""

    role: Role
    leader_epoch: Epoch
    leader: BrokerId | None
    replicas: tuple[BrokerId, ...] = ()
    isr: tuple[BrokerId, ...] = ()
    min_insync_replicas: int = 1
    log_config: LogConfig = msgspec.field(default_factory=LogConfig)
    partition_epoch: int = 0  # AlterIsr quotes it: the coordinator fences stale ISR changes


class LogFacts(Value, frozen=True):
    """What the core needs to know of a replica's log, as the shell last read it after a
    storage operation (the log is the truth; this is its summary)."""

    log_start_offset: Offset = Offset(0)
    log_end_offset: Offset = Offset(0)
    durable_offset: Offset = Offset(0)  # below it, durable per the flush policy
    latest_epoch: Epoch = Epoch(-1)  # the newest leader epoch in the log's epoch cache


class ProducerBatch(msgspec.Struct, frozen=True):
    """One batch an idempotent producer wrote: its sequence range and where it landed."""

    first_sequence: int
    last_sequence: int
    base_offset: Offset
    last_offset: Offset


class ProducerEntry(msgspec.Struct, frozen=True):
    """Per partition, per producer id: its epoch and its last few batches (oldest first)."""

    producer_epoch: int
    batches: tuple[ProducerBatch, ...] = ()


Producers = Mapping[int, ProducerEntry]


class ProducerWrite(Value, frozen=True):
    """The idempotence fields of a batch a leader appended (from its header)."""

    producer_id: int
    producer_epoch: int
    first_sequence: int
    last_sequence: int


# ---- events: what happened ------------------------------------------------------------------


class Tick(Value, frozen=True):
    """Time passed (the shell ticks when the core asked it to, see ScheduleTick)."""


class HeartbeatAnswered(Value, frozen=True):
    """The coordinator's whole desired state for this broker (cluster id already checked)."""

    response: HeartbeatResponse


class Opened(Value, frozen=True):
    tp: TopicPartition
    state: ReplicaState
    log: LogFacts
    producers: Producers


class OpenFailed(Value, frozen=True):
    tp: TopicPartition
    reason: str


class LogChanged(Value, frozen=True):
    """The log changed under a storage effect: truncated, reset, reconfigured (with
    ``log_config``) or shortened by retention. ``producers`` rebuilt from it, when it was."""

    tp: TopicPartition
    log: LogFacts
    producers: Producers | None = None
    log_config: LogConfig | None = None


class LeaderAppended(Value, frozen=True):
    """A produce was appended (``base_offset``..``last_offset``). ``ack_id`` set: an
    acks=all produce waits for the high watermark to cover it, until ``deadline_ms``."""

    tp: TopicPartition
    log: LogFacts
    base_offset: Offset
    last_offset: Offset
    producer: ProducerWrite | None = None
    ack_id: int | None = None
    deadline_ms: int = 0


class RetryArrived(Value, frozen=True):
    """An idempotent producer's retry of a batch already in the log (``last_offset`` its
    last offset): not written again, but an acks=all answer still waits for the high
    watermark to cover it, as the original's did."""

    tp: TopicPartition
    last_offset: Offset
    ack_id: int
    deadline_ms: int


class FollowerAppended(Value, frozen=True):
    """Replicated bytes (``data``, whole batches from the leader) were appended."""

    tp: TopicPartition
    log: LogFacts
    data: bytes | memoryview


class AppendFailed(Value, frozen=True):
    tp: TopicPartition
    error: ConveyorError
    disk_full: bool = False


class Flushed(Value, frozen=True):
    """Everything below ``durable_offset`` is durable (a flush round completed)."""

    tp: TopicPartition
    durable_offset: Offset


class LogFailed(Value, frozen=True):
    """The log can no longer take writes (an fsync failed): read-only until a restart."""

    tp: TopicPartition
    error: ConveyorError


class DiskSpace(Value, frozen=True):
    tp: TopicPartition
    free_bytes: int


class AlterIsrAnswered(Value, frozen=True):
    """The coordinator's answer to ``request``: the new assignment, or an error code
    (``NETWORK_ERROR`` when no answer came)."""

    tp: TopicPartition
    request: AlterIsrRequest
    assignment: ReplicaAssignment | None = None
    error_code: str | None = None
    message: str = ""


class ReplicaFetchArrived(Value, frozen=True):
    """A follower's fetch (the leader side); answered by AnswerReplicaFetch(fetch_id)."""

    fetch_id: int
    request: ReplicaFetchRequest


class ReplicaFetchAnswered(Value, frozen=True):
    """A leader's answer to our ``request`` (the follower side), with each partition's
    batches. ``draw`` in [0, 1) is the jitter of a backoff, if one follows."""

    leader: BrokerId
    request: ReplicaFetchRequest
    response: ReplicaFetchResponse
    chunks: tuple[bytes | memoryview, ...]
    draw: float = 0.5


class EpochEndAnswered(Value, frozen=True):
    """A leader's answer to our OffsetsForLeaderEpoch ``request``. ``own_end_offsets[i]``
    is where the epoch the leader answered for partition i ends in *our* log (our log
    start when we have none of it), read by the shell for the core."""

    leader: BrokerId
    request: EpochEndRequest
    response: EpochEndResponse
    own_end_offsets: tuple[int, ...]


class PeerUnreachable(Value, frozen=True):
    """A request to ``leader`` failed (network, timeout, an answer we cannot read)."""

    leader: BrokerId
    request: ReplicaFetchRequest | EpochEndRequest
    reason: str
    draw: float = 0.5


class DeleteRecordsArrived(Value, frozen=True):
    """A request to delete the records below ``offset`` (-1: the high watermark; Kafka's
    DeleteRecords) on the leader; answered by AnswerDeleteRecords(``trim_id``) once every
    in-sync replica's log starts there, or at ``deadline_ms``."""

    tp: TopicPartition
    offset: int
    trim_id: int
    deadline_ms: int


class AdvanceFailed(Value, frozen=True):
    """An AdvanceLogStart could not be performed (the log start checkpoint could not be
    written: nothing changed)."""

    tp: TopicPartition
    error: ConveyorError


class ShuttingDown(Value, frozen=True):
    """Answer what waits (long-polls return what they have) and send nothing more."""


Event = (
    Tick
    | HeartbeatAnswered
    | Opened
    | OpenFailed
    | LogChanged
    | LeaderAppended
    | RetryArrived
    | FollowerAppended
    | AppendFailed
    | Flushed
    | LogFailed
    | DiskSpace
    | AlterIsrAnswered
    | ReplicaFetchArrived
    | ReplicaFetchAnswered
    | EpochEndAnswered
    | PeerUnreachable
    | DeleteRecordsArrived
    | AdvanceFailed
    | ShuttingDown
)


# ---- effects: what to do --------------------------------------------------------------------


class OpenLog(Value, frozen=True):
    tp: TopicPartition
    state: ReplicaState
    reason: str


class ReconfigureLog(Value, frozen=True):
    """Apply a topic config change to the open log (no reopen, no pause); LogChanged."""

    tp: TopicPartition
    log_config: LogConfig
    reason: str


class DeleteLog(Value, frozen=True):
    tp: TopicPartition
    reason: str


class AssignEpoch(Value, frozen=True):
    """A new leader records where its epoch starts (its log end), before any follower
    asks (KIP-101)."""

    tp: TopicPartition
    epoch: Epoch


class TruncateTo(Value, frozen=True):
    """Remove everything from ``offset`` on (a suffix the leader does not have)."""

    tp: TopicPartition
    offset: Offset
    reason: str


class ResetTo(Value, frozen=True):
    """Empty the log and restart it at ``offset`` (the leader deleted what we lack)."""

    tp: TopicPartition
    offset: Offset
    reason: str


class AdvanceLogStart(Value, frozen=True):
    """Delete the records below ``offset``: the log start moves there (a leader asked by
    DeleteRecords, a follower following its leader's start); LogChanged or
    AdvanceFailed."""

    tp: TopicPartition
    offset: Offset
    reason: str


class AppendReplicated(Value, frozen=True):
    tp: TopicPartition
    data: bytes | memoryview


class RequestDurable(Value, frozen=True):
    """Make everything up to ``offset`` durable (a group-commit fsync); report Flushed."""

    tp: TopicPartition
    offset: Offset


class ProbeDisk(Value, frozen=True):
    """Measure the free space of the replica's filesystem; report DiskSpace."""

    tp: TopicPartition


class SendAlterIsr(Value, frozen=True):
    """To the coordinator; its answer comes back as AlterIsrAnswered."""

    tp: TopicPartition
    request: AlterIsrRequest


class SendReplicaFetch(Value, frozen=True):
    leader: BrokerId
    request: ReplicaFetchRequest


class SendEpochEnd(Value, frozen=True):
    leader: BrokerId
    request: EpochEndRequest


class ReplicaRead(Value, frozen=True):
    """One partition of a replica fetch answer: batches from ``fetch_offset`` up to the
    log end (followers copy what consumers cannot see yet)."""

    topic: str
    partition: int
    fetch_offset: Offset
    high_watermark: Offset


class AnswerReplicaFetch(Value, frozen=True):
    """Answer a follower's fetch: per asked partition, what to read or why not."""

    fetch_id: int
    reads: tuple[ReplicaRead | ErrorBody, ...]


class AnswerProduce(Value, frozen=True):
    """An acks=all produce is acknowledged (``error`` None) or failed."""

    ack_id: int
    error: ConveyorError | None = None


class AnswerDeleteRecords(Value, frozen=True):
    """A DeleteRecords is answered: every in-sync replica starts at ``low_watermark`` or
    beyond (``error`` None), or it failed."""

    trim_id: int
    low_watermark: int = -1
    error: ConveyorError | None = None


class Wake(Value, frozen=True):
    """Consumers' long-polls of ``tp`` look again (the high watermark or the role moved)."""

    tp: TopicPartition


class IsrChanged(Value, frozen=True):
    tp: TopicPartition
    before: tuple[BrokerId, ...]
    after: tuple[BrokerId, ...]
    partition_epoch: int


class ScheduleTick(Value, frozen=True):
    """Step a Tick at ``at_ms`` (or soon after): a deadline the core is waiting for."""

    at_ms: int


class Note(Value, frozen=True):
    """A decision worth a log line, with its reason (the shell logs it)."""

    level: Literal["debug", "info", "warning", "error"]
    message: str


Effect = (
    OpenLog
    | ReconfigureLog
    | DeleteLog
    | AssignEpoch
    | TruncateTo
    | ResetTo
    | AdvanceLogStart
    | AppendReplicated
    | RequestDurable
    | ProbeDisk
    | SendAlterIsr
    | SendReplicaFetch
    | SendEpochEnd
    | AnswerReplicaFetch
    | AnswerProduce
    | AnswerDeleteRecords
    | Wake
    | IsrChanged
    | ScheduleTick
    | Note
)

__all__ = [
    "UNKNOWN_EPOCH",
    "AdvanceFailed",
    "AdvanceLogStart",
    "AlterIsrAnswered",
    "AnswerDeleteRecords",
    "AnswerProduce",
    "AnswerReplicaFetch",
    "AppendFailed",
    "AppendReplicated",
    "AssignEpoch",
    "DeleteLog",
    "DeleteRecordsArrived",
    "DiskSpace",
    "Effect",
    "Epoch",
    "EpochEndAnswered",
    "Event",
    "Flushed",
    "FollowerAppended",
    "HeartbeatAnswered",
    "IsrChanged",
    "LeaderAppended",
    "LogChanged",
    "LogFacts",
    "LogFailed",
    "Note",
    "OpenFailed",
    "OpenLog",
    "Opened",
    "PeerUnreachable",
    "ProbeDisk",
    "ProducerBatch",
    "ProducerEntry",
    "ProducerWrite",
    "Producers",
    "ReconfigureLog",
    "ReplicaFetchAnswered",
    "ReplicaFetchArrived",
    "ReplicaRead",
    "ReplicaState",
    "RequestDurable",
    "ResetTo",
    "RetryArrived",
    "Role",
    "ScheduleTick",
    "SendAlterIsr",
    "SendEpochEnd",
    "SendReplicaFetch",
    "ShuttingDown",
    "Tick",
    "TopicPartition",
    "TruncateTo",
    "Value",
    "Wake",
]
