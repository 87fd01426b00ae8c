"""Real Kafka clients against the Kafka listener, cross-checked with Conveyor's own client
and CLI: what kafka-python or aiokafka wrote, ``conveyor.Consumer`` and ``conveyor
consume`` read with the same offsets, keys, values, headers and timestamps; what
``conveyor.Producer`` wrote, the Kafka clients read the same way. (confluent-kafka's
producer and consumer: test_data.py; kafkajs: test_kafkajs.py.)"""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import warnings
from collections.abc import Iterator
from typing import Any

import pytest

import conveyor
from conveyor.client import Admin
from tests.integration.cluster import Cluster
from tests.kafka.conftest import unique_topic

# (partition, offset, key, value, headers, timestamp_ms), headers as (name, bytes) pairs
Row = tuple[int, int, bytes | None, bytes | None, tuple[tuple[str, bytes | None], ...], int]
_COUNT = 60
_PARTITIONS = 3
_TIMEOUT_S = 30


def _records(tag: str) -> list[tuple[bytes, bytes, list[tuple[str, bytes]], int]]:
    """Keys spread over partitions, a header per record, explicit CreateTime timestamps."""
    base_ms = 1_700_000_000_000
    return [
        (
            f"key-{i % 7}".encode(),
            f"{tag}-{i}".encode(),
            [("n", str(i).encode()), ("tag", tag.encode())],
            base_ms + i,
        )
        for i in range(_COUNT)
    ]


@pytest.fixture(scope="module")
def conveyor_admin(kafka_cluster: Cluster) -> Iterator[Admin]:
    with Admin(kafka_cluster.url) as admin:
        yield admin


def _topic(admin: Admin, prefix: str) -> str:
    name = unique_topic(prefix)
    admin.create_topic(name, partitions=_PARTITIONS, replication_factor=1)
    return name


def _conveyor_rows(cluster: Cluster, topic: str) -> list[Row]:
    consumer = conveyor.Consumer(cluster.url, topic, enable_auto_commit=False)
    rows: list[Row] = []
    try:
        for _ in range(_TIMEOUT_S * 2):
            for m in consumer.poll(timeout=0.5):
                rows.append(
                    (m.partition, m.offset, m.key, m.value, tuple(m.headers), m.timestamp_ms)
                )
            if len(rows) >= _COUNT:
                break
    finally:
        consumer.close()
    return sorted(rows)


def _cli_rows(cluster: Cluster, topic: str) -> list[Row]:
    """``conveyor consume --json``: text keys and values, headers as a name -> text map."""
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "conveyor",
            "consume",
            topic,
            "--json",
            "--from-beginning",
            "--max",
            str(_COUNT),
        ],
        env=dict(os.environ, CONVEYOR_URL=cluster.url),
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    rows: list[Row] = []
    for line in result.stdout.splitlines():
        m = json.loads(line)
        headers = tuple((k, v.encode()) for k, v in (m["headers"] or {}).items())
        key, value = m["key"].encode(), m["value"].encode()
        rows.append((m["partition"], m["offset"], key, value, headers, m["timestamp_ms"]))
    return sorted(rows)


def _kafka_python_produce(bootstrap: str, topic: str, tag: str) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        from kafka import KafkaProducer

    producer = KafkaProducer(bootstrap_servers=bootstrap, acks="all", linger_ms=5)
    try:
        futures = [
            producer.send(topic, key=k, value=v, headers=h, timestamp_ms=ts)
            for k, v, h, ts in _records(tag)
        ]
        for future in futures:
            future.get(timeout=_TIMEOUT_S)
    finally:
        producer.close(timeout=10)


def _kafka_python_consume(bootstrap: str, topic: str) -> list[Row]:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        from kafka import KafkaConsumer, TopicPartition

    consumer = KafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False, group_id=None)
    try:
        partitions = [TopicPartition(topic, p) for p in range(_PARTITIONS)]
        consumer.assign(partitions)
        consumer.seek_to_beginning(*partitions)
        rows: list[Row] = []
        for _ in range(_TIMEOUT_S * 2):
            for records in consumer.poll(timeout_ms=500).values():
                rows += [_kafka_row(r) for r in records]
            if len(rows) >= _COUNT:
                break
        return sorted(rows)
    finally:
        consumer.close()


