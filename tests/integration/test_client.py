"""The Python client against real coordinator and broker processes."""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections import defaultdict
from collections.abc import Iterable, Iterator

import pytest

import conveyor
from conveyor.client import seed
from conveyor.protocol.errors import ErrorCode, InvalidRequestError
from tests.integration.cluster import Cluster, wait_for

KEYS = 16
COUNT = 100_000


def make_topic(cluster: Cluster, name: str, partitions: int = 8, rf: int | None = None) -> None:
    with conveyor.Admin(cluster.url) as admin:
        admin.create_topic(name, partitions=partitions, replication_factor=rf)


def keyed(count: int, keys: int) -> Iterator[tuple[str, str]]:
    """(key, value) with the value naming its key and its sequence number within the key."""
    sequence: dict[str, int] = defaultdict(int)
    for i in range(count):
        key = f"key-{i % keys}"
        yield key, f"{key}:{sequence[key]}"
        sequence[key] += 1


def check_exactly_once_in_order(messages: Iterable[conveyor.Message], count: int) -> None:
    """Nothing lost, nothing duplicated, each key's sequence strictly increasing, and each
    key on a single partition."""
    last: dict[bytes, int] = {}
    partition_of: dict[bytes, int] = {}
    seen = 0
    for message in messages:
        assert message.key is not None and message.value is not None
        key, sequence = message.value.decode().rsplit(":", 1)
        assert key.encode() == message.key
        assert int(sequence) == last.get(message.key, -1) + 1, f"{key} out of order or duplicated"
        last[message.key] = int(sequence)
        assert partition_of.setdefault(message.key, message.partition) == message.partition
        seen += 1
    assert seen == count


def consume(
    consumer: conveyor.Consumer, count: int, timeout_s: float = 30
) -> list[conveyor.Message]:
    out: list[conveyor.Message] = []
    deadline = time.monotonic() + timeout_s
    while len(out) < count and time.monotonic() < deadline:
        out += consumer.poll(timeout=0.5)
    return out


def test_producer_and_consumer_keep_every_message_once_in_key_order(cluster: Cluster) -> None:
    make_topic(cluster, "orders")
    with conveyor.Producer(cluster.url) as producer:
        futures = [producer.send("orders", value, key=key) for key, value in keyed(COUNT, KEYS)]
        producer.flush()
    metadata = [f.result(timeout=0) for f in (futures[0], futures[-1])]
    assert all(m.topic == "orders" and m.offset >= 0 for m in metadata)
    with conveyor.Consumer(cluster.url, ["orders"], group_id="g1") as consumer:
        messages = consume(consumer, COUNT)
        assert consumer.poll(timeout=0.2) == []  # nothing more
        assert len(consumer.assignment()) == 8
    check_exactly_once_in_order(messages, COUNT)
    assert len({m.partition for m in messages}) > 1


def test_async_producer_and_consumer_the_same(cluster: Cluster) -> None:
    make_topic(cluster, "async-orders")

    async def run() -> list[conveyor.Message]:
        async with conveyor.AsyncProducer(cluster.url) as producer:
            first = await producer.send("async-orders", b"first", key="key-first")
            assert first.offset == 0
            for key, value in keyed(COUNT, KEYS):
                await producer.enqueue("async-orders", value, key=key)
            await producer.flush()
        out: list[conveyor.Message] = []
        async with conveyor.AsyncConsumer(cluster.url, "async-orders", group_id="g") as consumer:
            deadline = time.monotonic() + 30
            while len(out) < COUNT + 1 and time.monotonic() < deadline:
                out += await consumer.poll(timeout=0.5)
            await consumer.commit()
        return out

    messages = asyncio.run(run())
    assert messages and sum(m.value == b"first" for m in messages) == 1
    check_exactly_once_in_order([m for m in messages if m.value != b"first"], COUNT)


