"""confluent-kafka (librdkafka) against the Kafka listener: an idempotent producer whose keys
land on the partitions Conveyor's own client picks, a manual-assign consumer reading back
keys, values, headers and timestamps, and a SIGKILLed leader during an idempotent run that
loses nothing acknowledged and stores no duplicate."""

from __future__ import annotations

import threading
import time
from collections import Counter
from typing import Any

import pytest

from conveyor.protocol.kafka.apis import ApiKey
from conveyor.protocol.kafka.errors import KafkaError
from conveyor.protocol.partitioner import partition_for_key
from tests.integration.cluster import Cluster, wait_for
from tests.kafka.conftest import unique_topic
from tests.kafka.wire import KafkaWire, metadata_topics, produce_request

confluent_kafka = pytest.importorskip("confluent_kafka")


def _config(cluster: Cluster, **extra: Any) -> dict[str, Any]:
    config: dict[str, Any] = {"bootstrap.servers": cluster.bootstrap, **extra}
    if cluster.ca is not None:
        config.update({"security.protocol": "ssl", "ssl.ca.location": str(cluster.ca)})
    return config


def _produce(producer: Any, topic: str, items: list[tuple[str, str]], **fields: Any) -> list[Any]:
    """Produce and wait for every delivery report; returns the delivered messages."""
    delivered: list[Any] = []
    errors: list[Any] = []

    def report(error: Any, message: Any) -> None:
        (errors if error is not None else delivered).append(error or message)

    for key, value in items:
        producer.produce(
            topic, value=value.encode(), key=key.encode(), on_delivery=report, **fields
        )
        producer.poll(0)
    assert producer.flush(60) == 0
    assert errors == []
    return delivered


def _consume_all(cluster: Cluster, topic: str, partitions: int, expected: int) -> list[Any]:
    consumer = confluent_kafka.Consumer(
        _config(cluster, **{"group.id": "unused-manual-assign", "enable.auto.commit": False})
    )
    try:
        consumer.assign(
            [
                confluent_kafka.TopicPartition(topic, p, confluent_kafka.OFFSET_BEGINNING)
                for p in range(partitions)
            ]
        )
        messages: list[Any] = []
        deadline = time.monotonic() + 60
        while len(messages) < expected and time.monotonic() < deadline:
            for message in consumer.consume(num_messages=500, timeout=1.0):
                assert message.error() is None, message.error()
                messages.append(message)
        return messages
    finally:
        consumer.close()


def test_idempotent_producer_and_manual_assign_consumer(kafka_cluster: Cluster) -> None:
    topic = unique_topic("confluent")
    producer = confluent_kafka.Producer(
        _config(
            kafka_cluster,
            **{
                "enable.idempotence": True,
                "acks": "all",
                "partitioner": "murmur2_random",
                "linger.ms": 5,
            },
        )
    )
    items = [(f"customer-{i % 13}", f"order-{i}") for i in range(300)]
    delivered = _produce(producer, topic, items, headers=[("source", b"confluent")])
    for message in delivered:  # the partition Conveyor's own client picks for the key
        assert message.partition() == partition_for_key(message.key(), 8)
    messages = _consume_all(kafka_cluster, topic, 8, len(items))
    assert sorted((m.key(), m.value()) for m in messages) == sorted(
        (k.encode(), v.encode()) for k, v in items
    )
    by_offset = {(m.partition(), m.offset()): m for m in delivered}
    for message in messages:
        sent = by_offset[(message.partition(), message.offset())]
        assert (message.key(), message.value()) == (sent.key(), sent.value())
        assert message.headers() == [("source", b"confluent")]
        assert message.timestamp()[1] == sent.timestamp()[1] > 0
    per_key: dict[bytes, list[int]] = {}
    for message in sorted(messages, key=lambda m: (m.partition(), m.offset())):
        per_key.setdefault(message.key(), []).append(int(message.value().split(b"-")[1]))
    assert all(values == sorted(values) for values in per_key.values())  # order per key


def test_not_leader_answers_the_current_leader(kafka_cluster3: Cluster) -> None:
    """Produce v10+ to a broker that does not lead the partition: NOT_LEADER_OR_FOLLOWER
    with the current leader and its endpoint (KIP-951), so the client need not refresh."""
    topic = unique_topic("not-leader")
    broker = kafka_cluster3.brokers[1]
    assert broker.kafka_port is not None
    with KafkaWire("127.0.0.1", broker.kafka_port, broker.ssl_context()) as wire:
        deadline = time.monotonic() + 15
        while True:
            meta = wire.call(ApiKey.METADATA, 12, topics=metadata_topics(12, [topic]))
            partitions = meta.topics[0].partitions
            if partitions and all(p.leader_id >= 0 for p in partitions):
                break
            assert time.monotonic() < deadline, meta
            time.sleep(0.1)
        elsewhere = next(p for p in partitions if p.leader_id != 1)
        answer = wire.call(
            ApiKey.PRODUCE, 10, **produce_request(10, topic, elsewhere.partition_index, b"")
        )
    result = answer.responses[0].partition_responses[0]
    assert result.error_code == KafkaError.NOT_LEADER_OR_FOLLOWER
    assert result.current_leader.leader_id == elsewhere.leader_id
    leader = kafka_cluster3.brokers[elsewhere.leader_id]
    assert [(e.node_id, e.port) for e in answer.node_endpoints] == [
        (elsewhere.leader_id, leader.kafka_port)
    ]


