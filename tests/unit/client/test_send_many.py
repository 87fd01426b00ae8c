"""``Accumulator.append_many`` and ``send_many``'s result, with real batch completions and
builders and no I/O: batches are drained and completed by hand, and each record's offset
in the result is checked against the offset it really got in its decoded batch."""

from __future__ import annotations

import threading
from collections.abc import Sequence

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from conveyor.client.accumulator import Accumulator, BufferFull, ProducerBatch
from conveyor.client.futures import BatchCompletion, RecordFuture
from conveyor.client.hooks import SendHooks
from conveyor.client.partitioner import KeyPartitioner
from conveyor.client.send_many import ManySend, SendManyError, SendManyFuture, prepare_many
from conveyor.protocol.errors import ConveyorError, ErrorCode, InvalidRequestError
from conveyor.protocol.records import Codec, decode_batches

TOPIC = "t"
COUNT = 4


class Log:
    """An accumulator and the partitions' logs that completed batches are 'written' to."""

    def __init__(self, *, batch_size_bytes: int = 2000, buffer_memory_bytes: int = 1 << 20):
        self.acc: Accumulator[BatchCompletion, RecordFuture] = Accumulator(
            batch_size_bytes=batch_size_bytes,
            linger_ms=0,
            buffer_memory_bytes=buffer_memory_bytes,
            delivery_timeout_ms=10**9,
            codec=Codec.NONE,
            lock=threading.Lock(),
            new_completion=BatchCompletion,
            new_future=RecordFuture,
            wake_sender=lambda: None,
            on_space=lambda: None,
        )
        self.ends = [0] * COUNT
        self.written: dict[bytes | None, tuple[int, int]] = {}  # value -> (partition, offset)

    def send_many(self, many: ManySend, *, chunk_records: int = 4096) -> None:
        many.partition_count = COUNT
        while not many.finished:
            start = many.next_index
            many.next_index = self.acc.append_many(
                TOPIC,
                many.values,
                many.keys,
                many.partitions,
                COUNT,
                1_000,
                many.next_index,
                many.runs,
                chunk_records=chunk_records,
            )
            if many.next_index == start:  # the buffer is full: make room
                self.settle()

    def append_other(self) -> None:
        """Append one record as send() does: on a full buffer, make room and retry."""
        try:
            self.acc.append(TOPIC, None, b"other", (), None, COUNT, 0)
        except BufferFull:
            self.settle()
            self.acc.append(TOPIC, None, b"other", (), None, COUNT, 0)

    def settle(self, fail: set[int] | None = None) -> None:
        """Send everything: complete each batch (or fail those of ``fail``'s partitions)."""
        self.acc.begin_flush()
        while True:
            ready = self.acc.drain(10**6).ready
            if not ready:
                break
            for batch in ready:
                self._finish(batch, fail or set())
        self.acc.end_flush()

    def _finish(self, batch: ProducerBatch[BatchCompletion], fail: set[int]) -> None:
        payload = batch.build()
        self.acc.complete(batch)
        if batch.partition in fail:
            batch.completion.fail(ConveyorError("disk full", code=ErrorCode.DISK_FULL))
            return
        base = self.ends[batch.partition]
        records = decode_batches(payload)
        for record in records:
            self.written[record.value] = (batch.partition, base + record.offset)
        self.ends[batch.partition] += len(records)
        batch.completion.complete(base)


def values_of(count: int, size: int = 40) -> list[bytes]:
    return [f"{i:08d}".encode().ljust(size, b".") for i in range(count)]


def test_keyed_records_go_where_send_puts_them_in_order() -> None:
    log = Log()
    values = values_of(500)
    keys = [f"key-{i % 7}".encode() for i in range(500)]
    many = ManySend(TOPIC, values, keys, None, None)
    log.send_many(many, chunk_records=64)
    future = many.future()
    log.settle()
    result = future.result(0)
    keyed = KeyPartitioner()
    assert result.partitions() == [keyed.partition(k, COUNT) for k in keys]
    assert result.offsets() == [log.written[v][1] for v in values]
    assert [log.written[v][0] for v in values] == result.partitions()
    for partition in range(COUNT):  # per partition, the order given
        mine = [
            log.written[v][1]
            for v, p in zip(values, result.partitions(), strict=True)
            if p == partition
        ]
        assert mine == sorted(mine)
    assert result.written_count == 500 and result.failed_count == 0
    assert sum(run.records_count for run in result.runs) == 500


def test_sticky_records_fill_a_batch_then_move_on() -> None:
    log = Log(batch_size_bytes=1000)
    values = values_of(100)
    many = ManySend(TOPIC, values, None, None, None)
    log.send_many(many)
    future = many.future()
    log.settle()
    result = future.result(0)
    assert result.offsets() == [log.written[v][1] for v in values]
    assert result.partitions() == [log.written[v][0] for v in values]
    assert len(result.runs) > 1  # 100 x ~72 B do not fit one 1000 B batch
    assert len({run.partition for run in result.runs[:2]}) == 2


def test_a_full_buffer_stops_the_call_and_it_goes_on_from_there() -> None:
    log = Log(batch_size_bytes=1000, buffer_memory_bytes=1000)
    values = values_of(300)
    many = ManySend(TOPIC, values, None, 2, None)
    log.send_many(many)  # settles whenever the buffer is full
    future = many.future()
    log.settle()
    result = future.result(0)
    assert result.offsets() == list(range(300))
    assert {run.partition for run in result.runs} == {2}


