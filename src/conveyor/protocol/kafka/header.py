"""Request and response headers (Kafka's RequestHeader v1/v2, ResponseHeader v0/v1), both
ways: the listener parses requests and writes responses, the client
(``transport/kafka_client.py``) the reverse.

A request header is, big-endian::

    api_key         int16
    api_version     int16
    correlation_id  int32
    client_id       nullable string (int16 length, -1 = null), in both versions
    tagged fields   (v2 only: flexible request versions) unsigned varint count, then
                    per field: varint tag, varint size, size bytes

Whether a request uses v2 depends on its API and version (``apis.is_flexible``), so the
fixed 8 bytes are read first (:func:`peek_ids`): they are enough to answer an unsupported
version or to log an unknown API before the rest is trusted. Response headers are v1
(correlation id + empty tagged fields) for flexible versions and v0 otherwise, except
ApiVersions, which always answers with v0 so that a client can read the answer to a
version the broker does not know.
"""

from __future__ import annotations

import struct
from typing import Final, NamedTuple

_IDS: Final = struct.Struct(">hhi")
_INT16: Final = struct.Struct(">h")
_CORRELATION: Final = struct.Struct(">i")
IDS_BYTES: Final = 8
VARINT_BYTES_MAX: Final = 5  # an unsigned varint of at most 32 bits
TAGGED_FIELDS_MAX: Final = 64  # more in one header is an abuse, not a client


class HeaderError(ValueError):
    """The header is truncated or malformed (the connection is closed: no reply is safe)."""


# NamedTuples, not frozen dataclasses: built for every request, and a frozen dataclass'
# __init__ sets each field through object.__setattr__ (~1 us a header on this machine).
class RequestIds(NamedTuple):
    api_key: int
    api_version: int
    correlation_id: int


class RequestHeader(NamedTuple):
    api_key: int
    api_version: int
    correlation_id: int
    client_id: str | None
    body_offset: int  # where the request body starts in the frame


def peek_ids(frame: bytes | memoryview) -> RequestIds:
    if len(frame) < IDS_BYTES:
        raise HeaderError(f"request of {len(frame)} bytes is shorter than its header")
    return RequestIds._make(_IDS.unpack_from(frame, 0))


def read_uvarint(data: bytes | memoryview, position: int) -> tuple[int, int]:
    """An unsigned varint (at most 32 bits) at ``position``: (value, next position)."""
    value = 0
    for index in range(VARINT_BYTES_MAX):
        if position + index >= len(data):
            raise HeaderError("truncated varint")
        byte = data[position + index]
        value |= (byte & 0x7F) << (7 * index)
        if not byte & 0x80:
            if value > 0xFFFFFFFF:
                raise HeaderError("varint exceeds 32 bits")
            return value, position + index + 1
    raise HeaderError("varint longer than 5 bytes")


def skip_tagged_fields(data: bytes | memoryview, position: int) -> int:
    count, position = read_uvarint(data, position)
    if count > TAGGED_FIELDS_MAX:
        raise HeaderError(f"{count} tagged fields in a header (at most {TAGGED_FIELDS_MAX})")
    for _ in range(count):
        _, position = read_uvarint(data, position)
        size, position = read_uvarint(data, position)
        position += size
        if position > len(data):
            raise HeaderError("truncated tagged field")
    return position


def parse_request_header(
    frame: bytes | memoryview, flexible: bool, ids: RequestIds | None = None
) -> RequestHeader:
    """The whole header; ``flexible``: the request's version uses header v2; ``ids``:
    :func:`peek_ids`' answer when the caller has it already."""
    if ids is None:
        ids = peek_ids(frame)
    position = IDS_BYTES
    if len(frame) < position + 2:
        raise HeaderError("truncated client id")
    (length,) = _INT16.unpack_from(frame, position)
    position += 2
    client_id: str | None = None
    if length >= 0:
        if len(frame) < position + length:
            raise HeaderError("truncated client id")
        try:
            client_id = bytes(frame[position : position + length]).decode()
        except UnicodeDecodeError:
            raise HeaderError("client id is not UTF-8") from None
        position += length
    elif length != -1:
        raise HeaderError(f"client id length {length}")
    if flexible:
        position = skip_tagged_fields(frame, position)
    return RequestHeader(ids.api_key, ids.api_version, ids.correlation_id, client_id, position)


def request_header(
    api_key: int, api_version: int, correlation_id: int, client_id: str | None, flexible: bool
) -> bytes:
    """RequestHeader v2 (flexible, with an empty tagged-field section) or v1: what a
    client sends (the reverse of :func:`parse_request_header`)."""
    head = _IDS.pack(api_key, api_version, correlation_id)
    if client_id is None:
        head += _INT16.pack(-1)
    else:
        encoded = client_id.encode()
        head += _INT16.pack(len(encoded)) + encoded
    return head + b"\x00" if flexible else head


def parse_response_header(frame: bytes | memoryview, flexible: bool) -> tuple[int, int]:
    """(correlation id, where the body starts) of a response: header v1 (flexible, whose
    tagged fields are skipped) or v0."""
    if len(frame) < _CORRELATION.size:
        raise HeaderError(f"response of {len(frame)} bytes is shorter than its header")
    (correlation_id,) = _CORRELATION.unpack_from(frame, 0)
    position = _CORRELATION.size
    if flexible:
        position = skip_tagged_fields(frame, position)
    return correlation_id, position


def response_header(correlation_id: int, flexible: bool) -> bytes:
    """ResponseHeader v1 (flexible) or v0."""
    encoded = _CORRELATION.pack(correlation_id)
    return encoded + b"\x00" if flexible else encoded
