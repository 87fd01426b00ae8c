"""The batch APIs (``send_many``, ``poll_batch``; issue 19) against real coordinator and
broker processes: per-key order, where each record went, partial failure when one
partition has no leader, and exactly-once across a leader's death with idempotence."""

from __future__ import annotations

import asyncio
import time
from collections import defaultdict
from collections.abc import Iterator

import pytest

import conveyor
from tests.integration.cluster import Cluster, wait_for
from tests.integration.test_client import check_exactly_once_in_order, keyed, make_topic

COUNT = 20_000
KEYS = 8


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    """One broker for the tests that kill nothing (each uses its own topic)."""
    shared = Cluster(tmp_path_factory.mktemp("batch-api"), broker_count=1).start()
    try:
        yield shared
    finally:
        shared.stop()


def read_all(
    consumer: conveyor.Consumer, count: int, timeout_s: float = 30
) -> conveyor.PolledBatch:
    """poll_batch until ``count`` records, concatenated into one PolledBatch."""
    out = conveyor.PolledBatch()
    out.headers = []
    deadline = time.monotonic() + timeout_s
    while len(out) < count and time.monotonic() < deadline:
        batch = consumer.poll_batch(timeout=0.5, max_records=5_000, headers=True)
        assert batch.headers is not None
        for run in batch.runs:
            rows = slice(run.start, run.stop)
            begin = len(out)
            out.offsets += batch.offsets[rows]
            out.keys += batch.keys[rows]
            out.values += batch.values[rows]
            out.timestamps_ms += batch.timestamps_ms[rows]
            out.headers += batch.headers[rows]
            out.runs.append(conveyor.PartitionRun(run.topic, run.partition, begin, len(out)))
    return out


def test_send_many_and_poll_batch_keep_every_record_once_in_key_order(cluster: Cluster) -> None:
    make_topic(cluster, "many")
    pairs = list(keyed(COUNT, KEYS))
    with conveyor.Producer(cluster.url) as producer:
        future = producer.send_many("many", [v for _, v in pairs], [k for k, _ in pairs])
        result = future.result(timeout=60)
    assert result.written_count == COUNT and not result.errors
    with conveyor.Consumer(cluster.url, ["many"], group_id="g") as consumer:
        batch = read_all(consumer, COUNT)
        assert len(consumer.poll_batch(timeout=0.2)) == 0
        consumer.commit()
    messages = batch.messages()
    check_exactly_once_in_order(messages, COUNT)
    # each record is where send_many's result said: (partition, offset) per value
    where = {m.value: (m.partition, m.offset) for m in messages}
    reported = zip(result.partitions(), result.offsets(), strict=True)
    assert [where[v.encode()] for _, v in pairs] == list(reported)
    for run in batch.runs:  # a run is one partition's rows, in offset order
        offsets = batch.offsets[run.start : run.stop]
        assert offsets == sorted(offsets)
        assert all(
            where[v] == (run.partition, o)
            for v, o in zip(batch.values[run.start : run.stop], offsets, strict=True)
            if v is not None
        )
    assert batch.headers is not None and all(not pairs for pairs in batch.headers)
    # poll_batch moved the positions and commit() recorded them, as poll does
    with conveyor.Consumer(cluster.url, ["many"], group_id="g") as again:
        assert len(again.poll_batch(timeout=1.0)) == 0


def test_async_twins(cluster: Cluster) -> None:
    make_topic(cluster, "many-async", partitions=4)

    async def run() -> tuple[conveyor.SendManyResult, list[conveyor.Message]]:
        async with conveyor.AsyncProducer(cluster.url) as producer:
            values = [f"v{i}" for i in range(5_000)]
            future = await producer.send_many("many-async", values, partition=2)
            result = await future
        async with conveyor.AsyncConsumer(cluster.url, ["many-async"]) as consumer:
            got: list[conveyor.Message] = []
            deadline = time.monotonic() + 30
            while len(got) < 5_000 and time.monotonic() < deadline:
                got += (await consumer.poll_batch(timeout=0.5, max_records=2_000)).messages()
        return result, got

    result, got = asyncio.run(run())
    assert result.offsets() == list(range(5_000))
    assert [m.value for m in got] == [f"v{i}".encode() for i in range(5_000)]
    assert {m.partition for m in got} == {2}


