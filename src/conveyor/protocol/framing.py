"""The multi-partition produce body: a 4-byte big-endian length, a ``ProduceManyRequest``
JSON header, then each partition's record batches in the header's order. One request per
topic and broker carries the batches of every partition ready at that moment (as Kafka's
``ProduceRequest``), so a producer spread over many partitions pays one HTTP round trip,
not one per partition."""

from __future__ import annotations

import struct
from collections.abc import Sequence
from typing import Final

import msgspec

from conveyor.protocol.errors import InvalidRequestError
from conveyor.protocol.messages import ProduceManyRequest, ProducePart

_FRAME: Final = struct.Struct(">I")
PARTS_MAX: Final = 10_000


def encode_produce_many(parts: Sequence[tuple[int, bytes]]) -> bytes:
    header = msgspec.json.encode(
        ProduceManyRequest(
            partitions=[ProducePart(partition=p, size_bytes=len(b)) for p, b in parts]
        )
    )
    return b"".join((_FRAME.pack(len(header)), header, *(b for _, b in parts)))


def decode_produce_many(body: bytes) -> list[tuple[int, memoryview]]:
    """Each partition and its batches (views into ``body``); 400 on any inconsistency."""
    if len(body) < _FRAME.size:
        raise InvalidRequestError("produce body shorter than its 4-byte frame")
    (length,) = _FRAME.unpack_from(body)
    start = _FRAME.size + length
    if start > len(body):
        raise InvalidRequestError(f"produce header of {length} bytes overruns the body")
    try:
        header = msgspec.json.decode(body[_FRAME.size : start], type=ProduceManyRequest)
    except msgspec.DecodeError as exc:
        raise InvalidRequestError(f"malformed produce header: {exc}") from None
    if not header.partitions or len(header.partitions) > PARTS_MAX:
        raise InvalidRequestError(f"a produce request carries 1 to {PARTS_MAX} partitions")
    seen: set[int] = set()
    view = memoryview(body)
    parts: list[tuple[int, memoryview]] = []
    for part in header.partitions:
        if part.partition < 0 or part.size_bytes < 1 or part.partition in seen:
            raise InvalidRequestError(
                "each partition appears once, with a non-negative number and size_bytes >= 1"
            )
        seen.add(part.partition)
        parts.append((part.partition, view[start : start + part.size_bytes]))
        start += part.size_bytes
    if start != len(body):
        raise InvalidRequestError(
            f"the header's sizes cover {start} bytes of a {len(body)}-byte body"
        )
    return parts
