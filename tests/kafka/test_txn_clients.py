"""Kafka transactions (issue 21) with kafka-python and aiokafka, the two Python clients
besides librdkafka (test_transactions.py): a commit is seen by read_committed consumers
and an abort is not; a second producer with the same transactional id fences the first,
whose records never become visible; consume-transform-produce with the consumed offsets
committed in the transaction (KIP-447's group metadata with kafka-python) gives each input
exactly once, also after an aborted attempt is redone."""

from __future__ import annotations

import asyncio
import time
import warnings
from collections.abc import Iterator
from typing import Any

import pytest

import conveyor
from conveyor.client import Admin
from tests.integration.cluster import Cluster
from tests.kafka.conftest import unique_topic

_TIMEOUT_S = 30
_PARTITIONS = 2

with warnings.catch_warnings():
    warnings.simplefilter("ignore", DeprecationWarning)
    kafka = pytest.importorskip("kafka")
    kafka_errors = pytest.importorskip("kafka.errors")
aiokafka = pytest.importorskip("aiokafka")


@pytest.fixture(scope="module")
def admin(kafka_cluster: Cluster) -> Iterator[Admin]:
    with Admin(kafka_cluster.url) as client:
        yield client


def _committed(cluster: Cluster, group: str, topic: str) -> list[int | None]:
    """The group's committed offsets, as Conveyor's consumer reads them."""
    consumer = conveyor.Consumer(cluster.url, group_id=group)
    try:
        partitions = [conveyor.TopicPartition(topic, p) for p in range(_PARTITIONS)]
        committed = consumer.committed(partitions)
        return [committed[tp] for tp in partitions]
    finally:
        consumer.close()


def _topic(admin: Admin, prefix: str) -> str:
    name = unique_topic(prefix)
    admin.create_topic(name, partitions=_PARTITIONS, replication_factor=1)
    return name


# ---- kafka-python ----------------------------------------------------------------------------


def _kp_producer(cluster: Cluster, transactional_id: str | None = None) -> Any:
    producer = kafka.KafkaProducer(
        bootstrap_servers=cluster.bootstrap,
        transactional_id=transactional_id,
        acks="all",
        enable_idempotence=True,
        request_timeout_ms=20_000,
    )
    if transactional_id is not None:
        producer.init_transactions()
    return producer


def _kp_read(cluster: Cluster, topic: str, isolation: str, at_least: int = 0) -> list[bytes]:
    """Every value of the topic as a consumer of that isolation level reads it: until it
    reaches each partition's end (the last stable offset for read_committed) and holds at
    least ``at_least`` values."""
    consumer = kafka.KafkaConsumer(
        bootstrap_servers=cluster.bootstrap,
        group_id=None,
        enable_auto_commit=False,
        isolation_level=isolation,
    )
    try:
        partitions = [kafka.TopicPartition(topic, p) for p in range(_PARTITIONS)]
        consumer.assign(partitions)
        consumer.seek_to_beginning()
        values: list[bytes] = []
        deadline = time.monotonic() + _TIMEOUT_S
        while time.monotonic() < deadline:
            for records in consumer.poll(timeout_ms=200).values():
                values.extend(r.value for r in records)
            ends = consumer.end_offsets(partitions)
            if len(values) >= at_least and all(consumer.position(tp) >= ends[tp] for tp in ends):
                return sorted(values)
        raise AssertionError(f"{isolation} read {len(values)} values, not the topic's end")
    finally:
        consumer.close()


def test_kafka_python_commit_is_visible_and_abort_is_not(
    kafka_cluster: Cluster, admin: Admin
) -> None:
    topic = _topic(admin, "kp-txn")
    producer = _kp_producer(kafka_cluster, f"kp-{topic}")
    try:
        producer.begin_transaction()
        for i in range(4):
            producer.send(topic, f"committed-{i}".encode(), partition=i % _PARTITIONS)
        producer.commit_transaction()
        producer.begin_transaction()
        for i in range(3):
            producer.send(topic, f"aborted-{i}".encode(), partition=i % _PARTITIONS)
        producer.flush()
        producer.abort_transaction()
    finally:
        producer.close()
    committed = sorted(f"committed-{i}".encode() for i in range(4))
    assert _kp_read(kafka_cluster, topic, "read_committed", 4) == committed
    everything = _kp_read(kafka_cluster, topic, "read_uncommitted", 7)
    assert everything == sorted([*committed, *(f"aborted-{i}".encode() for i in range(3))])