def test_other_records_between_chunks_split_the_runs() -> None:
    log = Log()
    values = values_of(10)
    many = ManySend(TOPIC, values, None, 1, None)
    many.partition_count = COUNT
    many.next_index = log.acc.append_many(
        TOPIC, values, None, 1, COUNT, 0, 0, many.runs, chunk_records=4
    )
    log.acc.append(TOPIC, None, b"someone else", (), 1, COUNT, 0)
    many.next_index = log.acc.append_many(TOPIC, values, None, 1, COUNT, 0, 4, many.runs)
    future = many.future()
    log.settle()
    result = future.result(0)
    assert [run.records_count for run in result.runs] == [4, 6]
    assert result.offsets() == [0, 1, 2, 3, 5, 6, 7, 8, 9, 10]


def test_a_run_goes_on_across_chunks_when_nothing_came_between() -> None:
    log = Log()
    many = ManySend(TOPIC, values_of(10), None, 1, None)
    log.send_many(many, chunk_records=3)
    assert [run.count for run in many.runs.runs] == [10]


def test_partial_failure_names_the_runs_not_written() -> None:
    log = Log(batch_size_bytes=600)
    values = values_of(200)
    keys = [b"a", b"b", b"c", b"d"] * 50
    many = ManySend(TOPIC, values, keys, None, None)
    log.send_many(many)
    future = many.future()
    failed_partition = KeyPartitioner().partition(b"a", COUNT)
    log.settle(fail={failed_partition})
    with pytest.raises(SendManyError) as caught:
        future.result(0)
    result = caught.value.result
    assert caught.value.code is ErrorCode.DISK_FULL
    lost = [key for key in keys if KeyPartitioner().partition(key, COUNT) == failed_partition]
    assert result.failed_count == len(lost) < 200 and result.written_count == 200 - len(lost)
    offsets = result.offsets()
    for value, partition, offset in zip(values, result.partitions(), offsets, strict=True):
        if partition == failed_partition:
            assert offset == -1 and value not in log.written
        else:
            assert offset == log.written[value][1]
    assert all(run.error is not None for run in result.runs if run.partition == failed_partition)


def test_bad_input_is_refused_before_anything_is_appended() -> None:
    hooks = SendHooks()
    with pytest.raises(InvalidRequestError, match="2 keys for 3 values"):
        prepare_many(hooks, TOPIC, [b"a", b"b", b"c"], [b"k", b"k"], None, None)
    with pytest.raises(InvalidRequestError, match="key is None"):
        prepare_many(hooks, TOPIC, [b"a", b"b"], [b"k", None], None, None)
    with pytest.raises(InvalidRequestError, match="not bytes or str"):
        prepare_many(hooks, TOPIC, [b"a", 3], None, None, None)
    many = prepare_many(hooks, TOPIC, ["text", None], ["k", b"k"], None, None)
    assert list(many.values) == [b"text", None] and list(many.keys or ()) == [b"k", b"k"]
    with pytest.raises(InvalidRequestError, match="not 9"):
        prepare_many(hooks, TOPIC, [b"a"], None, 9, None).bind(COUNT, hooks, lambda t: [])


def test_the_custom_partitioner_chooses_each_record() -> None:
    hooks = SendHooks(partitioner=lambda key, all_, up: 3 if key == b"x" else 0)
    many = prepare_many(hooks, TOPIC, values_of(4), [b"x", b"y", b"x", b"y"], None, None)
    many.bind(COUNT, hooks, lambda topic: [0, 1, 2, 3])
    log = Log()
    log.send_many(many)
    future = many.future()
    log.settle()
    assert future.result(0).partitions() == [3, 0, 3, 0]


def test_an_empty_call_is_done_at_once() -> None:
    future = ManySend(TOPIC, [], None, None, None).future()
    assert future.done() and future.result(0).count == 0
    seen: list[SendManyFuture] = []
    future.add_done_callback(seen.append)
    assert seen == [future]


@settings(max_examples=60, deadline=None)
@given(
    sizes=st.lists(st.integers(0, 300), min_size=1, max_size=120),
    key_count=st.integers(0, 5),
    batch_size_bytes=st.integers(200, 3000),
    chunk_records=st.integers(1, 50),
    others=st.lists(st.integers(0, 119), max_size=5),
)
def test_every_record_offset_matches_the_log(
    sizes: list[int],
    key_count: int,
    batch_size_bytes: int,
    chunk_records: int,
    others: list[int],
) -> None:
    """Any mix of sizes, keys, batch sizes and chunks, with other records appended between
    chunks: each record's reported (partition, offset) is where it was written."""
    log = Log(batch_size_bytes=batch_size_bytes, buffer_memory_bytes=batch_size_bytes * 3)
    values = [f"{i:06d}".encode() + b"x" * size for i, size in enumerate(sizes)]
    keys: Sequence[bytes] | None = None
    if key_count:
        keys = [bytes([i % key_count]) for i in range(len(values))]
    many = ManySend(TOPIC, values, keys, None, None)
    many.partition_count = COUNT
    while not many.finished:
        if many.next_index in others:
            log.append_other()
        start = many.next_index
        many.next_index = log.acc.append_many(
            TOPIC, values, keys, None, COUNT, 0, start, many.runs, chunk_records=chunk_records
        )
        if many.next_index == start:
            log.settle()
    future = many.future()
    log.settle()
    result = future.result(0)
    assert result.offsets() == [log.written[v][1] for v in values]
    assert result.partitions() == [log.written[v][0] for v in values]
