"""Request header parsing, response headers and framing: table tests and properties."""

from __future__ import annotations

import struct

import pytest
from hypothesis import given
from hypothesis import strategies as st

from conveyor.protocol.kafka.framing import (
    REQUEST_HEADER_BYTES_MIN,
    FrameError,
    frame_size,
    size_prefix,
)
from conveyor.protocol.kafka.header import (
    HeaderError,
    parse_request_header,
    read_uvarint,
    response_header,
)


def _uvarint(value: int) -> bytes:
    out = bytearray()
    while True:
        byte = value & 0x7F
        value >>= 7
        if value:
            out.append(byte | 0x80)
        else:
            out.append(byte)
            return bytes(out)


def _header(api_key: int, version: int, correlation: int, client: str | None) -> bytes:
    head = struct.pack(">hhi", api_key, version, correlation)
    if client is None:
        return head + struct.pack(">h", -1)
    raw = client.encode()
    return head + struct.pack(">h", len(raw)) + raw


@given(
    st.integers(-(2**15), 2**15 - 1),
    st.integers(-(2**15), 2**15 - 1),
    st.integers(-(2**31), 2**31 - 1),
    st.one_of(st.none(), st.text(max_size=50)),
    st.binary(max_size=20),
    st.booleans(),
)
def test_header_round_trip(  # noqa: PLR0917 -- one argument per drawn value
    api_key: int, version: int, correlation: int, client: str | None, body: bytes, flexible: bool
) -> None:
    raw = _header(api_key, version, correlation, client)
    tagged = b"\x01" + _uvarint(7) + _uvarint(3) + b"abc" if flexible else b""
    header = parse_request_header(raw + tagged + body, flexible)
    assert (header.api_key, header.api_version, header.correlation_id) == (
        api_key,
        version,
        correlation,
    )
    assert header.client_id == client
    assert header.body_offset == len(raw) + len(tagged)


@given(st.binary(max_size=64), st.booleans())
def test_any_bytes_parse_or_raise_header_error(data: bytes, flexible: bool) -> None:
    try:
        header = parse_request_header(data, flexible)
    except HeaderError:
        return
    assert 0 <= header.body_offset <= len(data)


@pytest.mark.parametrize(
    "data",
    [
        b"",
        b"\x00\x12\x00\x03",  # ids cut short
        b"\x00\x12\x00\x03\x00\x00\x00\x01\x00\x05ab",  # client id cut short
        b"\x00\x12\x00\x03\x00\x00\x00\x01\xff\xfe",  # client id length -2
    ],
)
def test_truncated_headers_are_refused(data: bytes) -> None:
    with pytest.raises(HeaderError):
        parse_request_header(data, flexible=False)


def test_tagged_fields_cut_short_or_too_many_are_refused() -> None:
    base = _header(18, 3, 1, "c")
    for tail in (b"", b"\x01", b"\x01\x00\x05ab", _uvarint(1000)):
        with pytest.raises(HeaderError):
            parse_request_header(base + tail, flexible=True)


@given(st.integers(0, 2**32 - 1))
def test_uvarint_round_trip(value: int) -> None:
    encoded = _uvarint(value)
    assert read_uvarint(encoded, 0) == (value, len(encoded))


def test_uvarint_longer_than_five_bytes_is_refused() -> None:
    with pytest.raises(HeaderError):
        read_uvarint(b"\xff\xff\xff\xff\xff\x01", 0)


def test_response_headers() -> None:
    assert response_header(7, flexible=False) == b"\x00\x00\x00\x07"
    assert response_header(7, flexible=True) == b"\x00\x00\x00\x07\x00"


@given(st.integers(REQUEST_HEADER_BYTES_MIN, 1000))
def test_frame_size_round_trip(size: int) -> None:
    assert frame_size(size_prefix(size), max_frame_bytes=1000) == size


@pytest.mark.parametrize("size", [-1, 0, REQUEST_HEADER_BYTES_MIN - 1, 1001, 2**31 - 1])
def test_frame_sizes_out_of_bounds_are_refused(size: int) -> None:
    with pytest.raises(FrameError):
        frame_size(size_prefix(size), max_frame_bytes=1000)


def test_frame_size_needs_four_bytes() -> None:
    with pytest.raises(FrameError):
        frame_size(b"\x00\x00\x10")