def test_partial_failure_reports_the_partition_that_was_not_written(cluster3: Cluster) -> None:
    make_topic(cluster3, "half", partitions=3, rf=1)
    with conveyor.Admin(cluster3.url) as admin:
        leaders = {p.partition: p.leader for p in admin.describe_topic("half").partitions}
    dead = leaders[0]
    assert dead is not None
    cluster3.brokers[dead].stop()  # its partitions (RF=1) have no leader now
    values = [f"{i}" for i in range(3_000)]
    keys = [f"key-{i % 30}" for i in range(3_000)]
    with conveyor.Producer(
        cluster3.url, delivery_timeout_ms=4_000, request_timeout_ms=2_000
    ) as producer:
        future = producer.send_many("half", values, keys)
        with pytest.raises(conveyor.SendManyError) as caught:
            future.result(timeout=30)
    result = caught.value.result
    lost = {p for p, leader in leaders.items() if leader == dead}
    partitions = result.partitions()
    offsets = result.offsets()
    assert result.failed_count == sum(1 for p in partitions if p in lost) > 0
    assert result.written_count == sum(1 for p in partitions if p not in lost) > 0
    assert all((o == -1) == (p in lost) for p, o in zip(partitions, offsets, strict=True))
    assert all(run.error is not None for run in result.runs if run.partition in lost)
    # what was reported written is in the log, each record once at its offset
    with conveyor.Consumer(cluster3.url) as consumer:
        consumer.assign([("half", p) for p in leaders if p not in lost])
        got = read_all(consumer, result.written_count).messages()
    where = {(m.partition, m.offset): m.value for m in got}
    assert len(got) == result.written_count
    for value, partition, offset in zip(values, partitions, offsets, strict=True):
        if partition not in lost:
            assert where[(partition, offset)] == value.encode()


def test_idempotent_send_many_is_exactly_once_across_a_leader_death(cluster3: Cluster) -> None:
    """Batches in flight when the leader dies are retried to the new leader, which knows
    their producer sequences from replication: none is written twice, none lost."""
    make_topic(cluster3, "dedup-many", partitions=2, rf=3)
    pairs = list(keyed(COUNT, 4))
    with conveyor.Admin(cluster3.url) as admin:
        leader = admin.describe_topic("dedup-many").partitions[0].leader
    assert leader is not None
    with conveyor.Producer(cluster3.url, delivery_timeout_ms=60_000, batch_size=16_384) as producer:
        first = producer.send_many(
            "dedup-many", [v for _, v in pairs[:10_000]], [k for k, _ in pairs[:10_000]]
        )
        cluster3.brokers[leader].kill()  # while those batches are in flight
        second = producer.send_many(
            "dedup-many", [v for _, v in pairs[10_000:]], [k for k, _ in pairs[10_000:]]
        )
        assert first.result(timeout=90).written_count == 10_000
        assert second.result(timeout=90).written_count == COUNT - 10_000

    def readable() -> bool:
        with conveyor.Admin(cluster3.url) as admin:
            return all(
                p.leader not in (None, leader)
                for p in admin.describe_topic("dedup-many").partitions
            )

    wait_for(readable, 30, "new leaders")
    with conveyor.Consumer(cluster3.url, ["dedup-many"]) as consumer:
        batch = read_all(consumer, COUNT, timeout_s=60)
        assert len(consumer.poll_batch(timeout=1.0)) == 0  # nothing written twice
    check_exactly_once_in_order(batch.messages(), COUNT)
    counts: dict[int, int] = defaultdict(int)
    for run in batch.runs:
        counts[run.partition] += run.stop - run.start
    assert sum(counts.values()) == COUNT


def test_send_many_fills_the_batches_the_sender_drains(cluster: Cluster) -> None:
    """send_many's batches go out as the sender's Produce requests: every record once,
    in order per key, at the partition and offset its result reports."""
    topic = "many-kafka"
    make_topic(cluster, topic, partitions=4)
    pairs = list(keyed(3_000, 5))
    with conveyor.Producer(cluster.url) as producer:
        result = producer.send_many(topic, [v for _, v in pairs], [k for k, _ in pairs]).result(60)
    with conveyor.Consumer(cluster.url) as consumer:
        consumer.assign([(topic, p) for p in range(4)])
        messages = read_all(consumer, 3_000).messages()
    check_exactly_once_in_order(messages, 3_000)
    where = {m.value: (m.partition, m.offset) for m in messages}
    reported = zip(result.partitions(), result.offsets(), strict=True)
    assert [where[v.encode()] for _, v in pairs] == list(reported)
