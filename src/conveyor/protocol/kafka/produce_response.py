"""A hand-written encoder for Produce responses (v3-v11), the one answer on the produce hot
path: building and encoding it with kafka-python's classes took ~80 us per request
(measured in docs/kafka-compatibility.md), this takes a few. Its output is checked byte
for byte against kafka-python's encoder by a property test (tests/unit/protocol/kafka/
test_produce_response.py), which stays the reference for the format.

The producer's side, :func:`read_produce_offsets`: the base offsets of an answer in which
every partition succeeded and nothing else is said (no record errors, error message or
tagged fields), the answer to nearly every Produce; anything else is None, and the caller
decodes it with kafka-python, whose verdict stands (as ``read_produce_request`` does for
requests). A property test holds the two equal on generated, truncated and corrupted
answers.

Layout (Kafka's ProduceResponse.json): per topic its name and partitions; per partition
index, error_code, base_offset, log_append_time_ms (v2+), log_start_offset (v5+),
record_errors (batch_index, batch_index_error_message) and error_message (v8+),
current_leader (tagged 0, v10+); then throttle_time_ms; node_endpoints (tagged 0, v10+).
v9+ are flexible: compact arrays and
strings, a tagged-field section after each struct.
"""

from __future__ import annotations

import struct
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Final

from conveyor.protocol.kafka.plainread import (
    READ_ERRORS,
    UnusualEncodingError,
    string_at,
    uvarint_at,
)
from conveyor.protocol.kafka.varint import uvarint

_I16: Final = struct.Struct(">h")
_I32: Final = struct.Struct(">i")
_PARTITION_V5: Final = struct.Struct(">ihqqq")  # index, error, base, append time, log start
_PARTITION_V3: Final = struct.Struct(">ihqq")  # index, error, base, append time
_LEADER: Final = struct.Struct(">ii")
_CORRELATION_TOPICS: Final = struct.Struct(">ii")  # classic: correlation id, topic count
FLEXIBLE_FROM: Final = 9
CURRENT_LEADER_FROM: Final = 10


# Not frozen: one is built per partition produced, and a frozen dataclass' __init__ sets
# each of its seven fields through object.__setattr__ (~1 us here). Not changed once built.
@dataclass(slots=True)
class PartitionAnswer:
    index: int
    error_code: int = 0
    base_offset: int = -1
    log_start_offset: int = -1
    error_message: str | None = None
    leader: tuple[int, int] | None = None  # (leader id, leader epoch), v10+ only
    # v8+ record_errors: (batch_index, message) per record at fault (KIP-467), so a client
    # fails only those and retries the rest of the batch
    record_errors: tuple[tuple[int, str | None], ...] = ()


@dataclass(frozen=True, slots=True)
class Endpoint:
    node_id: int
    host: str
    port: int


class Encoded(bytes):
    """Already-encoded bytes standing in for a kafka-python message (``encode`` returns
    them), so the session's one encode path serves both."""

    def encode(self, version: int) -> bytes:
        return bytes(self)


def _string(text: str, flexible: bool) -> bytes:
    raw = text.encode()
    return (uvarint(len(raw) + 1) if flexible else _I16.pack(len(raw))) + raw


def _nullable_string(text: str | None, flexible: bool) -> bytes:
    if text is None:
        return b"\x00" if flexible else _I16.pack(-1)
    return _string(text, flexible)


def _count(n: int, flexible: bool) -> bytes:
    return uvarint(n + 1) if flexible else _I32.pack(n)


def _partition(version: int, answer: PartitionAnswer) -> bytes:
    flexible = version >= FLEXIBLE_FROM
    if version >= 5:
        out = _PARTITION_V5.pack(
            answer.index, answer.error_code, answer.base_offset, -1, answer.log_start_offset
        )
    else:
        out = _PARTITION_V3.pack(answer.index, answer.error_code, answer.base_offset, -1)
    if version >= 8:
        out += _count(len(answer.record_errors), flexible)
        for batch_index, message in answer.record_errors:
            out += _I32.pack(batch_index) + _nullable_string(message, flexible)
            if flexible:
                out += b"\x00"  # the record error's tagged fields
        out += _nullable_string(answer.error_message, flexible)
    if flexible:
        if answer.leader is not None and version >= CURRENT_LEADER_FROM:
            leader = _LEADER.pack(*answer.leader) + b"\x00"
            out += b"\x01\x00" + uvarint(len(leader)) + leader  # one tagged field, tag 0
        else:
            out += b"\x00"
    return out