def test_kafka_python_second_producer_fences_the_first(
    kafka_cluster: Cluster, admin: Admin
) -> None:
    topic = _topic(admin, "kp-fence")
    tid = f"kp-{topic}"
    zombie = _kp_producer(kafka_cluster, tid)
    successor = None
    try:
        zombie.begin_transaction()
        zombie.send(topic, b"zombie", partition=0)
        zombie.flush()
        successor = _kp_producer(kafka_cluster, tid)  # aborts the open transaction
        with pytest.raises(kafka_errors.KafkaError) as fenced:
            zombie.commit_transaction()
        assert "Fenced" in type(fenced.value).__name__ or "fenced" in str(fenced.value).lower()
        successor.begin_transaction()
        successor.send(topic, b"successor", partition=0)
        successor.commit_transaction()
    finally:
        zombie.close(timeout=5)
        if successor is not None:
            successor.close()
    assert _kp_read(kafka_cluster, topic, "read_committed", 1) == [b"successor"]


def test_kafka_python_consume_transform_produce(kafka_cluster: Cluster, admin: Admin) -> None:
    """Each batch's output and its consumed offsets in one transaction (the consumer's
    group metadata: KIP-447); one batch's transaction is aborted and the consumer rewound
    to the committed offsets, then redone: the output holds each input once."""
    source, sink = _topic(admin, "kp-in"), _topic(admin, "kp-out")
    group = f"kp-etl-{source}"
    count = 30
    plain = _kp_producer(kafka_cluster)
    for i in range(count):
        plain.send(source, f"{i}".encode(), partition=i % _PARTITIONS)
    plain.close()
    producer = _kp_producer(kafka_cluster, f"kp-etl-{source}")
    consumer = kafka.KafkaConsumer(
        source,
        bootstrap_servers=kafka_cluster.bootstrap,
        group_id=group,
        enable_auto_commit=False,
        auto_offset_reset="earliest",
        isolation_level="read_committed",
        max_poll_records=7,
    )
    try:
        done, aborted_once = 0, False
        deadline = time.monotonic() + 60
        while done < count and time.monotonic() < deadline:
            batches = consumer.poll(timeout_ms=500)
            if not batches:
                continue
            producer.begin_transaction()
            offsets = {}
            for tp, records in batches.items():
                for r in records:
                    producer.send(sink, b"out-" + r.value, partition=tp.partition)
                offsets[tp] = kafka.OffsetAndMetadata(records[-1].offset + 1, "", -1)
            producer.send_offsets_to_transaction(offsets, consumer.group_metadata())
            if not aborted_once:  # the processor fails once: nothing of it may show
                aborted_once = True
                producer.abort_transaction()
                for tp in offsets:
                    committed = consumer.committed(tp)
                    consumer.seek(tp, committed if committed is not None else 0)
                continue
            producer.commit_transaction()
            done += sum(len(records) for records in batches.values())
    finally:
        producer.close()
        consumer.close()
    outputs = _kp_read(kafka_cluster, sink, "read_committed", count)
    assert outputs == sorted(f"out-{i}".encode() for i in range(count))
    assert _committed(kafka_cluster, group, source) == [count // _PARTITIONS] * _PARTITIONS


# ---- aiokafka --------------------------------------------------------------------------------


async def _aio_read(bootstrap: str, topic: str, isolation: str, at_least: int) -> list[bytes]:
    consumer = aiokafka.AIOKafkaConsumer(
        bootstrap_servers=bootstrap,
        enable_auto_commit=False,
        isolation_level=isolation,
        auto_offset_reset="earliest",
    )
    await consumer.start()
    try:
        partitions = [aiokafka.TopicPartition(topic, p) for p in range(_PARTITIONS)]
        consumer.assign(partitions)
        await consumer.seek_to_beginning(*partitions)
        values: list[bytes] = []
        deadline = time.monotonic() + _TIMEOUT_S
        while time.monotonic() < deadline:
            batches = await consumer.getmany(timeout_ms=200)
            for records in batches.values():
                values.extend(r.value for r in records)
            ends = await consumer.end_offsets(partitions)
            positions = {tp: await consumer.position(tp) for tp in partitions}
            if len(values) >= at_least and all(positions[tp] >= ends[tp] for tp in ends):
                return sorted(values)
        raise AssertionError(f"{isolation} read {len(values)} values, not the topic's end")
    finally:
        await consumer.stop()


def _aio_producer(bootstrap: str, transactional_id: str) -> Any:
    return aiokafka.AIOKafkaProducer(
        bootstrap_servers=bootstrap, transactional_id=transactional_id, request_timeout_ms=20_000
    )


def test_aiokafka_commit_is_visible_and_abort_is_not(kafka_cluster: Cluster, admin: Admin) -> None:
    topic = _topic(admin, "aio-txn")

    async def scenario() -> tuple[list[bytes], list[bytes]]:
        producer = _aio_producer(kafka_cluster.bootstrap, f"aio-{topic}")
        await producer.start()
        try:
            async with producer.transaction():
                for i in range(4):
                    await producer.send(topic, f"committed-{i}".encode(), partition=i % 2)
            await producer.begin_transaction()
            for i in range(3):
                await producer.send_and_wait(topic, f"aborted-{i}".encode(), partition=i % 2)
            await producer.abort_transaction()
        finally:
            await producer.stop()
        return (
            await _aio_read(kafka_cluster.bootstrap, topic, "read_committed", 4),
            await _aio_read(kafka_cluster.bootstrap, topic, "read_uncommitted", 7),
        )

    committed, everything = asyncio.run(asyncio.wait_for(scenario(), 90))
    assert committed == sorted(f"committed-{i}".encode() for i in range(4))
    assert len(everything) == 7


def test_aiokafka_second_producer_fences_the_first(kafka_cluster: Cluster, admin: Admin) -> None:
    topic = _topic(admin, "aio-fence")
    tid = f"aio-{topic}"

    async def scenario() -> list[bytes]:
        zombie = _aio_producer(kafka_cluster.bootstrap, tid)
        successor = _aio_producer(kafka_cluster.bootstrap, tid)
        await zombie.start()
        try:
            await zombie.begin_transaction()
            await zombie.send_and_wait(topic, b"zombie", partition=0)
            await successor.start()  # InitProducerId: aborts the open transaction
            with pytest.raises(aiokafka.errors.ProducerFenced):
                await zombie.commit_transaction()
            async with successor.transaction():
                await successor.send(topic, b"successor", partition=0)
        finally:
            await zombie.stop()
            await successor.stop()
        return await _aio_read(kafka_cluster.bootstrap, topic, "read_committed", 1)

    assert asyncio.run(asyncio.wait_for(scenario(), 90)) == [b"successor"]


def test_aiokafka_consume_transform_produce(kafka_cluster: Cluster, admin: Admin) -> None:
    """As kafka-python's, with aiokafka's ``send_offsets_to_transaction(offsets, group_id)``
    (no member fields: fenced by the producer epoch only)."""
    source, sink = _topic(admin, "aio-in"), _topic(admin, "aio-out")
    group = f"aio-etl-{source}"
    count = 30

    async def scenario() -> list[bytes]:
        bootstrap = kafka_cluster.bootstrap
        plain = aiokafka.AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all")
        await plain.start()
        try:
            for i in range(count):
                await plain.send(source, f"{i}".encode(), partition=i % _PARTITIONS)
        finally:
            await plain.stop()
        producer = _aio_producer(bootstrap, f"aio-etl-{source}")
        consumer = aiokafka.AIOKafkaConsumer(
            source,
            bootstrap_servers=bootstrap,
            group_id=group,
            enable_auto_commit=False,
            auto_offset_reset="earliest",
            isolation_level="read_committed",
        )
        await producer.start()
        await consumer.start()
        try:
            await _aio_process(producer, consumer, sink, group, count)
        finally:
            await consumer.stop()
            await producer.stop()
        return await _aio_read(bootstrap, sink, "read_committed", count)

    outputs = asyncio.run(asyncio.wait_for(scenario(), 120))
    assert outputs == sorted(f"out-{i}".encode() for i in range(count))
    assert _committed(kafka_cluster, group, source) == [count // _PARTITIONS] * _PARTITIONS


async def _aio_process(producer: Any, consumer: Any, sink: str, group: str, count: int) -> None:
    done, aborted_once = 0, False
    deadline = time.monotonic() + 60
    while done < count and time.monotonic() < deadline:
        batches = await consumer.getmany(timeout_ms=500, max_records=7)
        if not batches:
            continue
        await producer.begin_transaction()
        offsets = {}
        for tp, records in batches.items():
            for r in records:
                await producer.send(sink, b"out-" + r.value, partition=tp.partition)
            offsets[tp] = records[-1].offset + 1
        await producer.send_offsets_to_transaction(offsets, group)
        if not aborted_once:
            aborted_once = True
            await producer.abort_transaction()
            for tp in offsets:
                committed = await consumer.committed(tp)
                consumer.seek(tp, committed if committed is not None else 0)
            continue
        await producer.commit_transaction()
        done += sum(len(records) for records in batches.values())