def _kafka_row(r: Any) -> Row:
    headers = tuple((k, v) for k, v in (r.headers or []))
    return (r.partition, r.offset, r.key, r.value, headers, r.timestamp)


async def _aiokafka_roundtrip(bootstrap: str, topic: str, tag: str | None) -> list[Row]:
    """Produce ``_records(tag)`` with aiokafka (unless tag is None), then read the topic back
    with a manually assigned aiokafka consumer."""
    from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition

    if tag is not None:
        producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all")
        await producer.start()
        try:
            for k, v, h, ts in _records(tag):
                await producer.send_and_wait(topic, key=k, value=v, headers=h, timestamp_ms=ts)
        finally:
            await producer.stop()
    consumer = AIOKafkaConsumer(
        bootstrap_servers=bootstrap, enable_auto_commit=False, auto_offset_reset="earliest"
    )
    await consumer.start()
    try:
        consumer.assign([TopicPartition(topic, p) for p in range(_PARTITIONS)])
        await consumer.seek_to_beginning()
        rows: list[Row] = []
        for _ in range(_TIMEOUT_S * 2):
            batches = await consumer.getmany(timeout_ms=500)
            rows += [_kafka_row(r) for records in batches.values() for r in records]
            if len(rows) >= _COUNT:
                break
        return sorted(rows)
    finally:
        await consumer.stop()


def _expected(rows: list[Row], tag: str) -> None:
    """Every record once, each partition's offsets 0..n-1, each key on one partition."""
    assert len(rows) == _COUNT
    assert sorted(r[3] for r in rows) == sorted(v for _, v, _, _ in _records(tag))
    by_partition: dict[int, list[int]] = {}
    for partition, offset, *_ in rows:
        by_partition.setdefault(partition, []).append(offset)
    assert all(offsets == list(range(len(offsets))) for offsets in by_partition.values())
    key_partitions: dict[bytes | None, set[int]] = {}
    for partition, _, key, *_ in rows:
        key_partitions.setdefault(key, set()).add(partition)
    assert all(len(p) == 1 for p in key_partitions.values())


def test_kafka_python_writes_what_conveyor_reads(
    kafka_cluster: Cluster, conveyor_admin: Admin
) -> None:
    topic = _topic(conveyor_admin, "kp")
    _kafka_python_produce(kafka_cluster.bootstrap, topic, "kp")
    from_conveyor = _conveyor_rows(kafka_cluster, topic)
    _expected(from_conveyor, "kp")
    assert from_conveyor[0][4] == (("n", from_conveyor[0][4][0][1]), ("tag", b"kp"))
    assert {r[5] for r in from_conveyor} == {ts for *_, ts in _records("kp")}  # CreateTime kept
    assert _kafka_python_consume(kafka_cluster.bootstrap, topic) == from_conveyor
    assert _cli_rows(kafka_cluster, topic) == from_conveyor


def test_aiokafka_writes_and_reads_what_conveyor_reads(
    kafka_cluster: Cluster, conveyor_admin: Admin
) -> None:
    topic = _topic(conveyor_admin, "aio")
    from_aiokafka = asyncio.run(_aiokafka_roundtrip(kafka_cluster.bootstrap, topic, "aio"))
    _expected(from_aiokafka, "aio")
    assert _conveyor_rows(kafka_cluster, topic) == from_aiokafka


def test_conveyor_producer_writes_what_kafka_clients_read(
    kafka_cluster: Cluster, conveyor_admin: Admin
) -> None:
    topic = _topic(conveyor_admin, "cv")
    with conveyor.Producer(kafka_cluster.url) as producer:
        futures = [producer.send(topic, v, key=k, headers=h) for k, v, h, _ in _records("cv")]
        written = [f.result(_TIMEOUT_S) for f in futures]
    from_conveyor = _conveyor_rows(kafka_cluster, topic)
    _expected(from_conveyor, "cv")
    assert sorted((m.partition, m.offset) for m in written) == [r[:2] for r in from_conveyor]
    assert _kafka_python_consume(kafka_cluster.bootstrap, topic) == from_conveyor
    assert asyncio.run(_aiokafka_roundtrip(kafka_cluster.bootstrap, topic, None)) == (from_conveyor)
