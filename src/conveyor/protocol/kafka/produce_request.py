"""The Produce request by hand (v3-v11): the client's encoder and the broker's decoder.

Building and encoding a one-partition Produce request with kafka-python's classes took
34 us (load 24; 6.4 us this way): per acknowledged ``send`` at linger 0 (W3) a large share
of the client's Python. kafka-python's classes stay the reference: a property test
(tests/unit/protocol/kafka/test_produce_request.py) checks these bytes against their
encoder for every version. A full hand-written reader of the answer did not beat
kafka-python's decoder (20.5 us against 16.5 us, same run); one that reads only the
common answer, every partition's success, does (``produce_response.read_produce_offsets``).

The broker's side, :func:`read_produce_request`: kafka-python's decoder built an object per
topic and partition and copied every record set (10 us a one-record request, load 6; see
docs/benchmarks.md, "W3: a hand-written Produce decoder"). This one reads the fields the
handler uses into one flat :class:`ProduceData`, the record sets as memoryviews of the
frame (never copied: the log appends them as they are). It reads only the encodings
clients send (canonical varints, no tagged fields, lengths within the frame); for
anything else it answers None and the caller decodes with kafka-python, whose verdict
(the value, or a refusal) stands, so both accept and refuse exactly the same requests. A
property test (tests/unit/protocol/kafka/test_produce_request.py) holds the two equal on
generated, truncated and corrupted requests.

Layout (Kafka's ProduceRequest.json): transactional_id, acks, timeout_ms, then per topic
its name and per partition its index and records. v9+ are flexible: compact arrays and
strings and a tagged-field section after each struct.
"""

from __future__ import annotations

import struct
from collections.abc import Sequence
from typing import Any, Final, NamedTuple

from conveyor.protocol.kafka.plainread import (
    READ_ERRORS,
    UnusualEncodingError,
    string_at,
    uvarint_at,
)
from conveyor.protocol.kafka.produce_response import Encoded
from conveyor.protocol.kafka.varint import uvarint

FLEXIBLE_FROM: Final = 9
_I16: Final = struct.Struct(">h")
_I32: Final = struct.Struct(">i")
_ACKS_TIMEOUT: Final = struct.Struct(">hi")
_INDEX_SIZE: Final = struct.Struct(">ii")  # a partition's index and records length

Records = bytes | memoryview


def encode_produce_request(  # noqa: PLR0917 -- the request's own fields
    version: int,
    topic: str,
    partition: int,
    records: bytes,
    acks: int,
    timeout_ms: int,
    transactional_id: str | None = None,
) -> Encoded:
    """The body of a Produce of ``records`` (encoded batches) to one partition."""
    return encode_produce_requests(
        version, ((topic, ((partition, records),)),), acks, timeout_ms, transactional_id
    )


TopicRecords = tuple[str, Sequence[tuple[int, bytes]]]  # a topic, (partition, records) each


def encode_produce_requests(
    version: int,
    topics: Sequence[TopicRecords],
    acks: int,
    timeout_ms: int,
    transactional_id: str | None = None,
) -> Encoded:
    """The body of a Produce to every partition of ``topics``: the producer's one request
    per broker carrying each ready partition's batch (``client/sender.py``)."""
    txn = None if transactional_id is None else transactional_id.encode()
    flexible = version >= FLEXIBLE_FROM
    if flexible:
        parts = [
            b"\x00" if txn is None else uvarint(len(txn) + 1) + txn,
            _ACKS_TIMEOUT.pack(acks, timeout_ms),
            uvarint(len(topics) + 1),
        ]
    else:
        parts = [
            _I16.pack(-1) if txn is None else _I16.pack(len(txn)) + txn,
            _ACKS_TIMEOUT.pack(acks, timeout_ms),
            _I32.pack(len(topics)),
        ]
    append = parts.append
    for topic, partitions in topics:
        name = topic.encode()
        if flexible:
            append(uvarint(len(name) + 1))
            append(name)
            append(uvarint(len(partitions) + 1))
            for partition, records in partitions:
                append(_I32.pack(partition))
                append(uvarint(len(records) + 1))
                append(records)
                append(b"\x00")  # the partition's tags
            append(b"\x00")  # the topic's tags
        else:
            append(_I16.pack(len(name)))
            append(name)
            append(_I32.pack(len(partitions)))
            for partition, records in partitions:
                append(_INDEX_SIZE.pack(partition, len(records)))
                append(records)
    if flexible:
        append(b"\x00")  # the request's tags
    return Encoded(b"".join(parts))


