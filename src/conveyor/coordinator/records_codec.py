"""The coordinator's durable records as bytes, for stores that keep a log of them (etcd).

Pure. One log entry holds the durable records of one or more transitions, in order::

    entry   = b"[" ... (JSON)  |  b"z" + zlib(JSON)      compressed past ENTRY_COMPRESS_BYTES
    JSON    = [[tag, fields], ...]
    tag     = "broker" | "topic" | "partition" | "topic_removed" | "offset" | "producer"
            | "group_removed" | "offset_removed"
            | "share_group" | "share_group_removed" | "transaction"

``fields`` are the record's dataclass fields by name (unknown names are ignored on decode,
so a later version may add fields with defaults). As in the SQLite store, a topic's
``config`` keeps every field, defaults included (a later version with other defaults must
not change existing topics), and soft state (``BrokerSeen``) is never written.
``Broker.incarnation`` is (a restarted coordinator must tell a broker that restarted
meanwhile), and so is ``Broker.kafka_address`` (a coordinator that took over names the
brokers' Kafka listeners at once); entries from before them have ``""``, "unknown".
Likewise an ``offset``'s ``leader_epoch`` (Kafka's committed leader epoch): -1, "none", in
entries from before it.
"""

from __future__ import annotations

import zlib
from collections.abc import Iterable, Sequence
from dataclasses import replace
from typing import Any, Final

import msgspec

from conveyor.coordinator.model import (
    Broker,
    BrokerRecord,
    CommittedOffset,
    GroupRemoved,
    OffsetRecord,
    OffsetRemoved,
    Partition,
    PartitionRecord,
    ProducerRecord,
    Record,
    ShareGroup,
    ShareGroupRecord,
    ShareGroupRemoved,
    Topic,
    TopicRecord,
    TopicRemoved,
    canonical_config,
)
from conveyor.coordinator.txn_model import Transaction, TransactionRecord
from conveyor.protocol.errors import ErrorCode, FatalError

ENTRY_COMPRESS_BYTES: Final = 4096  # below this zlib saves little and costs a copy
_encoder = msgspec.json.Encoder()


def _fields(record: Record) -> tuple[str, dict[str, Any]]:  # noqa: PLR0911 -- one per type
    match record:
        case BrokerRecord(broker=broker):
            return "broker", msgspec.to_builtins(broker)
        case TopicRecord(topic=topic):
            fields = msgspec.to_builtins(topic)
            fields["config"] = msgspec.structs.asdict(topic.config)
            return "topic", fields
        case PartitionRecord(partition=partition):
            return "partition", msgspec.to_builtins(partition)
        case TopicRemoved(name=name):
            return "topic_removed", {"name": name}
        case OffsetRecord() | OffsetRemoved() | GroupRemoved():
            return _offset_fields(record)
        case ProducerRecord(producer_id=producer_id, producer_epoch=producer_epoch):
            return "producer", {"producer_id": producer_id, "producer_epoch": producer_epoch}
        case ShareGroupRecord() | ShareGroupRemoved():
            return _share_group_fields(record)
        case TransactionRecord(transaction=txn):
            return "transaction", msgspec.to_builtins(txn)
    raise FatalError(f"record {record!r} is not durable", code=ErrorCode.INTERNAL_ERROR)


def _offset_fields(
    record: OffsetRecord | OffsetRemoved | GroupRemoved,
) -> tuple[str, dict[str, Any]]:
    if isinstance(record, OffsetRecord):
        return "offset", msgspec.to_builtins(record.offset)
    if isinstance(record, GroupRemoved):
        return "group_removed", {"group": record.group}
    return "offset_removed", {
        "group": record.group,
        "topic": record.topic,
        "partition": record.partition,
    }


def encode_records(records: Iterable[Record]) -> bytes:
    """One log entry of ``records`` (durable ones only: soft records are skipped)."""
    data = _encoder.encode([_fields(r) for r in records if r.durable])
    if len(data) >= ENTRY_COMPRESS_BYTES:
        return b"z" + zlib.compress(data, 1)
    return data


def decode_records(entry: bytes) -> list[Record]:
    """The records of one log entry. Raises FatalError(CORRUPT_DATA) for anything that is
    not an entry this code wrote: a store holding it is damaged, not "empty"."""
    try:
        data = zlib.decompress(entry[1:]) if entry[:1] == b"z" else entry
        items = msgspec.json.decode(data, type=list[tuple[str, dict[str, Any]]])
        return [_record(tag, fields) for tag, fields in items]
    except (zlib.error, msgspec.DecodeError, msgspec.ValidationError, KeyError) as exc:
        raise FatalError(
            f"undecodable coordinator log entry: {exc}", code=ErrorCode.CORRUPT_DATA
        ) from exc


def _record(tag: str, fields: dict[str, Any]) -> Record:  # noqa: PLR0911 -- one per tag
    match tag:
        case "broker":
            return BrokerRecord(msgspec.convert(fields, Broker))
        case "topic":
            topic = msgspec.convert(fields, Topic)
            return TopicRecord(replace(topic, config=canonical_config(topic.config)))
        case "partition":
            return PartitionRecord(msgspec.convert(fields, Partition))
        case "topic_removed":
            return TopicRemoved(str(fields["name"]))
        case "offset" | "offset_removed" | "group_removed":
            return _offset_record(tag, fields)
        case "producer":
            return ProducerRecord(int(fields["producer_id"]), int(fields["producer_epoch"]))
        case "share_group" | "share_group_removed":
            return _share_group_record(tag, fields)
        case "transaction":
            return TransactionRecord(msgspec.convert(fields, Transaction))
    raise KeyError(f"unknown record tag {tag!r}")


def _offset_record(tag: str, fields: dict[str, Any]) -> Record:
    if tag == "offset":
        return OffsetRecord(msgspec.convert(fields, CommittedOffset))
    if tag == "group_removed":
        return GroupRemoved(str(fields["group"]))
    return OffsetRemoved(str(fields["group"]), str(fields["topic"]), int(fields["partition"]))


def _share_group_fields(
    record: ShareGroupRecord | ShareGroupRemoved,
) -> tuple[str, dict[str, Any]]:
    if isinstance(record, ShareGroupRemoved):
        return "share_group_removed", {"name": record.name}
    fields = msgspec.to_builtins(record.group)
    fields["config"] = msgspec.structs.asdict(record.group.config)  # defaults kept too
    return "share_group", fields


def _share_group_record(tag: str, fields: dict[str, Any]) -> Record:
    if tag == "share_group_removed":
        return ShareGroupRemoved(str(fields["name"]))
    return ShareGroupRecord(msgspec.convert(fields, ShareGroup))


def split_entries(records: Sequence[Record], entry_bytes_max: int) -> list[bytes]:
    """``records`` encoded as entries of at most ``entry_bytes_max`` bytes each (a single
    record larger than that gets an entry of its own), for snapshots, whose size has no
    bound of its own."""
    entries: list[bytes] = []
    chunk: list[Record] = []
    size = 0
    for record in records:
        approx = len(_encoder.encode(_fields(record)[1])) + 16
        if chunk and size + approx > entry_bytes_max:
            entries.append(encode_records(chunk))
            chunk, size = [], 0
        chunk.append(record)
        size += approx
    if chunk:
        entries.append(encode_records(chunk))
    return entries
