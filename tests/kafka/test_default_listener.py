"""Every broker serves the Kafka protocol by default: a broker started with no Kafka flag
opens a listener on the host of its HTTP one, on a port the OS picks, and the coordinator
lists that address (GET /v1/cluster), which is all a Kafka client (librdkafka here,
Conveyor's own client likewise) needs. A broker started with ``--kafka-listen off`` has
none, and Metadata answers leave it out, as before."""

from __future__ import annotations

import json
import time
import urllib.request
from collections.abc import Iterator
from typing import Any

import pytest

from tests.integration.cluster import Cluster, wait_for
from tests.kafka.conftest import unique_topic

confluent_kafka = pytest.importorskip("confluent_kafka")
confluent_admin = pytest.importorskip("confluent_kafka.admin")

pytestmark = pytest.mark.timeout(180)


SECRET = "cluster-secret-for-the-default-listener-0123456789"
SASL = {"sasl.mechanisms": "PLAIN", "sasl.username": "alice", "sasl.password": "alice-pw-1234"}


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    """TLS and auth on, as a production broker has them, and no Kafka flag at all: the
    default listener must take the broker's TLS and SASL like an explicit one."""
    from conveyor.client.security import SecurityAdmin
    from conveyor.transport.certs import init_certs
    from conveyor.transport.tls import TLSConfig

    root = tmp_path_factory.mktemp("kafka-default")
    init_certs(root / "certs")
    c = Cluster(
        root,
        broker_count=1,
        coordinator_args=["--auth"],
        broker_args=["--auth"],
        tls_dir=root / "certs",
        kafka="default",
        env={"CONVEYOR_CLUSTER_SECRET": SECRET},
    )
    c.start()
    try:
        with SecurityAdmin(c.url, token=SECRET, tls=TLSConfig(cafile=str(c.ca))) as security:
            security.add_user(SASL["sasl.username"], SASL["sasl.password"])
            for operation in ("produce", "consume", "create_topic"):
                security.add_acl("user:alice", operation, "topic", "default-", pattern="prefix")
            security.add_acl("user:alice", "group", "group", "default-", pattern="prefix")
        wait_for(
            lambda: "1 users, 0 tokens, 4 acl rules" in c.brokers[1].log(),
            30,
            "the broker to learn alice and her rules",
        )
        yield c
    finally:
        c.stop()


def listed_kafka_addresses(cluster: Cluster) -> dict[int, str | None]:
    """broker id -> the Kafka address the coordinator lists for it."""
    assert cluster.coordinator is not None
    context = cluster.coordinator.ssl_context()
    request = urllib.request.Request(
        f"{cluster.url}/v1/cluster", headers={"Authorization": f"Bearer {SECRET}"}
    )
    with urllib.request.urlopen(request, context=context) as answer:
        brokers = json.load(answer)["brokers"]
    return {b["broker_id"]: b.get("kafka_address") for b in brokers}


def client_config(cluster: Cluster, bootstrap: str, **extra: Any) -> dict[str, Any]:
    """librdkafka over TLS (the CA of the cluster's certificates) with SASL/PLAIN."""
    assert cluster.ca is not None
    return {
        "bootstrap.servers": bootstrap,
        "security.protocol": "sasl_ssl",
        "ssl.ca.location": str(cluster.ca),
        **SASL,
        **extra,
    }


def test_a_broker_with_no_kafka_flag_serves_kafka_at_the_listed_address(cluster: Cluster) -> None:
    assert not any(a.startswith("--kafka") for a in cluster.brokers[1].argv)
    address = listed_kafka_addresses(cluster)[1]
    assert address is not None, "no Kafka listener listed for a broker started with defaults"
    host, _, port = address.rpartition(":")
    assert host == "127.0.0.1" and int(port) > 0  # the HTTP listener's host, a bound port
    topic = unique_topic("default")
    producer = confluent_kafka.Producer(client_config(cluster, address, acks="all"))
    partition = _a_partition_led_by_broker_1(producer, topic)  # broker 2 may have none
    delivered: list[Any] = []
    for i in range(5):
        value = f"v{i}".encode()
        producer.produce(topic, value=value, partition=partition, on_delivery=_collect(delivered))
    assert producer.flush(60) == 0
    assert [m.error() for m in delivered] == [None] * 5
    consumer = confluent_kafka.Consumer(
        client_config(cluster, address, **{"group.id": "default-g", "enable.auto.commit": False})
    )
    try:
        consumer.assign(
            [confluent_kafka.TopicPartition(topic, partition, confluent_kafka.OFFSET_BEGINNING)]
        )
        values = _consume(consumer, 5)
    finally:
        consumer.close()
    assert values == [f"v{i}".encode() for i in range(5)]


def test_a_broker_with_kafka_off_is_listed_without_one_and_left_out_of_metadata(
    cluster: Cluster,
) -> None:
    cluster.kafka = False  # broker 2 alone: --kafka-listen off
    try:
        cluster.add_broker(2)
    finally:
        cluster.kafka = "default"
    argv = cluster.brokers[2].argv
    assert argv[argv.index("--kafka-listen") + 1] == "off"
    wait_for(lambda: 2 in listed_kafka_addresses(cluster), 30, "broker 2 registered")
    listed = listed_kafka_addresses(cluster)
    assert listed[2] is None and listed[1] is not None
    admin = confluent_admin.AdminClient(client_config(cluster, listed[1]))
    brokers = admin.list_topics(timeout=30).brokers
    assert sorted(brokers) == [1]  # broker 2 has no Kafka listener: not a Kafka node
    assert "kafka listener" not in cluster.brokers[2].log().lower()  # none bound


def _a_partition_led_by_broker_1(producer: Any, topic: str) -> int:
    """A partition of ``topic`` (auto-created by librdkafka's Metadata request) that broker
    1 leads: when the other test's broker, which has no Kafka listener, is up, it may lead
    some, which no Kafka client can reach."""
    led: list[int] = []

    def found() -> bool:
        partitions = producer.list_topics(topic, timeout=10).topics[topic].partitions
        led[:] = [p.id for p in partitions.values() if p.leader == 1]
        return bool(led)

    wait_for(found, 30, f"a partition of {topic} led by broker 1")
    return led[0]


def _collect(delivered: list[Any]) -> Any:
    def report(error: Any, message: Any) -> None:
        delivered.append(message)

    return report


def _consume(consumer: Any, count: int) -> list[bytes]:
    values: list[bytes] = []
    deadline = time.monotonic() + 60
    while len(values) < count and time.monotonic() < deadline:
        for message in consumer.consume(num_messages=count, timeout=1.0):
            assert message.error() is None, message.error()
            values.append(message.value())
    return values
