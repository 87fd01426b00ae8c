"""Kafka's unsigned varint (the compact lengths of flexible versions), shared by the
hand-written encoders (produce_request.py, produce_response.py, fetch_response.py)."""

from __future__ import annotations


def uvarint(value: int) -> bytes:
    """``value`` (>= 0) as an unsigned LEB128 varint, 7 bits a byte, low bits first."""
    out = bytearray()
    while value > 0x7F:
        out.append((value & 0x7F) | 0x80)
        value >>= 7
    out.append(value)
    return bytes(out)
