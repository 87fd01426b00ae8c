"""Kafka's framing: every request and response is a 4-byte big-endian size, then that many
bytes. A size below the smallest request header or above ``max_frame_bytes`` (Kafka's
``socket.request.max.bytes``, 100 MiB by default) is a protocol error: the connection is
closed before anything of the frame is read (Kafka does the same: no response is
possible without a header)."""

from __future__ import annotations

import struct
from typing import Final

SIZE_BYTES: Final = 4
# api_key (2) + api_version (2) + correlation_id (4) + client_id length (2)
REQUEST_HEADER_BYTES_MIN: Final = 10
RESPONSE_HEADER_BYTES_MIN: Final = 4  # correlation_id (a client reads responses)
MAX_FRAME_BYTES_DEFAULT: Final = 100 * 1024 * 1024  # Kafka's socket.request.max.bytes

_SIZE: Final = struct.Struct(">i")


class FrameError(ValueError):
    """The size prefix cannot start a valid frame; the connection must be closed."""


def frame_size(
    prefix: bytes,
    max_frame_bytes: int = MAX_FRAME_BYTES_DEFAULT,
    min_frame_bytes: int = REQUEST_HEADER_BYTES_MIN,
) -> int:
    """The size a 4-byte prefix announces, checked against the limits (a client reading
    responses passes ``RESPONSE_HEADER_BYTES_MIN``)."""
    if len(prefix) != SIZE_BYTES:
        raise FrameError(f"a frame starts with {SIZE_BYTES} size bytes, got {len(prefix)}")
    size: int = _SIZE.unpack(prefix)[0]
    if size < min_frame_bytes:
        raise FrameError(f"frame of {size} bytes is smaller than a header ({min_frame_bytes})")
    if size > max_frame_bytes:
        raise FrameError(
            f"frame of {size} bytes exceeds the limit of {max_frame_bytes} "
            "(socket.request.max.bytes)"
        )
    return size


def size_prefix(size: int) -> bytes:
    return _SIZE.pack(size)
