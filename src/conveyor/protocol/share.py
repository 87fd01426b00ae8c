"""Share groups (queues, issue 23): the wire types, one place.

A *share group* reads a topic with any number of members; each record is *acquired* by
one member under a lock, then acknowledged (``accept``), given back (``release``) or given
up (``reject``). The state of one (group, topic, partition), a *share-partition*, lives on
the partition's leader and is persisted as records in the internal topic
``__share_state`` (docs/queues.md). Three families of types:

* the group's settings (:class:`ShareGroupConfig`), kept by the coordinator;
* requests and answers between members, brokers and the coordinator (JSON);
* the records a share-partition's state is rebuilt from (msgpack, :func:`encode_state`):
  a :class:`StateSnapshot` of the whole state, :class:`StateDelta` records of the
  operations since, and :class:`StateFence` records that fence a deposed leader.
"""

from __future__ import annotations

from typing import Final, Literal

import msgspec

from conveyor.protocol.errors import ErrorCode, InvalidRequestError
from conveyor.protocol.messages import Encoding, SharePartitionStats, Wire

ShareMode = Literal["unordered", "key_ordered"]
StartFrom = Literal["earliest", "latest"]
AckType = Literal["accept", "release", "reject"]

STATE_TOPIC: Final = "__share_state"
# Headers a dead-lettered record carries (besides its own), named in docs/queues.md.
DLQ_HEADER_TOPIC: Final = "conveyor-dlq-topic"
DLQ_HEADER_PARTITION: Final = "conveyor-dlq-partition"
DLQ_HEADER_OFFSET: Final = "conveyor-dlq-offset"
DLQ_HEADER_DELIVERY_COUNT: Final = "conveyor-dlq-delivery-count"
DLQ_HEADER_ERROR: Final = "conveyor-dlq-error"
DLQ_HEADER_GROUP: Final = "conveyor-dlq-group"
DLQ_HEADERS: Final = frozenset(
    (
        DLQ_HEADER_TOPIC,
        DLQ_HEADER_PARTITION,
        DLQ_HEADER_OFFSET,
        DLQ_HEADER_DELIVERY_COUNT,
        DLQ_HEADER_ERROR,
        DLQ_HEADER_GROUP,
    )
)
# A produced record with this header (decimal milliseconds since the epoch, UTF-8) is not
# delivered to share groups before that time (delayed delivery).
NOT_BEFORE_HEADER: Final = "conveyor-not-before-ms"

LOCK_DURATION_MS_MIN: Final = 1_000
LOCK_DURATION_MS_MAX: Final = 3_600_000
DELIVERY_ATTEMPTS_MAX: Final = 100
WINDOW_RECORDS_MIN: Final = 100
WINDOW_RECORDS_MAX: Final = 1_000_000
BACKOFF_MS_MAX: Final = 24 * 3600 * 1000
RECEIVE_RECORDS_MAX: Final = 10_000
REASON_CHARS_MAX: Final = 1_000
ACKS_PER_REQUEST_MAX: Final = 10_000


class ShareGroupConfig(Wire, forbid_unknown_fields=True):
    """A share group's settings (docs/queues.md#settings), chosen when the group is created
    (by its first member or ``conveyor queue configure``)."""

    mode: ShareMode = "unordered"
    lock_duration_ms: int = 30_000
    max_delivery_attempts: int = 5
    dead_letter_topic: str = ""  # "": <group>.dead-letters
    window_records_max: int = 10_000  # records between the start offset and the read end
    retry_backoff_ms: int = 0  # a released record waits this * 2^(deliveries-1) ...
    retry_backoff_max_ms: int = 60_000  # ... at most this (0 above: no backoff)
    start_from: StartFrom = "earliest"  # where a new share-partition starts