def _endpoints(endpoints: Sequence[Endpoint]) -> bytes:
    body = uvarint(len(endpoints) + 1)
    for endpoint in endpoints:
        body += (
            _I32.pack(endpoint.node_id)
            + _string(endpoint.host, True)
            + _I32.pack(endpoint.port)
            + b"\x00"  # rack: null
            + b"\x00"  # tagged fields
        )
    return body


def encode_produce_response(
    version: int,
    topics: Sequence[tuple[str, Sequence[PartitionAnswer]]],
    endpoints: Sequence[Endpoint] = (),
) -> Encoded:
    flexible = version >= FLEXIBLE_FROM
    parts = [_count(len(topics), flexible)]
    for name, partitions in topics:
        parts.append(_string(name, flexible))
        parts.append(_count(len(partitions), flexible))
        parts.extend(_partition(version, p) for p in partitions)
        if flexible:
            parts.append(b"\x00")
    parts.append(_I32.pack(0))  # throttle_time_ms
    if flexible:
        if endpoints and version >= CURRENT_LEADER_FROM:
            body = _endpoints(endpoints)
            parts.append(b"\x01\x00" + uvarint(len(body)) + body)  # tagged field 0
        else:
            parts.append(b"\x00")
    return Encoded(b"".join(parts))


def read_produce_offsets(frame: bytes, version: int) -> dict[tuple[str, int], int] | None:
    """Each (topic, partition)'s base offset in the Produce answer ``frame`` (header
    included, size prefix not) when every partition succeeded and the answer is plain
    (module docstring); else None."""
    try:
        if version >= FLEXIBLE_FROM:
            return _offsets_flexible(frame)
        return _offsets_classic(frame, version)
    except READ_ERRORS:
        return None


def _offsets_flexible(frame: bytes) -> dict[tuple[str, int], int]:
    """v9+: header v1 (correlation id, tags), compact arrays and strings, tags per struct."""
    if frame[4]:  # the header's tagged fields
        raise UnusualEncodingError
    partition = _PARTITION_V5
    offsets: dict[tuple[str, int], int] = {}
    topics, position = uvarint_at(frame, 5)
    if not topics:
        raise UnusualEncodingError  # a null array
    for _ in range(topics - 1):
        length, position = uvarint_at(frame, position)
        if not length:
            raise UnusualEncodingError  # a null name
        name = string_at(frame, position, length - 1)
        count, position = uvarint_at(frame, position + length - 1)
        if not count:
            raise UnusualEncodingError
        for _ in range(count - 1):
            index, error, base, _, _ = partition.unpack_from(frame, position)
            position += partition.size
            # error, record_errors (empty), error_message (null), tagged fields (none)
            if error or frame[position] != 1 or frame[position + 1] or frame[position + 2]:
                raise UnusualEncodingError
            position += 3
            offsets[name, index] = base
        if frame[position]:  # the topic's tagged fields
            raise UnusualEncodingError
        position += 1
    position += 4  # throttle_time_ms
    if frame[position] or position + 1 != len(frame):  # the answer's tags (node_endpoints)
        raise UnusualEncodingError
    return offsets


def _offsets_classic(frame: bytes, version: int) -> dict[tuple[str, int], int]:
    """v3-v8: header v0 (correlation id), int16 string lengths, int32 array counts."""
    partition = _PARTITION_V5 if version >= 5 else _PARTITION_V3
    offsets: dict[tuple[str, int], int] = {}
    _, topics = _CORRELATION_TOPICS.unpack_from(frame, 0)
    position = _CORRELATION_TOPICS.size
    if topics < 0:
        raise UnusualEncodingError  # a null array
    for _ in range(topics):
        (length,) = _I16.unpack_from(frame, position)
        name = string_at(frame, position + 2, length)
        (count,) = _I32.unpack_from(frame, position + 2 + length)
        position += 2 + length + 4
        if count < 0:
            raise UnusualEncodingError
        for _ in range(count):
            index, error, base = partition.unpack_from(frame, position)[:3]
            position += partition.size
            if error:
                raise UnusualEncodingError
            if version >= 8:  # record_errors (empty), error_message (null)
                (errors,) = _I32.unpack_from(frame, position)
                (message,) = _I16.unpack_from(frame, position + 4)
                if errors or message != -1:
                    raise UnusualEncodingError
                position += 6
            offsets[name, index] = base
    position += 4  # throttle_time_ms
    if position != len(frame):
        raise UnusualEncodingError
    return offsets
