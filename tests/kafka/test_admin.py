"""The admin APIs with a real Kafka client (confluent-kafka's AdminClient, librdkafka):
what it creates, grows, alters and deletes is what Conveyor's own Admin (HTTP) then sees,
since both call the same coordinator operations; refused requests change nothing."""

from __future__ import annotations

import warnings
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from conveyor.client import Admin
from conveyor.protocol.errors import ConveyorError
from conveyor.protocol.kafka.apis import ApiKey
from tests.integration.cluster import Cluster, wait_for
from tests.kafka.conftest import unique_topic
from tests.kafka.wire import KafkaWire

kafka_admin = pytest.importorskip("confluent_kafka.admin")
KafkaException = pytest.importorskip("confluent_kafka").KafkaException
_TIMEOUT_S = 20


@pytest.fixture(scope="module")
def admin(kafka_cluster: Cluster) -> Iterator[Any]:
    yield kafka_admin.AdminClient({"bootstrap.servers": kafka_cluster.bootstrap})


@pytest.fixture(scope="module")
def conveyor_admin(kafka_cluster: Cluster) -> Iterator[Admin]:
    with Admin(kafka_cluster.url) as client:
        yield client


def _result(future: Any) -> Any:
    return future.result(_TIMEOUT_S)


def _error(future: Any) -> Any:
    with pytest.raises(KafkaException) as raised:
        future.result(_TIMEOUT_S)
    return raised.value.args[0]


def test_create_topics_with_configs_lands_in_conveyor(admin: Any, conveyor_admin: Admin) -> None:
    name = unique_topic("created")
    new = kafka_admin.NewTopic(
        name, 3, 1, config={"retention.ms": "60000", "flush.ms": "250", "max.message.bytes": "4096"}
    )
    _result(admin.create_topics([new])[name])
    described = conveyor_admin.describe_topic(name)
    assert len(described.partitions) == 3 and described.replication_factor == 1
    assert described.config.retention_ms == 60_000
    assert described.config.flush == "interval:250"
    assert described.config.max_message_bytes == 4096
    again = _error(admin.create_topics([kafka_admin.NewTopic(name, 1, 1)])[name])
    assert again.name() == "TOPIC_ALREADY_EXISTS"


def test_bad_creates_get_kafka_codes_and_create_nothing(admin: Any, conveyor_admin: Admin) -> None:
    names = [unique_topic("bad") for _ in range(4)]
    cases = [
        (kafka_admin.NewTopic(names[0], 1, 7), "INVALID_REPLICATION_FACTOR"),
        (
            kafka_admin.NewTopic(names[1], 1, 1, config={"cleanup.policy": "shred"}),
            "INVALID_CONFIG",
        ),
        (kafka_admin.NewTopic(names[2], 1, 1, config={"no.such": "1"}), "INVALID_CONFIG"),
        (kafka_admin.NewTopic(names[3], 1, 1, config={"retention.ms": "soon"}), "INVALID_CONFIG"),
    ]
    futures = admin.create_topics([topic for topic, _ in cases])
    for topic, code in cases:
        assert _error(futures[topic.topic]).name() == code
    existing = {t.name for t in conveyor_admin.list_topics()}
    assert not existing & set(names)
    validated = unique_topic("dry")
    _result(
        admin.create_topics([kafka_admin.NewTopic(validated, 2, 1)], validate_only=True)[validated]
    )
    assert validated not in {t.name for t in conveyor_admin.list_topics()}


