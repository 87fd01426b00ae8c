"""The accumulator's batching rules, driven with a manual clock (no I/O, no threads)."""

from __future__ import annotations

import sys
import threading
from collections.abc import Sequence

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from conveyor.client.accumulator import (
    Accumulator,
    AccumulatorClosed,
    BufferFull,
    ProducerBatch,
)
from conveyor.client.append_runs import AppendRuns
from conveyor.protocol.errors import InvalidRequestError
from conveyor.protocol.fastrecords import COMPILED, PYTHON, compiled_available
from conveyor.protocol.records import Codec, decode_batches

Batch = ProducerBatch[str]
Acc = Accumulator[str, tuple[str, int]]


class Harness:
    """An accumulator whose completions are names and whose futures are (name, index)."""

    def __init__(self, **settings: int) -> None:
        self.wakes = 0
        self.spaces = 0
        self.created = 0
        options = {
            "batch_size_bytes": 1000,
            "linger_ms": 5,
            "buffer_memory_bytes": 10_000,
            "delivery_timeout_ms": 1_000,
        }
        options.update(settings)
        self.acc: Acc = Accumulator(
            codec=Codec.NONE,
            lock=threading.Lock(),
            new_completion=self._completion,
            new_future=lambda completion, index: (completion, index),
            wake_sender=self._wake,
            on_space=self._space,
            **options,
        )

    def _completion(self, topic: str, partition: int) -> str:
        self.created += 1
        return f"{topic}-{partition}-#{self.created}"

    def _wake(self) -> None:
        self.wakes += 1

    def _space(self) -> None:
        self.spaces += 1

    def send(
        self,
        value: bytes = b"v" * 10,
        key: bytes | None = b"k",
        *,
        partition: int | None = 0,
        now_ms: int = 0,
        topic: str = "t",
        count: int = 4,
    ) -> tuple[str, int]:
        return self.acc.append(topic, key, value, (), partition, count, now_ms)


def test_records_of_a_partition_share_one_batch_until_linger() -> None:
    h = Harness()
    assert h.send() == ("t-0-#1", 0)
    assert h.send(now_ms=1) == ("t-0-#1", 1)
    drained = h.acc.drain(now_ms=4)
    assert drained.ready == [] and drained.next_ms == 5
    drained = h.acc.drain(now_ms=5)
    assert [b.completion for b in drained.ready] == ["t-0-#1"]
    assert drained.ready[0].records_count == 2


def test_a_full_batch_is_sealed_and_ready_at_once() -> None:
    h = Harness(batch_size_bytes=300, linger_ms=10_000)
    futures = [h.send(value=b"x" * 50) for _ in range(8)]
    batches = {name for name, _ in futures}
    assert len(batches) >= 2  # the size limit opened a second batch
    drained = h.acc.drain(now_ms=0)
    assert len(drained.ready) == 1  # one in flight per partition, even with two ready
    first = drained.ready[0]
    assert first.size_bytes <= 300
    payload = first.build()
    assert len(payload) == first.size_bytes
    assert len(decode_batches(payload)) == first.records_count


def test_a_record_larger_than_batch_size_goes_alone() -> None:
    h = Harness(batch_size_bytes=200, buffer_memory_bytes=10_000)
    h.send(value=b"a")
    name, index = h.send(value=b"b" * 500)
    assert index == 0 and name == "t-0-#2"
    assert h.send(value=b"c")[0] == "t-0-#3"


def test_one_batch_in_flight_per_partition_and_retry_keeps_order() -> None:
    h = Harness(batch_size_bytes=150, linger_ms=0)
    for _ in range(6):
        h.send(value=b"y" * 40)
    first = h.acc.drain(now_ms=0).ready
    assert len(first) == 1
    assert h.acc.drain(now_ms=0).ready == []  # partition 0 is busy
    h.acc.retry(first[0], retry_at_ms=100)
    assert h.acc.drain(now_ms=50).ready == []  # backing off; nothing overtakes it
    again = h.acc.drain(now_ms=100).ready
    assert again == first and first[0].attempts == 1
    h.acc.complete(first[0])
    nxt = h.acc.drain(now_ms=100).ready
    assert len(nxt) == 1 and nxt[0] is not first[0]
    assert nxt[0].completion > first[0].completion  # the next batch in append order


def test_partitions_drain_independently() -> None:
    h = Harness(linger_ms=0)
    h.send(partition=0)
    h.send(partition=1)
    ready = h.acc.drain(now_ms=0).ready
    assert sorted(b.partition for b in ready) == [0, 1]


