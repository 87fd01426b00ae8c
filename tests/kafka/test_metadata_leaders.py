"""A new replicated topic's leaders in every broker's Kafka Metadata as soon as they serve.

Each broker answers Metadata from the coordinator, which advertises a partition once a
replica reported hosting it. A broker that opened replicas reports again at once
(``rules.hosting_changed``) and vouches for what it leads itself
(``kafka/metadata.with_own_leadership``), so librdkafka's first answer, which it keeps
(a consumer's "Local: Unknown partition"), names the leaders. The heartbeat interval is
long here so that waiting for the next heartbeat, as brokers did, misses the deadline.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from typing import Any

import pytest

from conveyor.bench.fetch import wait_until_served
from conveyor.client import Admin
from tests.integration.cluster import Cluster
from tests.kafka.conftest import unique_topic

confluent_kafka = pytest.importorskip("confluent_kafka")
admin_module = pytest.importorskip("confluent_kafka.admin")

HEARTBEAT_INTERVAL_MS = 4000
PARTITIONS = 8
# From the last leader serving over HTTP to every broker's Metadata naming every leader:
# one report's round trip to the coordinator (the old wait was a heartbeat interval)
METADATA_LAG_S_MAX = 1.5


@pytest.fixture(scope="module")
def slow_heartbeat_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    c = Cluster(
        tmp_path_factory.mktemp("kmeta"),
        broker_count=3,
        coordinator_args=[
            "--heartbeat-interval-ms",
            str(HEARTBEAT_INTERVAL_MS),
            "--session-timeout-ms",
            str(3 * HEARTBEAT_INTERVAL_MS),
        ],
    ).start()
    try:
        yield c
    finally:
        c.stop()


def _leaders(cluster: Cluster, kafka_port: int, topic: str) -> list[int]:
    """The leaders one broker's Metadata names (-1: none), asked by a fresh librdkafka
    client whose only bootstrap server is that broker."""
    config: dict[str, Any] = {"bootstrap.servers": f"127.0.0.1:{kafka_port}"}
    if cluster.ca is not None:
        config.update({"security.protocol": "ssl", "ssl.ca.location": str(cluster.ca)})
    described = admin_module.AdminClient(config).list_topics(topic, timeout=10).topics[topic]
    if described.error is not None:
        return []
    return [described.partitions[p].leader for p in sorted(described.partitions)]


def test_every_broker_names_a_new_rf3_topics_leaders_once_they_serve(
    slow_heartbeat_cluster: Cluster,
) -> None:
    cluster = slow_heartbeat_cluster
    topic = unique_topic("leaders")
    with Admin(url=cluster.url) as admin:
        admin.create_topic(topic, PARTITIONS, replication_factor=3)
        expected = [p.leader for p in admin.describe_topic(topic).partitions]
    asyncio.run(wait_until_served(cluster.url, topic, range(PARTITIONS)))
    served_at = time.monotonic()
    ports = [b.kafka_port for b in cluster.brokers.values() if b.kafka_port is not None]
    assert len(ports) == 3
    answers: dict[int, list[int]] = {}
    while True:
        for port in ports:
            if answers.get(port) != expected:
                answers[port] = _leaders(cluster, port, topic)
        if all(answers[port] == expected for port in ports):
            break
        lag_s = time.monotonic() - served_at
        assert lag_s < METADATA_LAG_S_MAX, f"after {lag_s:.2f} s: {answers} (want {expected})"
