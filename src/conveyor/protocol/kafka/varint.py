"""Kafka's unsigned varint (the compact lengths of flexible versions), shared by the
hand-written encoders (produce_request.py, produce_response.py, fetch_response.py)."""

from __future__ import annotations

from typing import Final

_ONE_BYTE: Final = tuple(bytes((value,)) for value in range(0x80))


def uvarint(value: int) -> bytes:
    """``value`` (>= 0) as an unsigned LEB128 varint, 7 bits a byte, low bits first."""
    if 0 <= value < 0x80:  # every count and most lengths of a produce: no buffer to build
        return _ONE_BYTE[value]
    out = bytearray()
    while value > 0x7F:
        out.append((value & 0x7F) | 0x80)
        value >>= 7
    out.append(value)
    return bytes(out)
