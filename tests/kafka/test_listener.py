"""The Kafka listener itself: ApiVersions, Metadata, framing and bad input, against a real
broker process (kcat for an independent client, a raw socket for exact bytes)."""

from __future__ import annotations

import struct
import subprocess
import urllib.request
import uuid

from conveyor.protocol.kafka.apis import ApiKey
from conveyor.protocol.kafka.errors import KafkaError
from tests.integration.cluster import Cluster, wait_for
from tests.kafka.conftest import kcat_path
from tests.kafka.wire import KafkaWire, encode_request, metadata_topics, request_frame


def _wire(cluster: Cluster) -> KafkaWire:
    broker = cluster.brokers[1]
    assert broker.kafka_port is not None
    return KafkaWire("127.0.0.1", broker.kafka_port, broker.ssl_context())


def test_api_versions_lists_the_served_apis(kafka_cluster: Cluster) -> None:
    with _wire(kafka_cluster) as wire:
        answer = wire.call(
            ApiKey.API_VERSIONS, 3, client_software_name="t", client_software_version="1"
        )
    assert answer.error_code == 0
    ranges = {a.api_key: (a.min_version, a.max_version) for a in answer.api_keys}
    assert ranges[ApiKey.PRODUCE] == (0, 11)  # from v0 although v0-2 are refused (KAFKA-18659)
    assert ranges[ApiKey.METADATA][1] >= 9
    assert ApiKey.API_VERSIONS in ranges


def test_unsupported_api_versions_version_gets_the_ranges_in_v0(kafka_cluster: Cluster) -> None:
    with _wire(kafka_cluster) as wire:
        wire.send_raw(request_frame(ApiKey.API_VERSIONS, 99, b"\x00\x00\x00", correlation_id=42))
        frame = wire.read_frame()
        correlation, error_code = struct.unpack(">ih", frame[:6])
        assert (correlation, error_code) == (42, KafkaError.UNSUPPORTED_VERSION)
        count = struct.unpack(">i", frame[6:10])[0]
        assert count >= 2
        # the connection stays usable: the client retries with a version it can use
        assert wire.call(ApiKey.API_VERSIONS, 0).error_code == 0


def test_metadata_lists_the_broker_and_auto_creates(kafka_cluster: Cluster) -> None:
    topic = "kafka-meta-" + uuid.uuid4().hex[:6]
    broker = kafka_cluster.brokers[1]
    with _wire(kafka_cluster) as wire:
        topics = metadata_topics(12, [topic])
        answer = wire.call(ApiKey.METADATA, 12, topics=topics, allow_auto_topic_creation=True)
        assert [(b.node_id, b.host, b.port) for b in answer.brokers] == [
            (1, "127.0.0.1", broker.kafka_port)
        ]
        assert answer.cluster_id and answer.controller_id == 1
        (described,) = answer.topics
        assert described.name == topic and described.error_code == 0
        assert described.topic_id != uuid.UUID(int=0)
        assert len(described.partitions) == 8
        # LEADER_NOT_AVAILABLE until the broker has opened the new partitions, as Kafka
        assert {p.error_code for p in described.partitions} <= {0, KafkaError.LEADER_NOT_AVAILABLE}

        def led() -> bool:
            answer = wire.call(ApiKey.METADATA, 12, topics=topics, allow_auto_topic_creation=False)
            partitions = answer.topics[0].partitions
            return all(p.error_code == 0 and p.leader_id == 1 for p in partitions)

        wait_for(led, 15, f"{topic}'s leaders served")
        # the topic id is stable, and v1 (no auto-creation flag) sees the same topic
        again = wire.call(ApiKey.METADATA, 12, topics=topics, allow_auto_topic_creation=False)
        assert again.topics[0].topic_id == described.topic_id
        old = wire.call(ApiKey.METADATA, 1, topics=metadata_topics(1, [topic]))
        assert old.topics[0].name == topic and len(old.topics[0].partitions) == 8


def test_metadata_without_auto_creation_and_invalid_names(kafka_cluster: Cluster) -> None:
    with _wire(kafka_cluster) as wire:
        answer = wire.call(
            ApiKey.METADATA,
            9,
            topics=metadata_topics(9, ["kafka-absent-" + uuid.uuid4().hex[:6], "bad$name"]),
            allow_auto_topic_creation=False,
        )
    codes = sorted(t.error_code for t in answer.topics)
    assert codes == [KafkaError.UNKNOWN_TOPIC_OR_PARTITION, KafkaError.INVALID_TOPIC_EXCEPTION]


def test_kcat_lists_brokers_and_topics(kafka_cluster: Cluster) -> None:
    topic = "kafka-kcat-" + uuid.uuid4().hex[:6]
    argv = [kcat_path(), "-b", kafka_cluster.bootstrap, "-L", "-t", topic, "-m", "10"]
    if kafka_cluster.ca is not None:
        argv += ["-X", "security.protocol=ssl", "-X", f"ssl.ca.location={kafka_cluster.ca}"]
    listing = subprocess.run(argv, capture_output=True, text=True, timeout=30, check=True)
    assert "1 brokers:" in listing.stdout
    assert f'topic "{topic}" with 8 partitions' in listing.stdout


def test_pipelined_requests_are_answered_in_order(kafka_cluster: Cluster) -> None:
    with _wire(kafka_cluster) as wire:
        frames = [
            request_frame(ApiKey.METADATA, 9, encode_request(ApiKey.METADATA, 9, topics=[]), 10),
            request_frame(ApiKey.API_VERSIONS, 0, b"", 11),
            request_frame(ApiKey.METADATA, 1, encode_request(ApiKey.METADATA, 1, topics=[]), 12),
        ]
        wire.send_raw(b"".join(frames))
        correlations = [struct.unpack(">i", wire.read_frame()[:4])[0] for _ in frames]
    assert correlations == [10, 11, 12]


def test_bad_input_closes_only_that_connection(kafka_cluster: Cluster) -> None:
    bad_frames = [
        request_frame(999, 0, b""),  # unknown API key
        request_frame(ApiKey.METADATA, 77, b""),  # unsupported version of another API
        request_frame(ApiKey.PRODUCE, 2, b"\x00" * 20),  # advertised v0-2 are refused
        request_frame(ApiKey.METADATA, 9, b"\xff\xff\xff"),  # truncated body
        struct.pack(">i", 2**31 - 1) + b"\x00" * 100,  # beyond socket.request.max.bytes
        struct.pack(">i", -5),  # negative size
        struct.pack(">i", 3) + b"abc",  # shorter than any header
    ]
    with _wire(kafka_cluster) as good:
        for frame in bad_frames:
            with _wire(kafka_cluster) as bad:
                bad.send_raw(frame)
                assert bad.closed_by_broker(), frame[:12]
            assert good.call(ApiKey.API_VERSIONS, 2).error_code == 0


def test_listener_metrics(kafka_cluster: Cluster) -> None:
    with _wire(kafka_cluster) as wire:
        wire.call(ApiKey.API_VERSIONS, 3)
        broker = kafka_cluster.brokers[1]
        with urllib.request.urlopen(
            broker.url + "/metrics", timeout=10, context=broker.ssl_context()
        ) as response:
            text = response.read().decode()
    assert 'conveyor_broker_kafka_requests_total{api="API_VERSIONS"}' in text
    open_now = [
        line for line in text.splitlines() if line.startswith("conveyor_broker_kafka_connections ")
    ]
    assert open_now and float(open_now[0].split()[1]) >= 1
    assert "conveyor_broker_kafka_protocol_errors_total" in text