def validate_config(config: ShareGroupConfig) -> None:
    """Raise INVALID_CONFIG naming the first setting out of range; nothing is changed."""

    def bad(message: str) -> InvalidRequestError:
        return InvalidRequestError(message, code=ErrorCode.INVALID_CONFIG)

    if config.mode not in ("unordered", "key_ordered"):
        raise bad(f"mode must be 'unordered' or 'key_ordered', not {config.mode!r}")
    if not LOCK_DURATION_MS_MIN <= config.lock_duration_ms <= LOCK_DURATION_MS_MAX:
        raise bad(f"lock_duration_ms must be in {LOCK_DURATION_MS_MIN}..{LOCK_DURATION_MS_MAX}")
    if not 1 <= config.max_delivery_attempts <= DELIVERY_ATTEMPTS_MAX:
        raise bad(f"max_delivery_attempts must be in 1..{DELIVERY_ATTEMPTS_MAX}")
    if not WINDOW_RECORDS_MIN <= config.window_records_max <= WINDOW_RECORDS_MAX:
        raise bad(f"window_records_max must be in {WINDOW_RECORDS_MIN}..{WINDOW_RECORDS_MAX}")
    if not 0 <= config.retry_backoff_ms <= config.retry_backoff_max_ms <= BACKOFF_MS_MAX:
        raise bad(f"need 0 <= retry_backoff_ms <= retry_backoff_max_ms <= {BACKOFF_MS_MAX}")
    if config.start_from not in ("earliest", "latest"):
        raise bad("start_from must be 'earliest' or 'latest'")


def dead_letter_topic(group: str, config: ShareGroupConfig) -> str:
    return config.dead_letter_topic or f"{group}.dead-letters"


# ---- membership (coordinator) --------------------------------------------------------------


class SharePartitionRef(Wire):
    topic: str
    partition: int


class ShareGroupHeartbeatRequest(Wire):
    """Join (no ``member_id``), stay, or leave a share group. ``config`` is what the member
    asks for: it creates the group when new, and must agree with an existing group's
    ``mode`` when given (other settings of an existing group are kept)."""

    member_id: str | None = None
    client_id: str = ""
    topics: list[str] = msgspec.field(default_factory=list)
    mode: ShareMode | None = None
    config: ShareGroupConfig | None = None
    session_timeout_ms: int = 30_000
    leave: bool = False


class ShareGroupHeartbeatResponse(Wire):
    member_id: str
    epoch: int  # the group's assignment epoch
    assigned: list[SharePartitionRef]
    config: ShareGroupConfig
    config_version: int = 1
    heartbeat_interval_ms: int = 1_000


class ShareGroupConfigRequest(Wire, forbid_unknown_fields=True):
    """``conveyor queue configure``: create a share group or change its settings."""

    config: ShareGroupConfig


class ShareGroupInfo(Wire):
    """A share group as the coordinator keeps it (durable), with its version."""

    group: str
    config: ShareGroupConfig
    version: int
    created_ms: int = 0


class ShareMemberDescription(Wire):
    member_id: str
    client_id: str
    host: str = ""
    topics: list[str] = msgspec.field(default_factory=list)
    assigned: list[SharePartitionRef] = msgspec.field(default_factory=list)
    last_heartbeat_age_ms: int = 0


class ShareGroupDescription(Wire):
    group: str
    config: ShareGroupConfig
    epoch: int
    members: list[ShareMemberDescription]
    partitions: list[SharePartitionStats]
    in_flight: int = 0
    available: int = 0
    archived: int = 0
    oldest_in_flight_age_ms: int | None = None
    dead_letter_topic: str = ""


class ShareGroupList(Wire):
    groups: list[ShareGroupDescription]


# ---- receive and acknowledge (broker) ------------------------------------------------------


class AckRange(Wire):
    """An acknowledgement of ``first_offset..last_offset`` (inclusive) of one partition.

    ``acquisition`` is the lock token's acquisition id (what makes an acknowledgement safe
    after a member change: a record re-acquired by someone else has another); None: any
    acquisition of the requesting member (the Kafka protocol's rule)."""

    partition: int
    first_offset: int
    last_offset: int
    type: AckType = "accept"
    acquisition: int | None = None
    delay_ms: int | None = None  # release only: not before now + delay
    reason: str | None = None  # reject or release: the error the dead-letter header names


class ReceiveRequest(Wire):
    """Acknowledge (first, in order) and then acquire records of a topic's partitions
    (``topic``: the route's; empty ``partitions``: every partition the broker leads)."""

    topic: str = ""
    partitions: list[int] = msgspec.field(default_factory=list)
    member_id: str = ""
    max_records: int = 500
    max_wait_ms: int = 0
    max_bytes: int = 4 * 1024 * 1024
    acknowledgements: list[AckRange] = msgspec.field(default_factory=list)
    config_version: int = 0  # the group config version the member knows


