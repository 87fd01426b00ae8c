"""The framing of a replica fetch answer: a 4-byte big-endian length, the
:class:`ReplicaFetchResponse` JSON, then each partition's batches as stored, in the order
of its results (``size_bytes`` each). Neither side decodes records."""

from __future__ import annotations

import struct
from collections.abc import Sequence
from typing import Final

import msgspec

from conveyor.protocol.errors import InvalidRequestError
from conveyor.protocol.messages import ReplicaFetchResponse

FRAMED_CONTENT_TYPE: Final = "application/vnd.conveyor.replica-fetch"
_FRAME: Final = struct.Struct(">I")


def encode_fetch_response(
    response: ReplicaFetchResponse, chunks: Sequence[bytes | memoryview]
) -> bytes:
    header = msgspec.json.encode(response)
    return b"".join((_FRAME.pack(len(header)), header, *chunks))


def decode_fetch_response(body: bytes) -> tuple[ReplicaFetchResponse, list[memoryview]]:
    """The header and each partition's batches (views into ``body``, no copies)."""
    if len(body) < _FRAME.size:
        raise InvalidRequestError("replica fetch response shorter than its frame")
    (length,) = _FRAME.unpack_from(body)
    start = _FRAME.size + length
    response = msgspec.json.decode(body[_FRAME.size : start], type=ReplicaFetchResponse)
    view = memoryview(body)
    chunks: list[memoryview] = []
    for result in response.partitions:
        if result.size_bytes < 0:
            raise InvalidRequestError("replica fetch response with a negative size")
        chunks.append(view[start : start + result.size_bytes])
        start += result.size_bytes
    if start != len(body):
        raise InvalidRequestError(f"replica fetch response has {len(body) - start} stray bytes")
    return response, chunks
