"""The consumer and producer controls Kafka users reach for, on a real cluster: assign
without a group, subscribe by pattern after construction, pause/resume, rebalance
callbacks, commit(offsets, asynchronous), committed, beginning/end offsets, offsets by
time, seek_to_*; record timestamps, serializers, a custom partitioner, on_delivery; the
deprecated ``group=``. Sync and async faces."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Iterator

import pytest

import conveyor
from conveyor import TopicPartition
from tests.integration.cluster import Cluster, wait_for

T0 = 1_700_000_000_000


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    shared = Cluster(tmp_path_factory.mktemp("client-controls"), broker_count=1).start()
    try:
        with conveyor.Admin(shared.url) as admin:
            admin.create_topic("ledger", partitions=2, replication_factor=1)
            with conveyor.Producer(shared.url, linger_ms=0) as producer:
                for i in range(20):  # partition i % 2, at offset i // 2, time T0 + i s
                    producer.send(
                        "ledger", f"v{i}", key=f"k{i}", partition=i % 2, timestamp_ms=T0 + i * 1000
                    ).result(10)
        yield shared
    finally:
        shared.stop()


def poll_until(
    consumer: conveyor.Consumer, count: int, timeout_s: float = 20
) -> list[conveyor.Message]:
    out: list[conveyor.Message] = []
    deadline = time.monotonic() + timeout_s
    while len(out) < count and time.monotonic() < deadline:
        out += consumer.poll(timeout=0.2)
    return out


def test_assign_reads_exact_partitions_from_given_offsets_without_a_group(cluster: Cluster) -> None:
    with conveyor.Consumer(cluster.url) as consumer:
        assert consumer.assignment() == []
        consumer.assign([("ledger", 1, 7)])
        assert consumer.assignment() == [TopicPartition("ledger", 1)]
        got = poll_until(consumer, 3)
        assert [(m.partition, m.offset, m.value) for m in got] == [
            (1, 7, b"v15"),
            (1, 8, b"v17"),
            (1, 9, b"v19"),
        ]
        assert [m.timestamp_ms for m in got] == [T0 + 15_000, T0 + 17_000, T0 + 19_000]
        with pytest.raises(conveyor.InvalidRequestError, match="group_id"):
            consumer.commit()
        with pytest.raises(conveyor.InvalidRequestError, match="unsubscribe"):
            consumer.subscribe(["ledger"])


def test_offsets_queries_and_seeks(cluster: Cluster) -> None:
    tps = [TopicPartition("ledger", 0), TopicPartition("ledger", 1)]
    with conveyor.Consumer(cluster.url) as consumer:
        assert consumer.beginning_offsets(tps) == {tps[0]: 0, tps[1]: 0}
        assert consumer.end_offsets(tps) == {tps[0]: 10, tps[1]: 10}
        found = consumer.offsets_for_times({tps[0]: T0 + 4_500, tps[1]: T0 + 99_000})
        assert found[tps[0]] == (3, T0 + 6_000)  # v6: the first at or after 4.5 s
        assert found[tps[1]] is None
        consumer.assign(tps)
        consumer.seek_to_end()
        consumer.seek_to_beginning([tps[1]])
        got = poll_until(consumer, 10, timeout_s=10)
        assert {m.partition for m in got} == {1}
        assert consumer.position("ledger", 0) == 10


def test_pause_stops_a_partition_until_resumed(cluster: Cluster) -> None:
    with conveyor.Consumer(cluster.url) as consumer:
        consumer.assign([("ledger", 0, 0), ("ledger", 1, 0)])
        consumer.pause([("ledger", 0)])
        assert consumer.paused() == [TopicPartition("ledger", 0)]
        got = poll_until(consumer, 10)
        assert {m.partition for m in got} == {1}
        assert consumer.poll(timeout=0.5) == []  # partition 0 stays quiet
        consumer.resume([("ledger", 0)])
        assert {m.partition for m in poll_until(consumer, 10)} == {0}


def test_group_commit_committed_and_callbacks(cluster: Cluster) -> None:
    events: list[tuple[str, list[TopicPartition]]] = []
    consumer = conveyor.Consumer(
        cluster.url,
        group_id="auditors",
        enable_auto_commit=False,
        on_assign=lambda ps: events.append(("assign", ps)),
        on_revoke=lambda ps: events.append(("revoke", ps)),
    )
    try:
        consumer.subscribe(pattern="led.*")
        got = poll_until(consumer, 20)
        assert len(got) == 20
        assert ("assign", [TopicPartition("ledger", 0), TopicPartition("ledger", 1)]) in events
        future = consumer.commit({TopicPartition("ledger", 0): 4}, asynchronous=True)
        assert future is not None
        future.result(10)
        consumer.commit([("ledger", 1, 9)])
        assert consumer.committed([("ledger", 0), ("ledger", 1)]) == {
            TopicPartition("ledger", 0): 4,
            TopicPartition("ledger", 1): 9,
        }
        # a second member: the group splits the partitions, the first is told
        with conveyor.Consumer(
            cluster.url, "ledger", group_id="auditors", enable_auto_commit=False
        ) as second:

            def shared() -> bool:
                consumer.poll(timeout=0.1)
                second.poll(timeout=0.1)
                return len(consumer.assignment()) == len(second.assignment()) == 1

            wait_for(shared, 30, "the two members to share the two partitions")
        assert any(kind == "revoke" for kind, _ in events)
        consumer.unsubscribe()
        assert consumer.assignment() == []
    finally:
        consumer.close()


def test_producer_serializers_partitioner_and_delivery_reports(cluster: Cluster) -> None:
    reports: list[tuple[object, object]] = []
    chosen: list[tuple[bytes | None, list[int], list[int]]] = []

    def last_partition(key: bytes | None, every: list[int], available: list[int]) -> int:
        chosen.append((key, every, available))
        return every[-1]

    with conveyor.Producer(
        cluster.url,
        key_serializer=lambda k: k.upper(),
        value_serializer=json.dumps,
        partitioner=last_partition,
        on_delivery=lambda error, metadata: reports.append((error, metadata)),
    ) as producer:
        futures = [producer.send("ledger", {"n": n}, key=f"k{n}") for n in range(3)]
        producer.flush()
    assert [f.result(0).partition for f in futures] == [1, 1, 1]
    assert chosen[0] == (b"K0", [0, 1], [0, 1])
    assert sorted(r[1].offset for r in reports) == [f.result(0).offset for f in futures]  # type: ignore[union-attr]
    assert all(error is None for error, _ in reports)
    with conveyor.Consumer(cluster.url) as consumer:
        consumer.assign([("ledger", 1, futures[0].result(0).offset)])
        got = poll_until(consumer, 3)
    assert [(m.key, json.loads(m.value or b"")) for m in got] == [
        (b"K0", {"n": 0}),
        (b"K1", {"n": 1}),
        (b"K2", {"n": 2}),
    ]


def test_the_async_faces(cluster: Cluster) -> None:
    async def run() -> None:
        reports: list[object] = []
        async with conveyor.AsyncProducer(cluster.url, value_serializer=str) as producer:
            metadata = await producer.send(
                "ledger",
                42,
                partition=0,
                timestamp_ms=T0,
                on_delivery=lambda e, m: reports.append(m),
            )
        assert reports == [metadata]
        async with conveyor.AsyncConsumer(cluster.url) as consumer:
            await consumer.assign([("ledger", 0, metadata.offset)])
            got: list[conveyor.Message] = []
            deadline = time.monotonic() + 20
            while not got and time.monotonic() < deadline:
                got += await consumer.poll(timeout=0.2)
            assert (got[0].value, got[0].timestamp_ms) == (b"42", T0)
            ends = await consumer.end_offsets([("ledger", 0)])
            assert ends[TopicPartition("ledger", 0)] == metadata.offset + 1

    asyncio.run(run())


def test_the_deprecated_group_name_still_commits_without_joining(cluster: Cluster) -> None:
    with pytest.warns(DeprecationWarning, match="group_id"):
        consumer = conveyor.Consumer(
            cluster.url, "ledger", group="legacy", enable_auto_commit=False
        )
    try:
        assert len(poll_until(consumer, 20)) >= 20
        consumer.commit()
        assert consumer.member_id is None  # read every partition, no membership
        assert consumer.group_id == "legacy"
        assert all(
            v is not None for v in consumer.committed([("ledger", 0), ("ledger", 1)]).values()
        )
    finally:
        consumer.close()


def test_async_admin_and_per_partition_offset_resets(cluster: Cluster) -> None:
    with conveyor.Consumer(cluster.url) as consumer:
        end = consumer.end_offsets([("ledger", 1)])[TopicPartition("ledger", 1)]

    async def run() -> None:
        async with conveyor.AsyncAdmin(cluster.url) as admin:
            created = await admin.create_topic("scratch", partitions=2, replication_factor=1)
            assert len(created.partitions) == 2
            assert "scratch" in {t.name for t in await admin.list_topics()}
            changed = await admin.alter_topic_config("scratch", {"retention_ms": 60_000})
            assert changed.config.retention_ms == 60_000
            assert len((await admin.add_partitions("scratch", 3)).partitions) == 3
            stored = await admin.reset_offsets("planners", "ledger", "latest", partitions=[1])
            assert {(o.partition, o.offset) for o in stored.offsets} == {(1, end)}
            stored = await admin.reset_offsets("planners", "ledger", 4, partitions=[0])
            assert {(o.partition, o.offset) for o in stored.offsets} == {(0, 4)}
            described = await admin.describe_group("planners")  # partition 1 kept its offset
            committed = {(p.partition, p.committed_offset) for p in described.partitions}
            assert committed == {(0, 4), (1, end)}
            assert "planners" in {g.group for g in await admin.list_groups()}
            await admin.delete_group("planners")
            assert "planners" not in {g.group for g in await admin.list_groups()}
            await admin.delete_topic("scratch")
            assert (await admin.cluster()).topics >= 1

    asyncio.run(run())
    with conveyor.GroupAdmin(cluster.url) as groups:
        when = conveyor.Timestamp(T0 + 4_500)
        stored = groups.reset_offsets("planners", "ledger", when, partitions=[0])
        assert [(o.partition, o.offset) for o in stored.offsets] == [(0, 3)]
        with pytest.raises(conveyor.InvalidRequestError) as refused:
            groups.reset_offsets("planners", "ledger", "earliest", partitions=[7])
        assert refused.value.code is conveyor.ErrorCode.UNKNOWN_PARTITION