class AcquiredRange(Wire):
    first_offset: int
    last_offset: int
    delivery_count: int
    acquisition: int


class AckResult(Wire):
    partition: int
    first_offset: int
    last_offset: int
    error: str | None = None  # an ErrorCode name; None: done
    message: str | None = None


class ReceivedPartition(Wire):
    """One partition of a binary receive answer: its record batches follow the JSON
    header (in partition order, ``size_bytes`` each); only the offsets in ``acquired`` are
    the member's, other records of those batches are to be skipped."""

    partition: int
    acquired: list[AcquiredRange] = msgspec.field(default_factory=list)
    size_bytes: int = 0
    error: str | None = None
    message: str | None = None
    leader_url: str | None = None
    lock_deadline_ms: int = 0


class ReceiveResponse(Wire):
    topic: str
    partitions: list[ReceivedPartition]
    acks: list[AckResult] = msgspec.field(default_factory=list)
    lock_duration_ms: int = 30_000


class ReceivedRecord(Wire):
    """A record of the JSON (REST) receive, with its lock token."""

    partition: int
    offset: int
    timestamp_ms: int
    key: str | None
    value: str | None
    lock_token: str
    delivery_count: int
    key_encoding: Encoding = "utf8"
    value_encoding: Encoding = "utf8"
    headers: dict[str, str] | None = None


class JsonReceiveRequest(Wire):
    max_records: int = 100
    max_wait_ms: int = 0
    member_id: str = ""
    partitions: list[int] | None = None  # None: every partition this broker leads


class JsonReceiveResponse(Wire):
    topic: str
    records: list[ReceivedRecord]
    lock_duration_ms: int
    errors: list[ReceivedPartition] = msgspec.field(default_factory=list)


class TokenAck(Wire):
    lock_token: str
    type: AckType = "accept"
    delay_ms: int | None = None
    reason: str | None = None


class JsonAckRequest(Wire):
    acknowledgements: list[TokenAck]


class JsonAckResult(Wire):
    lock_token: str
    error: str | None = None
    message: str | None = None


class JsonAckResponse(Wire):
    results: list[JsonAckResult]


def lock_token(topic: str, partition: int, offset: int, acquisition: int) -> str:
    """``topic:partition:offset:acquisition`` (a topic name never holds ':')."""
    return f"{topic}:{partition}:{offset}:{acquisition}"


def parse_lock_token(token: str) -> tuple[str, int, int, int]:
    """(topic, partition, offset, acquisition); INVALID_REQUEST for anything else."""
    parts = token.split(":")
    if len(parts) != 4 or not all(p.isascii() and p.isdigit() for p in parts[1:]):
        raise InvalidRequestError(f"malformed lock token {token[:100]!r}")
    topic, partition, offset, acquisition = parts
    if not topic or any(len(p) > 19 for p in parts[1:]):
        raise InvalidRequestError(f"malformed lock token {token[:100]!r}")
    return topic, int(partition), int(offset), int(acquisition)


# ---- persisted state (the __share_state topic) ---------------------------------------------
# Record key: share_key(group, topic, partition) + b"\x00" + slot. The value is one of
# the State* structs below, as msgpack. Ranges are [first, last] inclusive.

Range = tuple[int, int]


class OpAcquire(msgspec.Struct, tag="a", array_like=True):
    """Offsets in ``ranges`` acquired by ``acquisition`` (of ``member``) until
    ``deadline_ms``; each delivery count goes up by one."""

    acquisition: int
    member: str
    deadline_ms: int
    ranges: list[Range]


class OpSettle(msgspec.Struct, tag="s", array_like=True):
    """Accepted (``archived`` False) or given up without a dead-letter topic (True)."""

    ranges: list[Range]
    archived: bool = False


class OpRelease(msgspec.Struct, tag="r", array_like=True):
    """Back to available, not before ``not_before_ms`` (0: at once). ``uncount``: the
    release was not a failed attempt (a later record of a key whose earlier record
    failed), so the delivery count goes back down."""

    ranges: list[Range]
    not_before_ms: int = 0
    uncount: bool = False


class DeadLetterEntry(msgspec.Struct, array_like=True):
    offset: int
    delivery_count: int
    reason: str