def test_a_ready_batch_takes_its_brokers_lingering_batches_along() -> None:
    """Kafka's drain: partitions 0-2 on broker "a", 3 on "b"; when partition 0's batch is
    ready, 1 and 2 (lingering, same broker) go with it, 3 waits for its own linger, and a
    batch of "a" backing off after a failure keeps its backoff."""
    h = Harness(linger_ms=10)
    leaders = {0: "a", 1: "a", 2: "a", 3: "b", 4: "a"}

    def node_of(topic: str, partition: int) -> str:
        return leaders[partition]

    h.send(partition=4, now_ms=0, count=5)
    failed = h.acc.drain(now_ms=10, node_of=node_of).ready
    h.acc.retry(failed[0], retry_at_ms=100)
    h.send(partition=0, now_ms=1, count=5)
    for partition in (1, 2, 3):
        h.send(partition=partition, now_ms=8, count=5)
    assert h.acc.drain(now_ms=10, node_of=node_of).ready == []  # nothing ready yet
    drained = h.acc.drain(now_ms=11, node_of=node_of)
    assert sorted(b.partition for b in drained.ready) == [0, 1, 2]
    assert drained.next_ms is not None and drained.next_ms <= 18
    # without node_of, each partition waits for its own linger (the old drain)
    plain = Harness(linger_ms=10)
    plain.send(partition=0, now_ms=1)
    plain.send(partition=1, now_ms=8)
    assert [b.partition for b in plain.acc.drain(now_ms=11).ready] == [0]
    assert sorted(b.partition for b in h.acc.drain(now_ms=18, node_of=node_of).ready) == [3]


def test_wake_once_per_drain_when_batches_open() -> None:
    h = Harness()
    h.send(partition=0)
    h.send(partition=1)
    assert h.wakes == 1  # the sender is already asked to look
    h.acc.drain(now_ms=0)
    h.send(partition=2)
    assert h.wakes == 2


def test_buffer_full_refuses_new_batches_until_space() -> None:
    h = Harness(batch_size_bytes=200, buffer_memory_bytes=400, linger_ms=0)
    with pytest.raises(BufferFull):
        for _ in range(100):
            h.send(value=b"z" * 90)
    assert not h.acc.has_room
    batch = h.acc.drain(now_ms=0).ready[0]
    h.acc.complete(batch)
    assert h.spaces >= 1 and h.acc.has_room
    h.send(value=b"z" * 90)


def test_batches_expire_after_delivery_timeout() -> None:
    h = Harness(linger_ms=0, delivery_timeout_ms=100)
    h.send(partition=0)
    h.send(partition=1)
    in_flight = h.acc.drain(now_ms=0).ready
    h.acc.retry(in_flight[0], retry_at_ms=200)
    drained = h.acc.drain(now_ms=150)
    assert [b.partition for b in drained.expired] == [in_flight[0].partition]
    assert h.acc.incomplete_count == 1  # the other is still in flight: it never expires


def test_flush_makes_lingering_batches_ready_and_lists_pending() -> None:
    h = Harness(linger_ms=10_000)
    h.send(partition=0)
    h.send(partition=1)
    pending = h.acc.begin_flush()
    assert sorted(pending) == ["t-0-#1", "t-1-#2"]
    assert len(h.acc.drain(now_ms=0).ready) == 2
    h.acc.end_flush()


def test_close_refuses_new_batches_and_hurries_open_ones() -> None:
    h = Harness(linger_ms=10_000)
    h.send()
    h.acc.close()
    assert len(h.acc.drain(now_ms=0).ready) == 1
    with pytest.raises(AccumulatorClosed):
        h.send(partition=1)


def test_abort_all_keeps_only_what_is_in_flight() -> None:
    h = Harness(batch_size_bytes=150, linger_ms=0)
    for _ in range(6):
        h.send(value=b"y" * 40)
    in_flight = h.acc.drain(now_ms=0).ready
    aborted = h.acc.abort_all()
    assert aborted and in_flight[0] not in aborted
    assert h.acc.incomplete_count == 1


def test_explicit_partition_out_of_range_is_rejected() -> None:
    h = Harness()
    with pytest.raises(InvalidRequestError):
        h.send(partition=4, count=4)


def test_a_backwards_clock_does_not_make_a_batch_linger() -> None:
    h = Harness(linger_ms=1_000)
    h.send(now_ms=10_000)
    assert len(h.acc.drain(now_ms=9_000).ready) == 1