@pytest.mark.slow
def test_leader_killed_during_idempotent_run_loses_and_duplicates_nothing(
    kafka_cluster3: Cluster,
) -> None:
    cluster = kafka_cluster3
    topic = unique_topic("confluent-kill")
    producer = confluent_kafka.Producer(
        _config(
            cluster,
            **{
                "enable.idempotence": True,
                "acks": "all",
                "partitioner": "murmur2_random",
                "linger.ms": 2,
                "message.timeout.ms": 60_000,
            },
        )
    )
    acknowledged: list[bytes] = []
    failed: list[Any] = []

    def report(error: Any, message: Any) -> None:
        if error is None:
            acknowledged.append(message.value())
        else:
            failed.append(error)

    producer.produce(topic, value=b"warm-up", key=b"k", on_delivery=report)
    assert producer.flush(30) == 0
    total = 3000
    stop = threading.Event()

    def run() -> None:
        for i in range(total):
            producer.produce(topic, value=b"v-%d" % i, key=b"k-%d" % (i % 20), on_delivery=report)
            producer.poll(0)
            if i % 100 == 0:
                time.sleep(0.05)  # spread the run over the kill
        producer.flush(90)
        stop.set()

    thread = threading.Thread(target=run)
    thread.start()
    wait_for(lambda: len(acknowledged) > total // 4, 30, "a quarter acknowledged")
    cluster.brokers[1].kill()  # SIGKILL: its leaderships move to the others
    thread.join(120)
    assert stop.is_set()
    assert failed == []
    assert len(acknowledged) == total + 1
    cluster.brokers[1].start()  # back, so the consumer sees every partition's history
    cluster.brokers[1].wait_ready()
    messages = _consume_all(cluster, topic, 8, total + 1)
    stored = Counter(m.value() for m in messages)
    assert [v for v, n in stored.items() if n > 1] == []  # no duplicate
    assert set(acknowledged) <= set(stored)  # nothing acknowledged lost


def _produce_some_keyless(cluster: Cluster, topic: str, **config: Any) -> dict[int, int]:
    """Produce 20 records to partition 0, 3 of them keyless; each record's delivery error
    code (0 when delivered)."""
    producer = confluent_kafka.Producer(_config(cluster, acks="all", **config))
    producer.list_topics(topic, timeout=30)  # known first: no batch cut when it arrives
    outcome: dict[int, int] = {}

    def report(error: Any, message: Any) -> None:
        outcome[int(message.value())] = 0 if error is None else error.code()

    for i in range(20):
        key = None if i in KEYLESS else f"k{i}".encode()
        producer.produce(topic, value=str(i).encode(), key=key, partition=0, on_delivery=report)
    assert producer.flush(60) == 0
    return outcome


KEYLESS = {3, 7, 11}


def test_keyless_records_to_a_compacted_topic_fail_alone(kafka_cluster: Cluster) -> None:
    """Keyless records to a compacted topic: Produce v8+ names each in record_errors
    (KIP-467), so librdkafka fails exactly those with INVALID_RECORD and the keyed records
    of the same batch with _INVALID_DIFFERENT_RECORD (as against Kafka: librdkafka's test
    0011 record_fail); keyed records in batches of their own are stored."""
    from confluent_kafka.admin import AdminClient, NewTopic

    topics = [unique_topic("compact-keyless"), unique_topic("compact-keyless-single")]
    admin = AdminClient(_config(kafka_cluster))
    new = [NewTopic(t, 1, 1, config={"cleanup.policy": "compact"}) for t in topics]
    for future in admin.create_topics(new).values():
        future.result(30)
    error = confluent_kafka.KafkaError
    invalid = {i: error.INVALID_RECORD for i in KEYLESS}

    # a linger longer than the test: the batch goes out whole at flush (which ignores it)
    one_batch = _produce_some_keyless(kafka_cluster, topics[0], **{"linger.ms": 60_000})
    assert one_batch == {i: error._INVALID_DIFFERENT_RECORD for i in range(20)} | invalid

    single = _produce_some_keyless(kafka_cluster, topics[1], **{"batch.size": 1})
    assert single == dict.fromkeys(range(20), 0) | invalid
    stored = _consume_all(kafka_cluster, topics[1], 1, 17)
    assert sorted(m.key() for m in stored) == sorted(
        f"k{i}".encode() for i in range(20) if i not in KEYLESS
    )
