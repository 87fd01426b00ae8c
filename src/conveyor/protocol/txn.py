"""Transactions (issue 21, docs/transactions.md): the wire types of the internal routes
between brokers and the coordinator, and transaction markers (control batches).

Brokers forward Kafka's transaction APIs to the coordinator (``/internal/v1/kafka/txn/...``,
``coordinator/txn_http.py``); the coordinator writes markers through each partition
leader's ``/internal/v1/txn/markers`` (``broker/http.py``). Errors travel as ``ErrorCode``
names (None: success), as the group routes' answers do.

A **marker** is Kafka's control batch, byte for byte (``EndTransactionMarker``)::

    batch header   attributes = 0x30 (transactional | control), the producer's id and
                   epoch, base_sequence -1, one record
    record key     int16 version (0), int16 type (0 ABORT, 1 COMMIT)
    record value   int16 version (0), int32 coordinator epoch

so every Kafka client recognises it (and skips it), and the broker rebuilds a partition's
transaction state from the log alone (``storage/txnindex.py``).
"""

from __future__ import annotations

import enum
import struct
from collections.abc import Iterable
from typing import Final

import msgspec

from conveyor.protocol.batch import (
    CONTROL_BIT,
    CRC_START,
    HEADER_SIZE,
    HEADER_STRUCT,
    LOG_OVERHEAD,
    MAGIC,
    TRANSACTIONAL_BIT,
    crc32c,
    parse_header,
    peek_length,
)
from conveyor.protocol.errors import InvalidRequestError
from conveyor.protocol.messages import PartitionOffset

ABORT: Final = 0
COMMIT: Final = 1
# one record: length, attributes, timestamp delta, offset delta, key (4 bytes), value (6)
_RECORD: Final = struct.Struct(">bbbbbhhbhib")
_KEY: Final = struct.Struct(">hh")
_CRC: Final = struct.Struct(">I")
# a marker's record, past the batch header: length(1) attributes(1) ts(1) offset(1) klen(1)
_KEY_POSITION: Final = HEADER_SIZE + 5


def marker_batch(
    producer_id: int, producer_epoch: int, commit: bool, coordinator_epoch: int, timestamp_ms: int
) -> bytes:
    """A COMMIT or ABORT marker for one partition (offsets are the broker's to set)."""
    record = _RECORD.pack(
        32,  # zig-zag varint 16: the record's size after this byte
        0,  # attributes
        0,  # timestamp delta
        0,  # offset delta
        8,  # zig-zag varint 4: key length
        0,  # key version
        COMMIT if commit else ABORT,
        12,  # zig-zag varint 6: value length
        0,  # value version
        coordinator_epoch,
        0,  # no headers
    )
    out = bytearray(HEADER_SIZE)
    HEADER_STRUCT.pack_into(
        out,
        0,
        0,
        HEADER_SIZE - LOG_OVERHEAD + len(record),
        -1,
        MAGIC,
        0,
        TRANSACTIONAL_BIT | CONTROL_BIT,
        0,
        timestamp_ms,
        timestamp_ms,
        producer_id,
        producer_epoch,
        -1,
        1,
    )
    out += record
    _CRC.pack_into(out, CRC_START - _CRC.size, crc32c(memoryview(out)[CRC_START:]))
    return bytes(out)


def marker_type(batch: bytes | bytearray | memoryview, position: int = 0) -> int | None:
    """ABORT or COMMIT for the control batch at ``position`` (already validated), None
    when its first record is not a transaction marker (another control type)."""
    if len(batch) - position < _KEY_POSITION + _KEY.size:
        return None
    version, kind = _KEY.unpack_from(batch, position + _KEY_POSITION)
    if version != 0 or kind not in (ABORT, COMMIT):
        return None
    return int(kind)


# ---- the coordinator's internal routes -------------------------------------------------------

# Where the routes are: the coordinator serves them (``coordinator/txn_http.py``), a
# broker's Kafka listener (``broker/coordinator_txn.py``) and Conveyor's transactional
# producer (``client/transactions.py``) call them, all by these names.
INTERNAL_PREFIX: Final = "/internal/v1/kafka/txn"
PUBLIC_PREFIX: Final = "/v1/transactions"
MARKERS_PATH: Final = "/internal/v1/txn/markers"  # on a partition leader (broker/txn_markers.py)


class TxnRoute(enum.StrEnum):
    """Each operation's path under ``INTERNAL_PREFIX``; all but DESCRIBE and VERIFY are
    under ``PUBLIC_PREFIX`` as well (``PUBLIC_ROUTES``)."""

    INIT = "init"
    ADD_PARTITIONS = "add-partitions"
    ADD_OFFSETS = "add-offsets"
    OFFSET_COMMIT = "offset-commit"
    END = "end"
    DESCRIBE = "describe"
    VERIFY = "verify"  # a partition leader's KIP-890 check (broker/txn_verify.py)


PUBLIC_ROUTES: Final = frozenset(TxnRoute) - {TxnRoute.DESCRIBE, TxnRoute.VERIFY}


class TxnPartition(msgspec.Struct, frozen=True):
    topic: str
    partition: int


class TxnPartitionResult(msgspec.Struct, frozen=True):
    topic: str
    partition: int
    error: str | None = None


class TxnInitRequest(msgspec.Struct, frozen=True):
    """InitProducerId with a transactional id (KIP-98; KIP-360's producer id/epoch)."""

    transactional_id: str
    transaction_timeout_ms: int
    producer_id: int = -1
    producer_epoch: int = -1