def test_keyed_records_follow_the_key_partitioner() -> None:
    from conveyor.protocol.partitioner import partition_for_key

    h = Harness()
    for key in (b"a", b"b", b"user-42"):
        name, _ = h.send(key=key, partition=None, count=8)
        assert name.split("-")[1] == str(partition_for_key(key, 8))


def test_unkeyed_records_stick_until_their_batch_is_drained() -> None:
    h = Harness(linger_ms=0)
    first = {h.send(key=None, partition=None)[0] for _ in range(3)}
    assert len(first) == 1  # all on one partition, in one batch
    h.acc.drain(now_ms=0)  # that batch leaves: the next record moves on
    second = h.send(key=None, partition=None)[0]
    (first_name,) = first
    assert second.split("-")[1] == str((int(first_name.split("-")[1]) + 1) % 4)


def test_unkeyed_records_move_on_when_the_batch_fills() -> None:
    h = Harness(batch_size_bytes=400, linger_ms=10_000)
    names = [h.send(value=b"q" * 60, key=None, partition=None)[0] for _ in range(12)]
    partitions = [name.split("-")[1] for name in names]
    assert len(set(partitions)) >= 2
    assert partitions == sorted(partitions, key=partitions.index)  # contiguous runs
    assert len(set(names)) == len(set(partitions))  # one batch per partition visited


def test_each_partition_finds_its_own_open_batch() -> None:
    """Open batches are looked up by topic, then partition: partitions opened out of
    order, one past all others, a sealed one and another topic keep apart."""
    h = Harness(linger_ms=10_000)
    assert h.send(partition=2) == ("t-2-#1", 0)
    assert h.send(partition=0) == ("t-0-#2", 0)
    assert h.send(partition=3, count=8) == ("t-3-#3", 0)  # the topic grew
    assert h.send(partition=2) == ("t-2-#1", 1)
    assert h.send(partition=2, topic="u") == ("u-2-#4", 0)
    h.acc.begin_flush()
    assert {b.completion for b in h.acc.drain(now_ms=0).ready} == {
        "t-0-#2",
        "t-2-#1",
        "t-3-#3",
        "u-2-#4",
    }
    h.acc.end_flush()
    assert h.send(partition=2) == ("t-2-#5", 0)  # after a seal: a new batch
    assert h.send(partition=1) == ("t-1-#6", 0)
    assert h.send(partition=0) == ("t-0-#7", 0)


def test_build_releases_the_builder_and_is_stable() -> None:
    h = Harness(linger_ms=0)
    h.send(value=b"hello", key=b"k")
    batch: Batch = h.acc.drain(now_ms=0).ready[0]
    builder = batch.builder
    payload = batch.build()
    assert batch.builder is None and batch.build() is payload
    assert sys.getrefcount(builder) == 2  # only ``builder`` and the call's argument
    (record,) = decode_batches(payload)
    assert (record.key, record.value) == (b"k", b"hello")


Spec = tuple[bytes | None, bytes | None, Sequence[tuple[str, bytes | None]], int | None]
needs_compiled = pytest.mark.skipif(
    not compiled_available(), reason="aiokafka's compiled extension is not installed"
)


def _compiled_accumulator() -> Acc:
    return Accumulator(
        batch_size_bytes=1 << 20,
        linger_ms=0,
        buffer_memory_bytes=1 << 21,
        delivery_timeout_ms=1_000,
        codec=Codec.NONE,
        lock=threading.Lock(),
        new_completion=lambda topic, partition: "batch",
        new_future=lambda completion, index: (completion, index),
        wake_sender=lambda: None,
        on_space=lambda: None,
        new_builder=COMPILED.new_builder,
    )


def _compiled_batch(specs: list[Spec], now_ms: int = 50) -> tuple[list[int], bytes]:
    """``specs`` appended to partition 0 through ``append`` with the compiled codec (its
    record lane after the first record): the futures' indexes and the built batch."""
    acc = _compiled_accumulator()
    indexes = [
        acc.append("t", key, value, headers, 0, 1, now_ms, timestamp_ms)[1]
        for key, value, headers, timestamp_ms in specs
    ]
    (batch,) = acc.drain(now_ms=now_ms).ready
    assert batch.records_count == len(specs)
    return indexes, batch.build()


def _pure_batch(specs: list[Spec], now_ms: int = 50) -> bytes:
    builder = PYTHON.new_builder(Codec.NONE)
    for key, value, headers, timestamp_ms in specs:
        builder.append(value, key, headers, now_ms if timestamp_ms is None else timestamp_ms)
    return builder.build()