def test_seed_push_then_subscribe_gets_all_in_key_order(
    cluster: Cluster, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("CONVEYOR_URL", cluster.url)
    received: list[tuple[str | bytes | None, bytes | None]] = []
    done = threading.Event()
    try:
        for i in range(1_000):
            conveyor.push(f"user-{i % 9}", f"{i}")

        def on_message(key: str | bytes | None, value: bytes | None) -> None:
            received.append((key, value))
            if len(received) >= 1_000:
                done.set()

        subscription = conveyor.subscribe(on_message)
        try:
            assert done.wait(30), f"got {len(received)} of 1000"
        finally:
            subscription.stop()
        assert not subscription.running and subscription.error is None
    finally:
        seed.close_shared()
    assert len(received) == 1_000
    by_key: dict[str | bytes | None, list[int]] = defaultdict(list)
    for key, value in received:
        assert isinstance(key, str) and isinstance(value, bytes)
        by_key[key].append(int(value))
    assert len(by_key) == 9
    assert all(
        values == sorted(values) and len(set(values)) == len(values) for values in by_key.values()
    )


def test_seed_pull_returns_messages_then_none(
    cluster: Cluster, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("CONVEYOR_URL", cluster.url)
    try:
        assert conveyor.pull() is None  # no topic yet: nothing waiting
        conveyor.push(b"\xff-key", b"payload")
        conveyor.push("k", "text")
        pulled = [conveyor.pull(), conveyor.pull()]
        assert sorted(pulled, key=repr) == sorted(
            [(b"\xff-key", b"payload"), ("k", b"text")], key=repr
        )
        assert conveyor.pull() is None
    finally:
        seed.close_shared()


def test_committed_position_survives_restart(cluster: Cluster) -> None:
    make_topic(cluster, "durable", partitions=4)
    with conveyor.Producer(cluster.url) as producer:
        for key, value in keyed(2_000, 4):
            producer.send("durable", value, key=key)
    with conveyor.Consumer(
        cluster.url, "durable", group_id="keeper", enable_auto_commit=False, max_poll_records=100
    ) as consumer:
        first_half = consume(consumer, 1_000)[:1_000]
        # poll may have returned more than 1,000: rewind to exactly the first half
        for tp in consumer.assignment():
            taken = [m.offset for m in first_half if m.partition == tp.partition]
            consumer.seek(tp.topic, tp.partition, max(taken) + 1 if taken else 0)
        consumer.commit()
    cluster.restart()
    with conveyor.Consumer(cluster.url, "durable", group_id="keeper") as consumer:
        second_half = consume(consumer, 1_000)
        assert consumer.poll(timeout=0.3) == []
    check_exactly_once_in_order([*first_half, *second_half], 2_000)


def test_admin_create_list_describe_delete(cluster: Cluster) -> None:
    with conveyor.Admin(cluster.url) as admin:
        created = admin.create_topic("admin-t", partitions=3, config={"retention_ms": 60_000})
        assert created.name == "admin-t" and len(created.partitions) == 3
        assert created.config.retention_ms == 60_000
        with pytest.raises(InvalidRequestError) as exists:
            admin.create_topic("admin-t")
        assert exists.value.code is ErrorCode.TOPIC_ALREADY_EXISTS
        assert "admin-t" in {t.name for t in admin.list_topics()}
        described = admin.describe_topic("admin-t")
        assert [p.partition for p in described.partitions] == [0, 1, 2]
        status = admin.cluster()
        assert len(status.brokers) == 1 and status.topics >= 1
        admin.delete_topic("admin-t")
        assert "admin-t" not in {t.name for t in admin.list_topics()}
        with pytest.raises(InvalidRequestError) as unknown:
            admin.describe_topic("admin-t")
        assert unknown.value.code is ErrorCode.UNKNOWN_TOPIC


def test_producer_follows_a_leader_change(cluster3: Cluster) -> None:
    make_topic(cluster3, "moving", partitions=3, rf=3)
    with conveyor.Producer(cluster3.url, delivery_timeout_ms=30_000) as producer:
        before = [producer.send("moving", value, key=key) for key, value in keyed(300, 3)]
        producer.flush()
        assert all(f.result(0).offset >= 0 for f in before)
        with conveyor.Admin(cluster3.url) as admin:
            leader = admin.describe_topic("moving").partitions[0].leader
        assert leader is not None
        cluster3.brokers[leader].stop()

        def moved() -> bool:
            with conveyor.Admin(cluster3.url) as admin:
                return admin.describe_topic("moving").partitions[0].leader not in (None, leader)

        wait_for(moved, 30, "a new leader for moving[0]")
        after = [producer.send("moving", value, key=key) for key, value in keyed(300, 3)]
        producer.flush()
        assert all(f.result(0).offset >= 0 for f in after)


def test_async_send_nowait_to_a_new_topic_keeps_order(cluster: Cluster) -> None:
    async def run() -> list[conveyor.RecordMetadata]:
        async with conveyor.AsyncProducer(cluster.url, linger_ms=1) as producer:
            # the topic does not exist yet: the first records wait for metadata in order
            pending = [producer.send_nowait("fresh", f"{i}", key="one") for i in range(2_000)]
            return list(await asyncio.gather(*pending))

    results = asyncio.run(run())
    assert [r.offset for r in results] == list(range(2_000))
    assert len({r.partition for r in results}) == 1


def test_a_group_consumer_waiting_for_its_topic_logs_one_line_not_a_warning_a_second(
    cluster: Cluster, caplog: pytest.LogCaptureFixture
) -> None:
    with (
        caplog.at_level(logging.INFO, logger="conveyor.client.membership"),
        conveyor.Consumer(cluster.url, "not-yet", group_id="waiters") as consumer,
    ):
        deadline = time.monotonic() + 3.5  # three heartbeat intervals and more
        while time.monotonic() < deadline:
            assert consumer.poll(timeout=0.2) == []
    lines = [r for r in caplog.records if r.name == "conveyor.client.membership"]
    assert [r.getMessage() for r in lines if r.levelno >= logging.WARNING] == []
    waiting = [r.getMessage() for r in lines if "waiting for topic" in r.getMessage()]
    assert waiting == ["group waiters: waiting for topic(s) not-yet to be created"]