class TxnInitResponse(msgspec.Struct, frozen=True):
    error: str | None = None
    producer_id: int = -1
    producer_epoch: int = -1


class TxnProducer(msgspec.Struct, frozen=True):
    """Who asks: a transactional id and the producer id and epoch it was given."""

    transactional_id: str
    producer_id: int
    producer_epoch: int


class TxnAddPartitionsRequest(msgspec.Struct, frozen=True):
    producer: TxnProducer
    partitions: list[TxnPartition]


class TxnAddPartitionsResponse(msgspec.Struct, frozen=True):
    partitions: list[TxnPartitionResult]


class TxnAddOffsetsRequest(msgspec.Struct, frozen=True):
    producer: TxnProducer
    group: str


class TxnEndRequest(msgspec.Struct, frozen=True):
    producer: TxnProducer
    commit: bool


class TxnResult(msgspec.Struct, frozen=True):
    error: str | None = None


class TxnOffsetCommitRequest(msgspec.Struct, frozen=True):
    """TxnOffsetCommit: offsets that become the group's when the transaction commits;
    KIP-447's member fields fence a zombie by its group generation."""

    producer: TxnProducer
    group: str
    offsets: list[PartitionOffset]
    member_id: str = ""
    generation: int = -1
    instance_id: str | None = None


class TxnOffsetCommitResponse(msgspec.Struct, frozen=True):
    partitions: list[TxnPartitionResult]


class TxnVerifyRequest(msgspec.Struct, frozen=True):
    """KIP-890 part 1 (AddPartitionsToTxn v4's verify_only): are these partitions in the
    ongoing transaction of this producer id and epoch? Asked by a partition leader before
    it appends a producer's first transactional batch there; changes nothing. The
    transactional id when the produce request named one (Kafka's), else found by the
    producer id."""

    producer_id: int
    producer_epoch: int
    partitions: list[TxnPartition]
    transactional_id: str | None = None


class TxnMarkersRequest(msgspec.Struct, frozen=True):
    """Write a COMMIT or ABORT marker of one producer to partitions this broker leads."""

    producer_id: int
    producer_epoch: int
    commit: bool
    coordinator_epoch: int
    partitions: list[TxnPartition]


class TxnMarkersResponse(msgspec.Struct, frozen=True):
    partitions: list[TxnPartitionResult]


class TxnDescription(msgspec.Struct, frozen=True):
    """DescribeTransactions/ListTransactions: one transactional id's state."""

    transactional_id: str
    state: str  # Kafka's names: Empty, Ongoing, PrepareCommit, PrepareAbort, CompleteCommit...
    producer_id: int
    producer_epoch: int
    timeout_ms: int
    started_ms: int
    partitions: list[TxnPartition] = []
    groups: list[str] = []
    error: str | None = None


class TxnDescribeRequest(msgspec.Struct, frozen=True):
    transactional_ids: list[str] | None = None  # None: all (ListTransactions)
    states: list[str] = []  # ListTransactions' filter (empty: any)
    producer_ids: list[int] = []
    min_duration_ms: int = -1  # ListTransactions v1: open at least this long (-1: any)


class TxnDescriptions(msgspec.Struct, frozen=True):
    transactions: list[TxnDescription]


# ---- read_committed, on the reading side -----------------------------------------------------

ABORTED_HEADER: Final = "X-Conveyor-Aborted-Transactions"  # "pid:first,pid:first"
LAST_STABLE_OFFSET_HEADER: Final = "X-Conveyor-Last-Stable-Offset"
ABORTED_IN_HEADER_MAX: Final = 10_000


def encode_aborted(aborted: Iterable[tuple[int, int]]) -> str:
    return ",".join(f"{pid}:{first}" for pid, first in aborted)


def decode_aborted(text: str) -> list[tuple[int, int]]:
    """The aborted transactions of a fetch answer's header; a malformed one is an
    InvalidRequestError (the broker wrote it: a bug or another server)."""
    found: list[tuple[int, int]] = []
    for item in text.split(",")[:ABORTED_IN_HEADER_MAX] if text else ():
        pid, _, first = item.partition(":")
        try:
            found.append((int(pid), int(first)))
        except ValueError:
            raise InvalidRequestError(f"malformed aborted transaction {item[:40]!r}") from None
    return found


def without_aborted(data: bytes, aborted: Iterable[tuple[int, int]]) -> bytes:
    """The whole batches of a read_committed fetch answer minus those of aborted
    transactions (Kafka's consumer rule: a producer's transactional batches from the
    aborted transaction's first offset until its ABORT marker are dropped). Control
    batches stay (readers skip them). Pure; ``data`` is whole batches, as fetched."""
    pending = sorted(aborted, key=lambda a: a[1])
    active: set[int] = set()
    kept: list[bytes] = []
    position = 0
    view = memoryview(data)
    while len(data) - position >= LOG_OVERHEAD:
        _, size = peek_length(data, position)
        if position + size > len(data) or size < HEADER_SIZE:
            break
        header = parse_header(data, position)
        while pending and pending[0][1] <= header.last_offset:
            active.add(pending.pop(0)[0])
        drop = False
        if header.attributes & TRANSACTIONAL_BIT and header.producer_id in active:
            if header.is_control:
                if marker_type(data, position) == ABORT:
                    active.discard(header.producer_id)
            else:
                drop = True
        if not drop:
            kept.append(bytes(view[position : position + size]))
        position += size
    return b"".join(kept)