@needs_compiled
@settings(max_examples=150)
@given(
    specs=st.lists(
        st.tuples(
            st.none() | st.binary(max_size=16),
            st.none() | st.binary(max_size=200),
            st.lists(st.tuples(st.text(max_size=6), st.none() | st.binary(max_size=8)), max_size=3),
            st.none() | st.integers(min_value=-1, max_value=2**43),
        ),
        min_size=1,
        max_size=40,
    )
)
def test_property_the_compiled_fast_path_builds_the_pure_builders_bytes(
    specs: list[Spec],
) -> None:
    """Records appended through ``append``'s fast path (the compiled builder's record lane:
    its count, max timestamp and encode done inline) give the pure builder's batch, byte
    for byte, and each future its offset delta."""
    indexes, batch = _compiled_batch(specs)
    assert indexes == list(range(len(specs)))
    assert batch == _pure_batch(specs)


@needs_compiled
def test_a_record_the_fast_path_cannot_encode_is_a_typed_error_and_appends_nothing() -> None:
    acc = _compiled_accumulator()
    assert acc.append("t", b"k", b"a", (), 0, 1, 50, 5) == ("batch", 0)
    bad_header = [("\ud800", b"x")]  # a name UTF-8 cannot encode
    with pytest.raises(InvalidRequestError, match="cannot be encoded"):
        acc.append("t", b"k", b"v", bad_header, 0, 1, 50, 99)
    assert acc.append("t", b"k", b"b", (), 0, 1, 50, 9) == ("batch", 1)
    (batch,) = acc.drain(now_ms=50).ready
    assert batch.build() == _pure_batch([(b"k", b"a", (), 5), (b"k", b"b", (), 9)])


@needs_compiled
def test_build_releases_the_compiled_builder_and_its_lane() -> None:
    acc = _compiled_accumulator()
    for value in (b"a", b"b", b"c"):  # the second and third through the lane
        acc.append("t", b"k", value, (), 0, 1, 50)
    (batch,) = acc.drain(now_ms=50).ready
    builder = batch.builder
    batch.build()
    assert batch.lane is None and sys.getrefcount(builder) == 2


@needs_compiled
@settings(max_examples=100)
@given(
    records=st.lists(
        st.tuples(st.none() | st.binary(max_size=16), st.none() | st.binary(max_size=200)),
        min_size=1,
        max_size=40,
    ),
    chunk=st.integers(min_value=1, max_value=8),
)
def test_property_append_many_through_the_record_lane_builds_the_pure_builders_bytes(
    records: list[tuple[bytes | None, bytes | None]], chunk: int
) -> None:
    """``append_many`` appends through the compiled builder's record lane too (after each
    batch's first record), in chunks: the batch is the pure builder's, byte for byte."""
    acc = _compiled_accumulator()
    keys = [key for key, _ in records]
    values = [value for _, value in records]
    runs: AppendRuns[str] = AppendRuns()
    start = 0
    while start < len(records):
        start = acc.append_many("t", values, keys, 0, 1, 50, start, runs, chunk_records=chunk)
    (batch,) = acc.drain(now_ms=50).ready
    assert batch.records_count == len(records)
    assert batch.build() == _pure_batch([(key, value, (), None) for key, value in records])


def test_only_full_batches_pipeline_a_filling_one_waits_for_the_answers() -> None:
    """Nagle's rule for batches: with a batch of the partition in flight, the open batch
    keeps filling past its linger; a batch that fills up goes at once (up to
    ``max_in_flight``); the answers, a flush or a close send the open one."""
    h = Harness(batch_size_bytes=160, linger_ms=0, max_in_flight=5)
    h.send(now_ms=0)
    (first,) = h.acc.drain(now_ms=0).ready
    sent = 0
    while h.created < 3:  # the second batch fills; the record that does not fit opens a third
        h.send(now_ms=10)
        sent += 1
        if h.created < 3:
            drained = h.acc.drain(now_ms=10)
            assert drained.ready == [] and drained.next_ms is None  # an answer drains again
    assert sent >= 3
    (full,) = h.acc.drain(now_ms=10).ready  # full: it pipelines behind the first
    assert full.records_count == sent - 1
    assert h.acc.drain(now_ms=20).ready == []  # the third, filling, waits
    h.acc.complete(first)
    h.acc.complete(full)
    (last,) = h.acc.drain(now_ms=20).ready
    assert last.records_count == 1
    h.send(now_ms=30)  # behind `last`, which is in flight: waits, but a flush sends it
    assert h.acc.drain(now_ms=30).ready == []
    h.acc.begin_flush()
    assert len(h.acc.drain(now_ms=30).ready) == 1
    h.acc.end_flush()
