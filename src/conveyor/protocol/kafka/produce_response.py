"""A hand-written encoder for Produce responses (v3-v11), the one answer on the produce hot
path: building and encoding it with kafka-python's classes took ~80 us per request
(measured in docs/kafka-compatibility.md), this takes a few. Its output is checked byte
for byte against kafka-python's encoder by a property test (tests/unit/protocol/kafka/
test_produce_response.py), which stays the reference for the format.

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

from conveyor.protocol.kafka.varint import uvarint

_I16: Final = struct.Struct(">h")
_I32: Final = struct.Struct(">i")
_PARTITION_V5: Final = struct.Struct(">ihqqq")  # index, error, base, append time, log start
_PARTITION_V3: Final = struct.Struct(">ihqq")  # index, error, base, append time
_LEADER: Final = struct.Struct(">ii")
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
