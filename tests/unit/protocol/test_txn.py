"""The reading side of read_committed (issue 21): dropping aborted transactions' batches
from a fetch answer, and the aborted-transactions header's parser."""

from __future__ import annotations

import contextlib

import pytest
from hypothesis import given
from hypothesis import strategies as st

from conveyor.protocol.batch import CRC_START, TRANSACTIONAL_BIT, crc32c
from conveyor.protocol.errors import InvalidRequestError
from conveyor.protocol.records import BatchBuilder, decode_batches
from conveyor.protocol.txn import (
    decode_aborted,
    encode_aborted,
    marker_batch,
    without_aborted,
)


def _at(batch: bytes, base_offset: int) -> bytes:
    return base_offset.to_bytes(8, "big") + batch[8:]


def _txn(producer_id: int, value: bytes, base_offset: int) -> bytes:
    builder = BatchBuilder(producer_id=producer_id, producer_epoch=0, base_sequence=0)
    builder.append(value, timestamp_ms=1)
    batch = bytearray(builder.build())
    batch[22] |= TRANSACTIONAL_BIT
    batch[17:21] = crc32c(memoryview(batch)[CRC_START:]).to_bytes(4, "big")
    return _at(bytes(batch), base_offset)


def test_only_the_aborted_transactions_batches_are_dropped() -> None:
    log = b"".join(
        [
            _txn(1, b"committed", 0),
            _txn(2, b"aborted", 1),
            _at(marker_batch(1, 0, True, 0, 1), 2),
            _at(marker_batch(2, 0, False, 0, 1), 3),
            _txn(2, b"next", 4),  # producer 2's next transaction: not the aborted one
        ]
    )
    visible = without_aborted(log, [(2, 1)])
    assert [r.value for r in decode_batches(visible)] == [b"committed", b"next"]
    assert [r.value for r in decode_batches(without_aborted(log, []))] == [
        b"committed",
        b"aborted",
        b"next",
    ]


def test_the_header_round_trips_and_refuses_garbage() -> None:
    assert decode_aborted(encode_aborted([(7, 10), (8, 0)])) == [(7, 10), (8, 0)]
    assert decode_aborted("") == []
    with pytest.raises(InvalidRequestError):
        decode_aborted("7:x")


@given(st.text(max_size=60))
def test_the_header_parser_raises_only_typed_errors(text: str) -> None:
    with contextlib.suppress(InvalidRequestError):
        decode_aborted(text)


@given(st.binary(max_size=200), st.lists(st.tuples(st.integers(0, 9), st.integers(0, 99))))
def test_dropping_never_raises_on_garbage(data: bytes, aborted: list[tuple[int, int]]) -> None:
    assert len(without_aborted(data, aborted)) <= len(data)
