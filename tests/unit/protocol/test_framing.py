"""The multi-partition produce framing: what is encoded decodes to the same parts, and
any inconsistent body is a 400, never an exception of another kind."""

from __future__ import annotations

import contextlib
import struct

import pytest
from hypothesis import given
from hypothesis import strategies as st

from conveyor.protocol.errors import InvalidRequestError
from conveyor.protocol.framing import decode_produce_many, encode_produce_many

parts_strategy = st.dictionaries(
    st.integers(0, 10_000), st.binary(min_size=1, max_size=300), min_size=1, max_size=20
).map(lambda d: list(d.items()))


@given(parts_strategy)
def test_round_trip(parts: list[tuple[int, bytes]]) -> None:
    decoded = decode_produce_many(encode_produce_many(parts))
    assert [(p, bytes(b)) for p, b in decoded] == parts


@given(parts_strategy, st.data())
def test_cut_or_padded_bodies_are_refused(
    parts: list[tuple[int, bytes]], data: st.DataObject
) -> None:
    body = encode_produce_many(parts)
    cut = data.draw(st.integers(0, len(body) - 1))
    with pytest.raises(InvalidRequestError):
        decode_produce_many(body[:cut])
    with pytest.raises(InvalidRequestError):
        decode_produce_many(body + b"x")


@given(st.binary(max_size=200))
def test_garbage_is_a_typed_error(body: bytes) -> None:
    with contextlib.suppress(InvalidRequestError):  # anything else fails the test
        decode_produce_many(body)


@pytest.mark.parametrize(
    "header",
    [
        b'{"partitions": []}',
        b'{"partitions": [{"partition": -1, "size_bytes": 1}]}',
        b'{"partitions": [{"partition": 0, "size_bytes": 0}]}',
        b'{"partitions": [{"partition": 0, "size_bytes": 1}, {"partition": 0, "size_bytes": 1}]}',
        b'{"partitions": "no"}',
    ],
)
def test_bad_headers_are_refused(header: bytes) -> None:
    with pytest.raises(InvalidRequestError):
        decode_produce_many(struct.pack(">I", len(header)) + header + b"xx")
