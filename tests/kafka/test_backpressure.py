"""A Kafka consumer that stops reading: its answer stays counted in the broker's fetch
memory budget only until the write deadline resets its connection; other clients carry
on. (The HTTP twin is tests/integration/test_abuse.py.)"""

from __future__ import annotations

import os
import socket
import urllib.request
from collections.abc import Iterator

import pytest

from conveyor.protocol.kafka.apis import SERVED, ApiKey
from tests.integration.cluster import Cluster, wait_for
from tests.kafka.wire import (
    KafkaWire,
    fetch_request,
    metadata_topics,
    produce_request,
    request_frame,
)

WRITE_TIMEOUT_MS = 1500


@pytest.fixture(scope="module")
def slow_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    c = Cluster(
        tmp_path_factory.mktemp("kafka-slow"),
        broker_count=1,
        broker_args=["--fetch-write-timeout-ms", str(WRITE_TIMEOUT_MS)],
    )
    c.start()
    try:
        yield c
    finally:
        c.stop()


def _metric(cluster: Cluster, name: str) -> float:
    broker = cluster.brokers[1]
    with urllib.request.urlopen(
        broker.url + "/metrics", timeout=10, context=broker.ssl_context()
    ) as response:
        for line in response.read().decode().splitlines():
            if line.startswith(name + " "):
                return float(line.split()[1])
    return 0.0


def test_a_reader_that_stops_is_reset_and_releases_its_fetch_memory(
    slow_cluster: Cluster,
) -> None:
    broker = slow_cluster.brokers[1]
    assert broker.kafka_port is not None
    from conveyor.protocol.records import encode_batch

    with KafkaWire("127.0.0.1", broker.kafka_port, broker.ssl_context()) as wire:
        wait_for(
            lambda: all(
                p.leader_id >= 0
                for p in wire.call(ApiKey.METADATA, 9, topics=metadata_topics(9, ["slow"]))
                .topics[0]
                .partitions
            ),
            15,
            "topic slow led",
        )
        batch = encode_batch([(None, os.urandom(500 * 1024))])  # random: not compressible

        def produced() -> bool:
            answer = wire.call(ApiKey.PRODUCE, 9, **produce_request(9, "slow", 0, batch))
            return bool(answer.responses[0].partition_responses[0].error_code == 0)

        wait_for(produced, 15, "the leader to serve slow-0")  # a moment after Metadata
        for _ in range(23):  # 12 MiB in all, more than loopback's socket buffers hold
            assert produced()
    fetch = (
        SERVED[ApiKey.FETCH]
        .request[12](**fetch_request(12, "slow", 0, 0, partition_max_bytes=16 * 1024 * 1024))
        .encode(version=12)
    )
    stuck = socket.socket()
    stuck.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)  # and never read
    stuck.connect(("127.0.0.1", broker.kafka_port))
    try:
        stuck.sendall(request_frame(ApiKey.FETCH, 12, fetch))
        wait_for(
            lambda: _metric(slow_cluster, "conveyor_broker_fetch_memory_bytes") > 0,
            10,
            "the answer held in the fetch memory budget",
        )
        with KafkaWire("127.0.0.1", broker.kafka_port) as other:  # others are served
            assert other.call(ApiKey.API_VERSIONS, 3).error_code == 0
        wait_for(
            lambda: _metric(slow_cluster, "conveyor_broker_kafka_slow_readers_closed_total") >= 1,
            WRITE_TIMEOUT_MS / 1000 + 20,
            "the stuck reader reset after the write deadline",
        )
        wait_for(
            lambda: _metric(slow_cluster, "conveyor_broker_fetch_memory_bytes") == 0,
            10,
            "its fetch memory released",
        )
    finally:
        stuck.close()
