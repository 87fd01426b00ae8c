"""The client's one data path, the brokers' Kafka listeners, against real processes: the
``bootstrap_servers=`` form with nothing but Kafka listeners, read_committed, idempotence,
typed errors (``transport="http"``, removed, included) and a leader change."""

from __future__ import annotations

import asyncio
import struct
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

import conveyor
from conveyor.client.errors import KafkaOnlyError
from conveyor.protocol.errors import ConveyorError, ErrorCode
from conveyor.protocol.kafka.apis import ApiKey
from conveyor.transport.tls import TLSConfig
from tests.integration.cluster import Cluster, free_port, wait_for
from tests.integration.test_client import (
    COUNT,
    KEYS,
    check_exactly_once_in_order,
    consume,
    keyed,
    make_topic,
)
from tests.kafka.wire import KafkaWire, fetch_request


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    c = Cluster(tmp_path_factory.mktemp("kafka-transport"), broker_count=1).start()
    try:
        yield c
    finally:
        c.stop()


def _producer(cluster: Cluster, **settings: Any) -> conveyor.Producer:
    return conveyor.Producer(cluster.url, **settings)


def test_every_message_once_in_key_order(cluster: Cluster) -> None:
    topic = "orders-kafka"
    make_topic(cluster, topic)
    with _producer(cluster) as producer:
        futures = [producer.send(topic, value, key=key) for key, value in keyed(COUNT, KEYS)]
        producer.flush()
    metadata = [f.result(timeout=0) for f in (futures[0], futures[-1])]
    assert all(m.topic == topic and m.offset >= 0 for m in metadata)
    # a group member (KIP-848 heartbeats, OffsetCommit and OffsetFetch;
    # tests/integration/test_groups_kafka.py); transport="kafka" is still accepted
    with conveyor.Consumer(cluster.url, [topic], group_id="g-kafka", transport="kafka") as consumer:
        messages = consume(consumer, COUNT)
        consumer.commit()
    check_exactly_once_in_order(messages, COUNT)


def kafka_tls(cluster: Cluster) -> TLSConfig | None:
    """With bootstrap_servers alone there is no https:// URL to say the listeners speak
    TLS: a client asks for it with ``tls=`` (Kafka's security.protocol=SSL), as here when
    the suite runs over HTTPS (CONVEYOR_TEST_TLS=1 sets CONVEYOR_CA)."""
    return TLSConfig.from_env() if cluster.tls_dir is not None else None


def test_bootstrap_servers_alone_auto_create_and_keep_order(cluster: Cluster) -> None:
    """No coordinator URL at all: the Kafka listeners are the only address given; a new
    topic is created by the Metadata request and records wait for it in order."""

    async def run() -> list[conveyor.RecordMetadata]:
        async with conveyor.AsyncProducer(
            bootstrap_servers=cluster.bootstrap, linger_ms=1, tls=kafka_tls(cluster)
        ) as producer:
            pending = [producer.send_nowait("fresh-kafka", f"{i}", key="one") for i in range(2_000)]
            return list(await asyncio.gather(*pending))

    results = asyncio.run(run())
    assert [r.offset for r in results] == list(range(2_000))
    assert len({r.partition for r in results}) == 1
    # read back with nothing but the Kafka listeners either: Metadata, ListOffsets (no
    # committed offset, so auto_offset_reset) and Fetch
    with conveyor.Consumer(
        topics="fresh-kafka",
        bootstrap_servers=cluster.bootstrap,
        auto_offset_reset="earliest",
        tls=kafka_tls(cluster),
    ) as consumer:
        values = [m.value for m in consume(consumer, 2_000)]
    assert values == [str(i).encode() for i in range(2_000)]


def test_read_committed_over_kafka_drops_aborted_transactions(cluster: Cluster) -> None:
    """A transactional producer; read with Fetch's isolation_level 1, the aborted
    transactions dropped. A transaction left open holds the last stable offset back:
    readers stop there and count it as the end (``caught_up``), as Kafka's consumers
    count lag. The writer is given the Kafka listeners and a coordinator URL where
    nothing listens: every transaction step must go over Kafka."""
    topic = "txn-kafka"
    make_topic(cluster, topic, partitions=1)
    tid = f"{topic}-writer"
    writer = conveyor.Producer(
        f"http://127.0.0.1:{free_port()}",  # nothing listens: no HTTP step could work
        bootstrap_servers=cluster.bootstrap,
        tls=kafka_tls(cluster),
        transactional_id=tid,
    )
    with writer as producer:
        with producer.transaction():
            producer.send(topic, b"committed")
        producer.begin_transaction()
        producer.send(topic, b"aborted")
        producer.abort_transaction()
        with producer.transaction():
            producer.send(topic, b"after")
        producer.begin_transaction()
        producer.send(topic, b"open")
        producer.flush()
        with conveyor.Consumer(cluster.url, topic, isolation="read_committed") as consumer:
            values = [m.value for m in consume(consumer, 2, timeout_s=30)]
            assert consumer.poll(timeout=0.5) == []
            wait_for(consumer.caught_up, timeout_s=10)  # at the LSO, not the HW
        assert values == [b"committed", b"after"]
        producer.commit_transaction()
    with conveyor.Consumer(cluster.url, topic, isolation="read_committed") as consumer:
        assert [m.value for m in consume(consumer, 3, timeout_s=30)][-1] == b"open"