class OpDeadLetter(msgspec.Struct, tag="d", array_like=True):
    """These offsets are being written to the dead-letter topic as one batch with
    sequence ``sequence`` of the share-partition's dead-letter producer."""

    sequence: int
    entries: list[DeadLetterEntry]


class OpDeadLettered(msgspec.Struct, tag="D", array_like=True):
    """The dead-letter batch ``sequence`` is written: its offsets are archived."""

    sequence: int


class OpProducer(msgspec.Struct, tag="p", array_like=True):
    """The idempotent producer identity the dead-letter writes use (so that a batch
    rewritten by a new leader is stored once)."""

    producer_id: int
    producer_epoch: int
    partition: int  # the dead-letter topic's partition this share-partition writes to


class OpSkip(msgspec.Struct, tag="k", array_like=True):
    """Everything below ``offset`` is gone from the log (retention): settled."""

    offset: int


Op = OpAcquire | OpSettle | OpRelease | OpDeadLetter | OpDeadLettered | OpProducer | OpSkip


class PendingDeadLetter(msgspec.Struct, array_like=True):
    sequence: int
    entries: list[DeadLetterEntry]


class StateRun(msgspec.Struct, array_like=True):
    """``first..last`` share a state, a delivery count and an acquisition (0: none)."""

    first: int
    last: int
    state: int
    delivery_count: int
    acquisition: int = 0


class StateAcquisition(msgspec.Struct, array_like=True):
    acquisition: int
    member: str
    deadline_ms: int


class StateSnapshot(msgspec.Struct, tag="snapshot"):
    """The whole state after delta ``seq`` (offsets below ``start_offset`` are settled;
    offsets not in ``runs`` at or above it are available, never delivered)."""

    seq: int
    epoch: int
    start_offset: int
    next_acquisition: int
    runs: list[StateRun] = msgspec.field(default_factory=list)
    acquisitions: list[StateAcquisition] = msgspec.field(default_factory=list)
    not_before: list[tuple[int, int]] = msgspec.field(default_factory=list)
    dead_letters: list[PendingDeadLetter] = msgspec.field(default_factory=list)
    producer: OpProducer | None = None
    dead_letter_sequence: int = 0
    initialized: bool = True


class StateDelta(msgspec.Struct, tag="delta"):
    seq: int
    epoch: int
    ops: list[Op]


class StateFence(msgspec.Struct, tag="fence"):
    """A new leader of the data partition (``epoch``) read the state: writers of older
    epochs are refused from here on."""

    epoch: int


StateRecord = StateSnapshot | StateDelta | StateFence

_encoder = msgspec.msgpack.Encoder()
_decoder = msgspec.msgpack.Decoder(StateRecord)


def encode_state(record: StateRecord) -> bytes:
    return _encoder.encode(record)


def decode_state(data: bytes) -> StateRecord:
    """Raises msgspec.DecodeError / ValidationError for bytes this code did not write."""
    return _decoder.decode(data)


def share_key(group: str, topic: str, partition: int, incarnation: int = 0) -> bytes:
    """The state records' key prefix (names never hold a newline). ``incarnation`` is the
    group's creation time: a group deleted and created again starts afresh."""
    return f"{group}\n{incarnation}\n{topic}\n{partition}".encode()


# ---- the state store's internal requests (leader of a data partition -> leader of a
# __share_state partition), msgpack bodies ---------------------------------------------------

STATE_CONTENT_TYPE: Final = "application/vnd.conveyor.share-state"


class StateEntry(msgspec.Struct, array_like=True):
    slot: bytes  # b"s" snapshot, b"f" fence, b"d<n>" delta slot n
    value: bytes  # encode_state(record)


class StateWriteRequest(msgspec.Struct):
    partition: int  # of __share_state
    key: bytes  # share_key(...)
    epoch: int  # the writer's leader epoch of the data partition
    entries: list[StateEntry]


class StateReadRequest(msgspec.Struct):
    partition: int
    key: bytes
    epoch: int


class StateReadResponse(msgspec.Struct):
    values: list[bytes]  # the latest snapshot and the deltas since, in log order


_wire_encoder = msgspec.msgpack.Encoder()


def encode_wire(message: StateWriteRequest | StateReadRequest | StateReadResponse) -> bytes:
    return _wire_encoder.encode(message)
