"""read_committed over many segments with confluent-kafka (issue 21): aborted transactions
are found through the per-segment aborted-transaction indexes (``.txnindex``) across
segment rolls, after the broker is SIGKILLed and restarted, and after one index file is
damaged while it is down (the broker rebuilds it from its segment)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from tests.integration.cluster import Cluster
from tests.kafka.conftest import unique_topic

confluent_kafka = pytest.importorskip("confluent_kafka")
from confluent_kafka.admin import AdminClient, NewTopic  # noqa: E402

TRANSACTIONS = 24


def _config(cluster: Cluster, **extra: Any) -> dict[str, Any]:
    config: dict[str, Any] = {"bootstrap.servers": cluster.bootstrap, **extra}
    if cluster.ca is not None:
        config.update({"security.protocol": "ssl", "ssl.ca.location": str(cluster.ca)})
    return config


def _write(producer: Any, topic: str, tag: str, count: int) -> list[str]:
    """``count`` transactions of 5 records, odd ones aborted; the committed values."""
    committed = []
    for t in range(count):
        producer.begin_transaction()
        values = [f"{tag}-{t}-{i}-" + "x" * 150 for i in range(5)]
        for value in values:
            producer.produce(topic, value=value.encode(), partition=0)
        assert producer.flush(30) == 0
        if t % 2:
            producer.abort_transaction(30)
        else:
            producer.commit_transaction(30)
            committed += values
    return committed


def _read_committed(cluster: Cluster, topic: str, expected: int) -> list[str]:
    """Every value from the beginning up to the end offset (the last stable offset)."""
    consumer = confluent_kafka.Consumer(
        _config(
            cluster,
            **{
                "group.id": f"reader-{topic}",
                "enable.auto.commit": False,
                "isolation.level": "read_committed",
                "enable.partition.eof": True,
            },
        )
    )
    values: list[str] = []
    try:
        consumer.assign(
            [confluent_kafka.TopicPartition(topic, 0, confluent_kafka.OFFSET_BEGINNING)]
        )
        for _ in range(300):  # each poll waits at most 0.2 s: a 60 s bound
            message = consumer.poll(0.2)
            if message is None:
                continue
            error = message.error()
            if error is not None:
                assert not error.fatal(), error
                eof = error.code() == confluent_kafka.KafkaError._PARTITION_EOF
                if eof and len(values) >= expected:
                    break
                continue  # a retriable error (the leader still starting): librdkafka retries
            values.append(message.value().decode())
        return values
    finally:
        consumer.close()


def _segment_files(cluster: Cluster, topic: str) -> list[Path]:
    return sorted(cluster.brokers[1].data_dir.glob(f"**/{topic}*/*.txnindex"))


def test_read_committed_across_rolls_a_sigkill_and_a_damaged_index(kafka_cluster: Cluster) -> None:
    cluster = kafka_cluster  # this module's own (module-scoped): killing its broker is fine
    topic = unique_topic("txn-seg")
    admin = AdminClient(_config(cluster))
    new = NewTopic(topic, 1, 1, config={"segment.bytes": "2048"})
    for future in admin.create_topics([new]).values():
        future.result(30)
    producer = confluent_kafka.Producer(
        _config(cluster, **{"transactional.id": f"tx-{topic}", "transaction.timeout.ms": 60000})
    )
    producer.init_transactions(30)
    committed = _write(producer, topic, "a", TRANSACTIONS)
    assert len(_segment_files(cluster, topic)) > 4  # the transactions span many segments
    assert _read_committed(cluster, topic, len(committed)) == committed

    broker = cluster.brokers[1]
    broker.kill()  # SIGKILL: no clean shutdown, the active segment's index is rebuilt
    indexes = _segment_files(cluster, topic)
    damaged = indexes[len(indexes) // 2]
    damaged.write_bytes(damaged.read_bytes()[:-5])  # a torn entry: rebuilt, never trusted
    broker.start()
    broker.wait_ready()
    assert _read_committed(cluster, topic, len(committed)) == committed
    assert "rebuilt the aborted-transaction index" in broker.log()

    producer = confluent_kafka.Producer(  # the old one's connection died with the broker
        _config(cluster, **{"transactional.id": f"tx-{topic}", "transaction.timeout.ms": 60000})
    )
    producer.init_transactions(30)
    committed += _write(producer, topic, "b", 6)
    assert _read_committed(cluster, topic, len(committed)) == committed
