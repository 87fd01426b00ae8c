"""DeleteRecords with real Kafka clients on three brokers: confluent-kafka's AdminClient
sends each partition to its leader; afterwards kcat, kafka-python and confluent-kafka
consumers start at the new log start (one asked for an offset below it is reset there, as
Kafka's OFFSET_OUT_OF_RANGE tells it), and Conveyor's own Admin sees the same."""

from __future__ import annotations

import subprocess
import warnings
from collections.abc import Iterator
from typing import Any

import pytest

from conveyor.client import Admin
from tests.integration.cluster import Cluster, wait_for
from tests.kafka.conftest import kcat_path, unique_topic

confluent_kafka = pytest.importorskip("confluent_kafka")
kafka_admin = pytest.importorskip("confluent_kafka.admin")
_TIMEOUT_S = 30
_PER_PARTITION = 20


@pytest.fixture(scope="module")
def topic(kafka_cluster3: Cluster) -> Iterator[str]:
    """Three partitions on three brokers (leaders spread), 20 records each."""
    name = unique_topic("deleted")
    with Admin(kafka_cluster3.url) as admin:
        admin.create_topic(name, partitions=3, replication_factor=3)

        def in_sync() -> bool:
            described = admin.describe_topic(name)
            return all(p.leader is not None and len(p.isr) == 3 for p in described.partitions)

        wait_for(in_sync, _TIMEOUT_S, f"{name}: leaders and full ISRs")
    producer = confluent_kafka.Producer(
        {"bootstrap.servers": kafka_cluster3.bootstrap, "linger.ms": 5}
    )
    for partition in range(3):
        for i in range(_PER_PARTITION):
            producer.produce(name, f"{partition}-{i}".encode(), partition=partition)
    assert producer.flush(_TIMEOUT_S) == 0
    del producer  # before the cluster stops: its threads would log connection failures
    yield name


def test_admin_client_deletes_on_each_leader(kafka_cluster3: Cluster, topic: str) -> None:
    admin = kafka_admin.AdminClient({"bootstrap.servers": kafka_cluster3.bootstrap})
    tp = confluent_kafka.TopicPartition
    asked = [
        tp(topic, 0, 7),
        tp(topic, 1, confluent_kafka.OFFSET_END),  # -1: up to the high watermark
        tp(topic, 2, _PER_PARTITION + 5),  # beyond the high watermark
    ]
    futures = admin.delete_records(asked, request_timeout=_TIMEOUT_S)
    by_partition = {t.partition: f for t, f in futures.items()}
    assert by_partition[0].result(_TIMEOUT_S).low_watermark == 7
    assert by_partition[1].result(_TIMEOUT_S).low_watermark == _PER_PARTITION
    with pytest.raises(confluent_kafka.KafkaException) as refused:
        by_partition[2].result(_TIMEOUT_S)
    assert refused.value.args[0].name() == "OFFSET_OUT_OF_RANGE"

    wait_for(  # Conveyor's own Admin sees the same log starts (from the leaders' reports)
        lambda: _log_starts(kafka_cluster3, topic) == {0: 7, 1: _PER_PARTITION, 2: 0},
        _TIMEOUT_S,
        "the coordinator to report the log starts",
    )

    assert _kcat_offsets(kafka_cluster3, topic, 0)[:1] == [7]
    assert _kafka_python_first_offsets(kafka_cluster3.bootstrap, topic) == {0: 7, 2: 0}
    # a consumer asking below the start is told OFFSET_OUT_OF_RANGE and resets to it
    assert _confluent_first_offset(kafka_cluster3.bootstrap, topic, 0, at=3) == 7
    low, high = _watermarks(kafka_cluster3.bootstrap, topic, 1)
    assert (low, high) == (_PER_PARTITION, _PER_PARTITION)


def _log_starts(cluster: Cluster, topic: str) -> dict[int, int | None]:
    with Admin(cluster.url) as admin:
        return {p.partition: p.log_start_offset for p in admin.describe_topic(topic).partitions}


def _kcat_offsets(cluster: Cluster, topic: str, partition: int) -> list[int]:
    argv = [
        kcat_path(),
        "-b",
        cluster.bootstrap,
        "-C",
        "-t",
        topic,
        "-p",
        str(partition),
        "-o",
        "beginning",
        "-e",
        "-q",
        "-f",
        "%o\\n",
    ]
    done = subprocess.run(argv, capture_output=True, text=True, timeout=_TIMEOUT_S, check=True)
    return [int(line) for line in done.stdout.split()]


def _kafka_python_first_offsets(bootstrap: str, topic: str) -> dict[int, int]:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        from kafka import KafkaConsumer, TopicPartition

    consumer = KafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False, group_id=None)
    try:
        partitions = [TopicPartition(topic, p) for p in (0, 2)]
        consumer.assign(partitions)
        consumer.seek_to_beginning(*partitions)
        first: dict[int, int] = {}
        for _ in range(_TIMEOUT_S * 2):
            for tp, records in consumer.poll(timeout_ms=500).items():
                first.setdefault(tp.partition, records[0].offset)
            if len(first) == 2:
                break
        return first
    finally:
        consumer.close()


def _consumer(bootstrap: str) -> Any:
    return confluent_kafka.Consumer(
        {
            "bootstrap.servers": bootstrap,
            "group.id": unique_topic("unused"),
            "enable.auto.commit": False,
            "auto.offset.reset": "earliest",
        }
    )


def _confluent_first_offset(bootstrap: str, topic: str, partition: int, at: int) -> int:
    consumer = _consumer(bootstrap)
    try:
        consumer.assign([confluent_kafka.TopicPartition(topic, partition, at)])
        for _ in range(_TIMEOUT_S * 2):
            message = consumer.poll(0.5)
            if message is not None and message.error() is None:
                return int(message.offset())
        raise AssertionError("no message consumed")
    finally:
        consumer.close()


def _watermarks(bootstrap: str, topic: str, partition: int) -> tuple[int, int]:
    consumer = _consumer(bootstrap)
    try:
        low, high = consumer.get_watermark_offsets(
            confluent_kafka.TopicPartition(topic, partition), timeout=_TIMEOUT_S
        )
        return int(low), int(high)
    finally:
        consumer.close()