class ProduceData(NamedTuple):
    """A decoded Produce request: what the handler uses, flat. ``partitions``: (topic,
    partition index, records) in the request's order; records None when sent null. (A
    NamedTuple: built once per request, and a frozen dataclass' __init__ costs ~1 us.)"""

    transactional_id: str | None
    acks: int
    timeout_ms: int
    partitions: tuple[tuple[str, int, Records | None], ...]


def read_produce_request(body: memoryview, version: int) -> ProduceData | None:
    """The Produce request in ``body`` (after the header), or None when it is not in the
    plain form clients send (then decode it with kafka-python: :func:`produce_data_of`)."""
    try:
        if version >= FLEXIBLE_FROM:
            return _read_flexible(body)
        return _read_classic(body)
    except READ_ERRORS:
        return None


def produce_data_of(message: Any) -> ProduceData:
    """kafka-python's decoded ProduceRequest (already checked for forbidden nulls), flat."""
    return ProduceData(
        message.transactional_id,
        message.acks,
        message.timeout_ms,
        tuple(
            (topic.name, partition.index, partition.records)
            for topic in message.topic_data
            for partition in topic.partition_data
        ),
    )


def _read_classic(view: memoryview) -> ProduceData:
    """v3-v8: int16 string lengths, int32 array counts and records lengths."""
    (length,) = _I16.unpack_from(view, 0)
    position = 2
    transactional_id = None
    if length != -1:
        transactional_id = string_at(view, position, length)
        position += length
    acks, timeout_ms = _ACKS_TIMEOUT.unpack_from(view, position)
    position += _ACKS_TIMEOUT.size
    (topics,) = _I32.unpack_from(view, position)
    position += 4
    if topics < 0:
        raise UnusualEncodingError  # null (refused) or a negative count (read as none)
    partitions = []
    for _ in range(topics):
        (length,) = _I16.unpack_from(view, position)
        name = string_at(view, position + 2, length)
        position += 2 + length
        (count,) = _I32.unpack_from(view, position)
        position += 4
        if count < 0:
            raise UnusualEncodingError
        for _ in range(count):
            index, size = _INDEX_SIZE.unpack_from(view, position)
            position += _INDEX_SIZE.size
            records = None
            if size != -1:
                if size < 0 or position + size > len(view):
                    # kafka-python reads a short last record set as it is
                    raise UnusualEncodingError
                records = view[position : position + size]
                position += size
            partitions.append((name, index, records))
    return ProduceData(transactional_id, acks, timeout_ms, tuple(partitions))


def _read_flexible(view: memoryview) -> ProduceData:
    """v9+: compact strings, arrays and records (length + 1 as a varint, 0 = null), and
    an empty tagged-field section (one zero byte) after each struct."""
    length, position = uvarint_at(view, 0)
    transactional_id = None
    if length:
        transactional_id = string_at(view, position, length - 1)
        position += length - 1
    acks, timeout_ms = _ACKS_TIMEOUT.unpack_from(view, position)
    topics, position = uvarint_at(view, position + _ACKS_TIMEOUT.size)
    if not topics:
        raise UnusualEncodingError  # null: refused
    partitions = []
    for _ in range(topics - 1):
        length, position = uvarint_at(view, position)
        name = string_at(view, position, length - 1)
        count, position = uvarint_at(view, position + length - 1)
        if not count:
            raise UnusualEncodingError
        for _ in range(count - 1):
            (index,) = _I32.unpack_from(view, position)
            size, position = uvarint_at(view, position + 4)
            records = None
            if size:
                size -= 1
                if position + size > len(view):
                    raise UnusualEncodingError
                records = view[position : position + size]
                position += size
            if view[position]:  # the partition's tagged fields
                raise UnusualEncodingError
            position += 1
            partitions.append((name, index, records))
        if view[position]:  # the topic's
            raise UnusualEncodingError
        position += 1
    if view[position]:  # the request's
        raise UnusualEncodingError
    return ProduceData(transactional_id, acks, timeout_ms, tuple(partitions))
