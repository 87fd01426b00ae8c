"""The consumer's columns: decoding fetched batches into columns (both codecs), and the
fetch buffer's ``take_batch`` against ``take`` (what ``poll_batch`` and ``poll`` return)."""

from __future__ import annotations

import contextlib

from hypothesis import given, settings
from hypothesis import strategies as st

from conveyor.client.fetch_buffer import FetchBuffer
from conveyor.client.types import Message, TopicPartition, messages_from_records
from conveyor.protocol.batch import HEADER_SIZE
from conveyor.protocol.errors import CorruptBatchError
from conveyor.protocol.fastrecords import compiled_available
from conveyor.protocol.record_columns import (
    RecordColumns,
    decode_columns,
    decode_columns_compiled,
)
from conveyor.protocol.records import BatchBuilder, decode_batches
from tests.unit.client.test_fetch_buffer import columns_of

PAIRS = st.lists(
    st.tuples(st.text(max_size=4), st.one_of(st.none(), st.binary(max_size=4))), max_size=2
)
RECORD = st.tuples(
    st.one_of(st.none(), st.binary(max_size=20)),  # key
    st.one_of(st.none(), st.binary(max_size=40)),  # value
    PAIRS,  # headers
    st.integers(0, 2**40),  # timestamp
)


def batch_bytes(records: list[tuple[bytes | None, bytes | None, list, int]], base: int) -> bytes:
    builder = BatchBuilder()
    for key, value, headers, timestamp_ms in records:
        builder.append(value, key, headers, timestamp_ms)
    return builder.build(base_offset=base)


def as_rows(columns: RecordColumns) -> list[tuple[object, ...]]:
    return [
        (o, t, k, v, tuple(tuple(p) for p in h))
        for o, t, k, v, h in zip(
            columns.offsets,
            columns.timestamps_ms,
            columns.keys,
            columns.values,
            columns.headers,
            strict=True,
        )
    ]


@settings(max_examples=80, deadline=None)
@given(
    batches=st.lists(st.lists(RECORD, min_size=1, max_size=8), min_size=1, max_size=4),
    start=st.integers(0, 40),
)
def test_both_codecs_decode_the_same_columns_as_the_records(
    batches: list[list[tuple[bytes | None, bytes | None, list, int]]], start: int
) -> None:
    data = b""
    base = 0
    for records in batches:
        data += batch_bytes(records, base)
        base += len(records)
    expected = messages_from_records("t", 0, decode_batches(data, start_offset=start))
    want = [(m.offset, m.timestamp_ms, m.key, m.value, m.headers) for m in expected]
    assert as_rows(decode_columns(data, start_offset=start)) == want
    if compiled_available():
        assert as_rows(decode_columns_compiled(data, start_offset=start)) == want


def fill(buffer: FetchBuffer, chunks: list[tuple[int, list[Message]]]) -> None:
    for partition, messages in chunks:
        tp = TopicPartition("t", partition)
        buffer.add(
            tp,
            1,
            columns_of(messages),
            next_offset=messages[-1].offset + 1,
            size_bytes=len(messages),
            reserved_bytes=0,
            high_watermark=None,
        )


def new_buffer(partitions: int) -> FetchBuffer:
    buffer = FetchBuffer(buffer_max_bytes=1 << 30, fetch_max_bytes=1)
    buffer.assign([TopicPartition("t", p) for p in range(partitions)])
    for p in range(partitions):
        buffer.seek(TopicPartition("t", p), 0)  # generation 1
    return buffer


@settings(max_examples=80, deadline=None)
@given(
    data=st.data(),
    partitions=st.integers(1, 3),
    takes=st.lists(st.integers(1, 12), min_size=1, max_size=30),
)
def test_take_batch_returns_what_take_would_as_columns(
    data: st.DataObject, partitions: int, takes: list[int]
) -> None:
    """Two buffers fed the same chunks (offset gaps, headers or not): take_batch's rows,
    run by run, are take's messages, and both leave the same positions behind."""
    chunks: list[tuple[int, list[Message]]] = []
    next_offset = [0] * partitions
    for _ in range(data.draw(st.integers(1, 6))):
        partition = data.draw(st.integers(0, partitions - 1))
        messages = []
        for record in data.draw(st.lists(RECORD, min_size=1, max_size=6)):
            key, value, headers, timestamp_ms = record
            next_offset[partition] += data.draw(st.integers(0, 2))  # compaction's gaps
            pairs = tuple((name, item) for name, item in headers)
            offset = next_offset[partition]
            messages.append(Message("t", partition, offset, key, value, pairs, timestamp_ms))
            next_offset[partition] += 1
        chunks.append((partition, messages))
    by_take, by_batch = new_buffer(partitions), new_buffer(partitions)
    fill(by_take, chunks)
    fill(by_batch, chunks)
    for limit in takes:
        messages = by_take.take(limit)
        batch = by_batch.take_batch(limit, headers=True)
        assert batch.messages() == messages
        assert len(batch) == len(messages) <= limit
        assert sum(run.stop - run.start for run in batch.runs) == len(batch)
        for run in batch.runs:
            assert batch.offsets[run.start : run.stop] == sorted(
                batch.offsets[run.start : run.stop]
            )
        for p in range(partitions):
            tp = TopicPartition("t", p)
            assert by_take.position(tp) == by_batch.position(tp)
        without = new_buffer(1).take_batch(limit)
        assert without.headers is None and not without


@settings(max_examples=150, deadline=None)
@given(
    records=st.lists(RECORD, min_size=1, max_size=6),
    flips=st.lists(st.tuples(st.integers(0, 10_000), st.integers(1, 255)), min_size=1, max_size=4),
)
def test_a_mangled_batch_decodes_or_raises_corrupt_batch(
    records: list[tuple[bytes | None, bytes | None, list, int]], flips: list[tuple[int, int]]
) -> None:
    """Bytes of the records changed (CRC not checked): the columns decoder returns
    records or raises CorruptBatchError, never another error."""
    data = bytearray(batch_bytes(records, 0))
    for at, xor in flips:
        data[HEADER_SIZE + at % (len(data) - HEADER_SIZE)] ^= xor
    for decode in (decode_columns, decode_columns_compiled):
        with contextlib.suppress(CorruptBatchError):
            decode(bytes(data), verify_crc=False)