def test_idempotent_batches_carry_the_producer_id(cluster: Cluster) -> None:
    """acks=all turns idempotence on: the batch on disk has a producer id from
    InitProducerId (over Kafka) and sequence 0; acks=1 sends none."""
    make_topic(cluster, "idem-kafka", partitions=1)
    for acks in ("all", "1"):
        with _producer(cluster, acks=acks) as producer:
            producer.send("idem-kafka", b"v", key=b"k").result(timeout=30)
    # acks=1 answers before the high watermark covers the record: wait until it does
    wait_for(lambda: len(_batch_producers(cluster, "idem-kafka")) == 2, 10, "both batches")
    (first_id, first_sequence), (second_id, _) = _batch_producers(cluster, "idem-kafka")
    assert first_id >= 0 and first_sequence == 0 and second_id == -1


def _batch_producers(cluster: Cluster, topic: str) -> list[tuple[int, int]]:
    """(producer id, base sequence) of each batch of ``topic``[0], read raw."""
    port = cluster.brokers[1].kafka_port
    assert port is not None
    with KafkaWire("127.0.0.1", port, cluster.brokers[1].ssl_context()) as wire:
        reply = wire.call(ApiKey.FETCH, 12, **fetch_request(12, topic, 0, 0))
    records = reply.responses[0].partitions[0].records
    out, position = [], 0
    while position + 61 <= len(records):
        length = struct.unpack_from(">i", records, position + 8)[0]
        producer_id, _, sequence = struct.unpack_from(">qhi", records, position + 43)
        out.append((producer_id, sequence))
        position += 12 + length
    return out


def test_errors_are_conveyors_typed_errors(cluster: Cluster) -> None:
    make_topic(cluster, "small-kafka", partitions=1)
    with conveyor.Admin(cluster.url) as admin:
        admin.alter_topic_config("small-kafka", {"max_message_bytes": 1024})
    # the broker applies the new limit at its next heartbeat (the change is answered by
    # the coordinator before): until then a large record is still taken
    deadline = time.monotonic() + 10
    with _producer(cluster, delivery_timeout_ms=20_000) as producer:
        while True:
            future = producer.send("small-kafka", b"x" * 4096)
            try:
                future.result(timeout=30)
            except ConveyorError as exc:
                too_large = exc
                break
            assert time.monotonic() < deadline, "the broker never applied max_message_bytes"
    assert too_large.code is ErrorCode.MESSAGE_TOO_LARGE
    # the data path is Kafka only: "http" (removed) and anything else fail at once,
    # naming what to use instead
    with pytest.raises(KafkaOnlyError, match="transport"):
        conveyor.Producer(cluster.url, transport="carrier-pigeon")
    for client in (conveyor.Producer, conveyor.Consumer):
        with pytest.raises(KafkaOnlyError, match="REST API") as removed:
            client(cluster.url, transport="http")
        assert removed.value.code is ErrorCode.INVALID_CONFIG
    with pytest.raises(ValueError, match="bootstrap_servers"):
        conveyor.Producer(bootstrap_servers="no-port")


@pytest.fixture
def cluster3(tmp_path: Path) -> Iterator[Cluster]:
    c = Cluster(tmp_path, broker_count=3).start()
    try:
        yield c
    finally:
        c.stop()


def test_producer_follows_a_leader_change_over_kafka(cluster3: Cluster) -> None:
    make_topic(cluster3, "moving", partitions=3, rf=3)
    with conveyor.Producer(
        bootstrap_servers=cluster3.bootstrap, delivery_timeout_ms=30_000, tls=kafka_tls(cluster3)
    ) as producer:
        records = list(keyed(600, 3))
        before = [producer.send("moving", value, key=key) for key, value in records[:300]]
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
        after = [producer.send("moving", value, key=key) for key, value in records[300:]]
        producer.flush()
        assert all(f.result(0).offset >= 0 for f in after)
    with conveyor.Consumer(cluster3.url, ["moving"]) as consumer:
        consumer.seek_to_beginning()
        check_exactly_once_in_order(consume(consumer, 600), 600)


@pytest.mark.parametrize(
    ("max_request_size", "codec", "requests"),
    [(None, "none", 1), (None, "gzip", 1), (1, "none", 8)],
)
def test_one_produce_request_per_broker_carries_every_ready_partition(
    cluster: Cluster, max_request_size: int | None, codec: str, requests: int
) -> None:
    """Kafka's producer's shape: when partition 0's batch has lingered, the seven others
    (still lingering, same broker) go with it in one Produce request, compressed too (the
    batches compress in the executor, each returning when it will); ``max_request_size``
    below a batch's size sends each alone."""
    from tests.integration.test_admin_transports import kafka_requests

    topic = f"one-request-{requests}-{codec}"
    make_topic(cluster, topic, partitions=8)
    settings: dict[str, Any] = {"linger_ms": 1000, "codec": codec}
    if max_request_size is not None:
        settings["max_request_size"] = max_request_size
    with _producer(cluster, **settings) as producer:
        producer.send(topic, b"warm-up", partition=0).result(timeout=30)  # metadata, id
        before = kafka_requests(cluster)["PRODUCE"]
        futures = [producer.send(topic, b"v0", partition=0)]
        time.sleep(0.2)  # the others' batches open 200 ms later: ready 200 ms after 0's
        futures += [producer.send(topic, b"v%d" % p, partition=p) for p in range(1, 8)]
        offsets = [f.result(timeout=30).offset for f in futures]
        produced = kafka_requests(cluster)["PRODUCE"] - before
    assert offsets == [1] + [0] * 7
    assert produced == requests
