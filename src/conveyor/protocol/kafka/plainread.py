"""What the hand-written readers share (``produce_request.read_produce_request``, the
broker's; ``produce_response.read_produce_offsets``, the producer's): each reads only the
plain encoding a peer sends and gives up on anything else, which kafka-python's decoder
then reads, so its verdict (the value, or a refusal) stands."""

from __future__ import annotations

import struct
from typing import Final


class UnusualEncodingError(Exception):
    """Not the plain encoding: kafka-python's decoder has the last word."""


READ_ERRORS: Final = (UnusualEncodingError, struct.error, IndexError, UnicodeDecodeError)
"""What a reader's caller catches to give up (a short frame raises struct.error or
IndexError; bad UTF-8, UnicodeDecodeError)."""

_VARINT_BYTES_MAX: Final = 5


def uvarint_at(data: bytes | memoryview, position: int) -> tuple[int, int]:
    """An unsigned varint of at most 5 bytes at ``position``: (value, next position)."""
    byte = data[position]
    if byte < 0x80:  # one byte: every length and count below 128
        return byte, position + 1
    value = 0
    for shift in range(0, 7 * _VARINT_BYTES_MAX, 7):
        byte = data[position]
        position += 1
        value |= (byte & 0x7F) << shift
        if not byte & 0x80:
            return value, position
    raise UnusualEncodingError


def string_at(data: bytes | memoryview, position: int, length: int) -> str:
    """The UTF-8 string of ``length`` bytes at ``position`` (kafka-python's conversion, so
    the same bytes are refused)."""
    if length < 0 or position + length > len(data):
        raise UnusualEncodingError
    return str(data[position : position + length], "utf-8")