def test_manual_replica_assignments(
    admin: Any, conveyor_admin: Admin, kafka_cluster: Cluster
) -> None:
    """kafka-python creates (confluent-kafka 2.16.1's NewTopic refuses an assignment
    locally), confluent-kafka grows."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        from kafka.admin import NewTopic
        from kafka.errors import InvalidReplicationAssignmentError

        from kafka import KafkaAdminClient

    name, bad = unique_topic("placed"), unique_topic("misplaced")
    client = KafkaAdminClient(bootstrap_servers=kafka_cluster.bootstrap)
    try:
        client.create_topics([NewTopic(name, -1, -1, replica_assignments={0: [1], 1: [1]})])
        with pytest.raises(InvalidReplicationAssignmentError):  # there is no broker 7
            client.create_topics([NewTopic(bad, -1, -1, replica_assignments={0: [1], 1: [7]})])
    finally:
        client.close()
    assert [p.replicas for p in conveyor_admin.describe_topic(name).partitions] == [[1], [1]]
    assert bad not in {t.name for t in conveyor_admin.list_topics()}
    grow = kafka_admin.NewPartitions(name, 3, replica_assignment=[[1]])
    _result(admin.create_partitions([grow])[name])
    assert len(conveyor_admin.describe_topic(name).partitions) == 3


def test_create_partitions_grows_the_topic(admin: Any, conveyor_admin: Admin) -> None:
    name = unique_topic("grow")
    conveyor_admin.create_topic(name, partitions=2, replication_factor=1)
    _result(admin.create_partitions([kafka_admin.NewPartitions(name, 5)])[name])
    assert len(conveyor_admin.describe_topic(name).partitions) == 5
    shrink = _error(admin.create_partitions([kafka_admin.NewPartitions(name, 3)])[name])
    assert shrink.name() == "INVALID_PARTITIONS"
    assert len(conveyor_admin.describe_topic(name).partitions) == 5


def test_describe_and_alter_configs(admin: Any, conveyor_admin: Admin) -> None:
    name = unique_topic("configs")
    conveyor_admin.create_topic(name, partitions=1, replication_factor=1)
    resource = kafka_admin.ConfigResource("topic", name)
    described = _result(admin.describe_configs([resource])[resource])
    assert described["retention.ms"].value == str(7 * 24 * 3600 * 1000)
    assert described["retention.ms"].source == kafka_admin.ConfigSource.DEFAULT_CONFIG.value
    assert described["cleanup.policy"].value == "delete"
    assert not described["cleanup.policy"].is_read_only
    assert described["min.insync.replicas"].value == "1"

    op = kafka_admin.AlterConfigOpType
    change = kafka_admin.ConfigResource(
        "topic",
        name,
        incremental_configs=[
            kafka_admin.ConfigEntry("retention.ms", "120000", incremental_operation=op.SET),
            kafka_admin.ConfigEntry("segment.bytes", "1048576", incremental_operation=op.SET),
        ],
    )
    _result(admin.incremental_alter_configs([change])[change])
    config = conveyor_admin.describe_topic(name).config
    assert (config.retention_ms, config.segment_bytes) == (120_000, 1_048_576)
    described = _result(admin.describe_configs([resource])[resource])
    assert described["retention.ms"].value == "120000"
    assert described["retention.ms"].source == kafka_admin.ConfigSource.DYNAMIC_TOPIC_CONFIG.value

    refused = kafka_admin.ConfigResource(
        "topic",
        name,
        incremental_configs=[
            kafka_admin.ConfigEntry("retention.ms", "1", incremental_operation=op.SET),
            kafka_admin.ConfigEntry("min.insync.replicas", "3", incremental_operation=op.SET),
        ],
    )
    assert _error(admin.incremental_alter_configs([refused])[refused]).name() == "INVALID_CONFIG"
    assert conveyor_admin.describe_topic(name).config.retention_ms == 120_000  # all or nothing
    reset = kafka_admin.ConfigResource(
        "topic",
        name,
        incremental_configs=[
            kafka_admin.ConfigEntry("retention.ms", None, incremental_operation=op.DELETE)
        ],
    )
    _result(admin.incremental_alter_configs([reset])[reset])
    assert conveyor_admin.describe_topic(name).config.retention_ms == 7 * 24 * 3600 * 1000


def test_broker_configs_are_read_only(admin: Any, kafka_cluster: Cluster) -> None:
    broker = kafka_admin.ConfigResource("broker", "1")
    described = _result(admin.describe_configs([broker])[broker])
    assert described["broker.id"].value == "1"
    assert all(entry.is_read_only for entry in described.values())
    op = kafka_admin.AlterConfigOpType
    change = kafka_admin.ConfigResource(
        "broker",
        "1",
        incremental_configs=[
            kafka_admin.ConfigEntry("max.connections", "5", incremental_operation=op.SET)
        ],
    )
    assert _error(admin.incremental_alter_configs([change])[change]).name() == "INVALID_CONFIG"


def test_describe_cluster_lists_the_kafka_listeners(admin: Any, kafka_cluster: Cluster) -> None:
    cluster = _result(admin.describe_cluster())
    broker = kafka_cluster.brokers[1]
    assert [(n.id, n.host, n.port) for n in cluster.nodes] == [(1, "127.0.0.1", broker.kafka_port)]
    assert cluster.controller.id == 1
    assert cluster.cluster_id
    # librdkafka describes the cluster through Metadata; Java's AdminClient (and this raw
    # request) use DescribeCluster itself
    port = broker.kafka_port
    assert port is not None
    with KafkaWire("127.0.0.1", port, broker.ssl_context()) as wire:
        answer = wire.call(
            ApiKey.DESCRIBE_CLUSTER, 1, include_cluster_authorized_operations=True, endpoint_type=1
        )
    assert answer.error_code == 0 and answer.cluster_id == cluster.cluster_id
    assert [(b.broker_id, b.port) for b in answer.brokers] == [(1, port)]
    assert len(answer.authorized_operations) == 7  # auth off: all seven
    # librdkafka asks Metadata for them (v8+ include_*_authorized_operations)
    described = _result(admin.describe_cluster(include_authorized_operations=True))
    assert len(described.authorized_operations) == 7


def test_delete_topics(admin: Any, conveyor_admin: Admin) -> None:
    name = unique_topic("doomed")
    conveyor_admin.create_topic(name, partitions=1, replication_factor=1)
    _result(admin.delete_topics([name])[name])

    def gone() -> bool:
        try:
            conveyor_admin.describe_topic(name)
        except ConveyorError:
            return True
        return False

    wait_for(gone, 10, f"{name} deleted")
    missing = _error(admin.delete_topics([name])[name])
    assert missing.name() == "UNKNOWN_TOPIC_OR_PART"


def test_acls_map_onto_conveyor_rules(admin: Any, kafka_cluster: Cluster) -> None:
    acl = kafka_admin
    principal = f"User:{unique_topic('alice')}"
    write = acl.AclBinding(
        acl.ResourceType.TOPIC,
        "orders",
        acl.ResourcePatternType.LITERAL,
        principal,
        "*",
        acl.AclOperation.WRITE,
        acl.AclPermissionType.ALLOW,
    )
    deny = acl.AclBinding(
        acl.ResourceType.TOPIC,
        "orders",
        acl.ResourcePatternType.LITERAL,
        principal,
        "*",
        acl.AclOperation.READ,
        acl.AclPermissionType.DENY,
    )
    futures = admin.create_acls([write, deny])
    _result(futures[write])
    assert _error(futures[deny]).name() == "INVALID_REQUEST"
    rules = httpx.get(f"{kafka_cluster.url}/v1/security/acls").json()
    name = principal.removeprefix("User:")
    assert [r for r in rules if r["principal"] == f"user:{name}"] == [
        {
            "principal": f"user:{name}",
            "operation": "produce",
            "resource_type": "topic",
            "name": "orders",
        }
    ]
    by_principal = acl.AclBindingFilter(
        acl.ResourceType.ANY,
        None,
        acl.ResourcePatternType.ANY,
        principal,
        None,
        acl.AclOperation.ANY,
        acl.AclPermissionType.ANY,
    )
    assert _result(admin.describe_acls(by_principal)) == [write]
    assert _result(admin.delete_acls([by_principal])[by_principal]) == [write]
    assert _result(admin.describe_acls(by_principal)) == []


def test_describe_log_dirs_reports_hosted_replicas(kafka_cluster: Cluster) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        from kafka import KafkaAdminClient, KafkaProducer

    name = unique_topic("sized")
    producer = KafkaProducer(bootstrap_servers=kafka_cluster.bootstrap, acks="all")
    producer.send(name, b"x" * 1000, partition=0).get(timeout=_TIMEOUT_S)
    producer.close()
    client = KafkaAdminClient(bootstrap_servers=kafka_cluster.bootstrap)
    try:
        dirs = client.describe_log_dirs()
    finally:
        client.close()
    (broker,) = dirs
    (log_dir,) = broker["log_dirs"]
    assert log_dir["log_dir"] == str((kafka_cluster.root / "broker-1").resolve())
    assert 0 < log_dir["usable_bytes"] <= log_dir["total_bytes"]
    (topic,) = [t for t in log_dir["topics"] if t["name"] == name]
    sizes = {p["partition_index"]: p["partition_size"] for p in topic["partitions"]}
    assert sizes[0] > 1000 and sizes[1] == 0
