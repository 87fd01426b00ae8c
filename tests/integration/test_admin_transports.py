"""``Admin`` and ``AsyncAdmin`` over every transport against real processes: each
operation that exists on all gives the same result types and the same typed errors;
over Kafka (``bootstrap_servers=`` alone: nothing but the brokers' Kafka listeners) an
operation with no Kafka API raises ``CoordinatorRequiredError`` before sending anything;
the default given only the coordinator's URL ("routed") reads over the brokers' Kafka
listeners and sends changes to the coordinator, as the brokers' request counts show.
One module-scoped 2-broker cluster; every test uses topics and groups of its own."""

from __future__ import annotations

import asyncio
import gc
import json
import os
import re
import subprocess
import sys
import threading
import time
import urllib.request
from collections import Counter
from collections.abc import Iterator

import pytest

import conveyor
from conveyor.client.errors import CoordinatorRequiredError
from conveyor.protocol.errors import ConveyorError, ErrorCode, InvalidRequestError
from tests.integration.cluster import Cluster, free_port
from tests.integration.test_kafka_transport import kafka_tls
from tests.waiting import wait_for

TRANSPORTS = ["http", "kafka", "routed"]


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    c = Cluster(tmp_path_factory.mktemp("admin-transports"), broker_count=2).start()
    try:
        yield c
    finally:
        c.stop()


def admin(cluster: Cluster, transport: str) -> conveyor.Admin:
    """Over Kafka with the Kafka listeners alone (no coordinator URL at all); "http":
    every call to the coordinator; "routed": the default given the coordinator's URL."""
    if transport == "kafka":
        return conveyor.Admin(bootstrap_servers=cluster.bootstrap, tls=kafka_tls(cluster))
    if transport == "http":
        return conveyor.Admin(cluster.url, transport="http")
    return conveyor.Admin(cluster.url)


def kafka_requests(cluster: Cluster) -> Counter[str]:
    """The Kafka requests every broker's listener decoded so far, by API."""
    counts: Counter[str] = Counter()
    for broker in cluster.brokers.values():
        with urllib.request.urlopen(f"{broker.url}/metrics", timeout=10) as answer:
            text = answer.read().decode()
        for match in re.finditer(
            r'^conveyor_broker_kafka_requests_total\{api="(\w+)"\} (\S+)$', text, re.M
        ):
            counts[match[1]] += int(float(match[2]))
    return counts


def code_of(call: object) -> ErrorCode:
    assert callable(call)
    with pytest.raises(ConveyorError) as raised:
        call()
    return raised.value.code


@pytest.mark.parametrize("transport", TRANSPORTS)
def test_topic_lifecycle_and_typed_errors(cluster: Cluster, transport: str) -> None:
    name = f"life-{transport}"
    with admin(cluster, transport) as a:
        created = a.create_topic(
            name, partitions=3, replication_factor=2, config={"retention_ms": 60_000}
        )
        assert created.name == name and [p.partition for p in created.partitions] == [0, 1, 2]
        assert created.replication_factor == 2 and created.config.retention_ms == 60_000
        assert all(p.leader is not None and len(p.replicas) == 2 for p in created.partitions)
        assert code_of(lambda: a.create_topic(name)) is ErrorCode.TOPIC_ALREADY_EXISTS
        listed = {t.name: t for t in a.list_topics()}
        assert listed[name].partitions == 3 and listed[name].replication_factor == 2

        grown = a.add_partitions(name, 5)
        assert [p.partition for p in grown.partitions] == [0, 1, 2, 3, 4]
        assert code_of(lambda: a.add_partitions(name, 2)) is ErrorCode.INVALID_PARTITIONS

        altered = a.alter_topic_config(name, {"flush": "never", "retention_ms": 5_000})
        assert altered.config.flush == "never" and altered.config.retention_ms == 5_000
        reset = a.alter_topic_config(name, reset=["flush"])
        assert reset.config.flush == "always" and reset.config.retention_ms == 5_000
        assert code_of(lambda: a.alter_topic_config(name, {"bogus": 1})) is (
            ErrorCode.INVALID_CONFIG
        )

        a.delete_topic(name)
        assert name not in {t.name for t in a.list_topics()}
        assert code_of(lambda: a.describe_topic(name)) is ErrorCode.UNKNOWN_TOPIC
        assert code_of(lambda: a.delete_topic(name)) is ErrorCode.UNKNOWN_TOPIC


@pytest.mark.parametrize("transport", TRANSPORTS)
def test_describe_shows_offsets_and_cluster_counts(cluster: Cluster, transport: str) -> None:
    name = f"offsets-{transport}"
    with admin(cluster, transport) as a:
        a.create_topic(name, partitions=2, replication_factor=1)
        with conveyor.Producer(cluster.url, linger_ms=1) as producer:
            for i in range(10):
                producer.send(name, f"v{i}".encode(), partition=i % 2)
        # over HTTP the coordinator knows the offsets its brokers last reported (each
        # heartbeat); over Kafka the leaders answer them (ListOffsets)
        wait_for(
            lambda: [p.high_watermark for p in a.describe_topic(name).partitions] == [5, 5],
            10,
            "both high watermarks at 5",
        )
        described = a.describe_topic(name)
        assert [p.log_start_offset for p in described.partitions] == [0, 0]
        assert described.topic_id is not None
        status = a.cluster()
        assert sorted(b.broker_id for b in status.brokers) == [1, 2]
        assert status.topics >= 1 and status.partitions >= 2
        assert status.offline_partitions == 0
        assert sum(b.leader_count for b in status.brokers) == status.partitions


@pytest.mark.parametrize("transport", TRANSPORTS)
def test_delete_records_by_offset_and_by_time(cluster: Cluster, transport: str) -> None:
    name = f"trim-{transport}"
    with admin(cluster, transport) as a:
        a.create_topic(name, partitions=2, replication_factor=2)
        with conveyor.Producer(cluster.url, linger_ms=1) as producer:
            for i in range(6):
                producer.send(name, b"old", partition=i % 2)
        later_ms = int(time.time() * 1000) + 1
        assert a.delete_records({(name, 0): 2}) == {conveyor.TopicPartition(name, 0): 2}
        assert code_of(lambda: a.delete_records({(name, 0): 99})) is (ErrorCode.OFFSET_OUT_OF_RANGE)
        assert code_of(lambda: a.delete_records({(name, 7): 1})) is (ErrorCode.UNKNOWN_PARTITION)
        after = a.delete_records({(name, 1): conveyor.Timestamp(later_ms)})
        assert after == {conveyor.TopicPartition(name, 1): 3}


@pytest.mark.parametrize("transport", TRANSPORTS)
def test_groups_offsets_lag_reset_and_delete(cluster: Cluster, transport: str) -> None:
    name, group = f"grouped-{transport}", f"readers-{transport}"
    with admin(cluster, transport) as a:
        a.create_topic(name, partitions=2, replication_factor=1)
        with conveyor.Producer(cluster.url, linger_ms=1) as producer:
            for i in range(8):
                producer.send(name, b"x", partition=i % 2)
        # the group commits 3 of partition 0's 4 records and nothing of partition 1's
        reset = a.reset_offsets(group, name, 3, partitions=[0])
        assert [(o.partition, o.offset) for o in reset.offsets] == [(0, 3)]
        # one row per partition of the group's topics; lag = high watermark - committed
        # (0 when nothing is committed): over HTTP once the brokers reported their offsets
        wait_for(lambda: a.describe_group(group).lag == 5, 10, "the group's lag at 1 + 4")
        described = a.describe_group(group)
        assert described.state == "empty" and described.members == []
        rows = {
            (p.partition, p.committed_offset, p.high_watermark, p.lag) for p in described.partitions
        }
        assert rows == {(0, 3, 4, 1), (1, None, 4, 4)}
        listed = {g.group: g for g in a.list_groups()}
        assert listed[group].topics == [name] and listed[group].lag == 5

        latest = a.reset_offsets(group, name, "latest")
        assert sorted((o.partition, o.offset) for o in latest.offsets) == [(0, 4), (1, 4)]
        wait_for(lambda: a.describe_group(group).lag == 0, 10, "no lag after the reset")
        earliest = a.reset_offsets(group, name, "earliest")
        assert sorted((o.partition, o.offset) for o in earliest.offsets) == [(0, 0), (1, 0)]
        wait_for(lambda: a.describe_group(group).lag == 8, 10, "every record lagging")

        a.delete_group(group)
        forgotten = a.describe_group(group)  # any name describes, as an empty group
        assert forgotten.state == "empty" and forgotten.partitions == []
        assert group not in {g.group for g in a.list_groups()}
        assert code_of(lambda: a.delete_group(group)) is ErrorCode.UNKNOWN_GROUP


@pytest.mark.parametrize("transport", TRANSPORTS)
def test_a_group_with_members_is_not_reset(cluster: Cluster, transport: str) -> None:
    name, group = f"busy-{transport}", f"busy-{transport}"
    with admin(cluster, transport) as a:
        a.create_topic(name, partitions=1, replication_factor=1)
        with conveyor.Consumer(cluster.url, [name], group_id=group) as consumer:

            def joined() -> bool:
                consumer.poll(timeout=0.2)
                return bool(a.describe_group(group).members)

            wait_for(joined, 20, "the consumer in the group")
            described = a.describe_group(group)
            assert len(described.members) == 1 and described.members[0].topics == [name]
            assert code_of(lambda: a.reset_offsets(group, name, 0)) is (ErrorCode.GROUP_NOT_EMPTY)
            assert code_of(lambda: a.delete_group(group)) is ErrorCode.GROUP_NOT_EMPTY


def test_kafka_transport_refuses_what_needs_the_coordinator(cluster: Cluster) -> None:
    with admin(cluster, "kafka") as a:
        with pytest.raises(CoordinatorRequiredError) as raised:
            a.decommission_broker(2)
        assert isinstance(raised.value, InvalidRequestError)
        assert "coordinator" in raised.value.message
    with conveyor.Admin(cluster.url) as default:  # the coordinator's, by default
        # (whether broker 2 still holds replicas depends on which tests ran before)
        status = default.decommission_status(2)
        assert status.broker_id == 2 and status.decommissioning is False


def test_async_admin_over_kafka(cluster: Cluster) -> None:
    async def run() -> tuple[int, list[str]]:
        async with conveyor.AsyncAdmin(
            bootstrap_servers=cluster.bootstrap, tls=kafka_tls(cluster)
        ) as a:
            created = await a.create_topic("async-kafka", partitions=2, replication_factor=1)
            names = [t.name for t in await a.list_topics()]
            with pytest.raises(InvalidRequestError):
                await a.create_topic("async-kafka")
            await a.delete_topic("async-kafka")
            return len(created.partitions), names

    count, names = asyncio.run(run())
    assert count == 2 and "async-kafka" in names


def _cli(cluster: Cluster, *args: str, **env: str) -> subprocess.CompletedProcess[str]:
    """``conveyor ARGS`` with a coordinator URL where nothing listens: only the brokers'
    Kafka listeners can answer (https:// in the suite's HTTPS pass: TLS to them too)."""
    scheme = "https" if cluster.tls_dir is not None else "http"
    dead = f"{scheme}://127.0.0.1:{free_port()}"
    return subprocess.run(
        [sys.executable, "-m", "conveyor", *args],
        capture_output=True,
        text=True,
        env={**os.environ, "CONVEYOR_URL": dead, **env},
        timeout=60,
        check=False,
    )


def test_cli_topics_and_produce_with_bootstrap_server_only(cluster: Cluster) -> None:
    kafka = ("--bootstrap-server", cluster.bootstrap)
    created = _cli(cluster, "topic", "create", "cli-kafka", "--partitions", "2", *kafka, "--json")
    assert created.returncode == 0, created.stderr
    assert len(json.loads(created.stdout)["partitions"]) == 2

    produced = _cli(cluster, "produce", "cli-kafka", "--key", "k", "a", "b", *kafka, "--json")
    assert produced.returncode == 0, produced.stderr
    acks = [json.loads(line) for line in produced.stdout.splitlines()]
    assert [a["offset"] for a in acks] == [0, 1] and acks[0]["partition"] == acks[1]["partition"]

    consumed = _cli(
        cluster,
        "consume",
        "cli-kafka",
        "--group",
        "cli-g",
        "--from-beginning",
        "--max",
        "2",
        *kafka,
        "--json",
    )
    assert consumed.returncode == 0, consumed.stderr
    assert [json.loads(line)["value"] for line in consumed.stdout.splitlines()] == ["a", "b"]

    # the variable instead of the flag
    env = {"CONVEYOR_BOOTSTRAP_SERVERS": cluster.bootstrap}
    described = _cli(cluster, "topic", "describe", "cli-kafka", "--json", **env)
    assert described.returncode == 0, described.stderr
    partitions = json.loads(described.stdout)["partitions"]
    assert sorted(p["high_watermark"] for p in partitions) == [0, 2]
    listed = _cli(cluster, "topic", "list", "--json", **env)
    assert listed.returncode == 0, listed.stderr
    assert "cli-kafka" in {t["name"] for t in json.loads(listed.stdout)}

    status = _cli(cluster, "cluster", "status", "--json", **env)
    assert status.returncode == 0, status.stderr
    assert sorted(b["broker_id"] for b in json.loads(status.stdout)["brokers"]) == [1, 2]
    groups = _cli(cluster, "group", "list", "--json", **env)
    assert groups.returncode == 0, groups.stderr
    assert {"group": "cli-g", "lag": 0} in [
        {"group": g["group"], "lag": g["lag"]} for g in json.loads(groups.stdout)
    ]

    refused = _cli(cluster, "broker", "decommission", "2", *kafka)
    assert refused.returncode == 1
    assert "coordinator" in refused.stderr and "INVALID_REQUEST" in refused.stderr


def test_an_admin_never_closed_closes_its_connections_and_thread(cluster: Cluster) -> None:
    """``Admin(url).op()`` without close(): once collected, its session is closed on its
    loop (no ResourceWarning, which the suite turns into an error) and its thread ends."""

    def admin_threads() -> set[int | None]:
        return {t.ident for t in threading.enumerate() if t.name == "conveyor-admin-io"}

    before = admin_threads()
    assert conveyor.Admin(cluster.url).list_topics() is not None
    gc.collect()
    wait_for(lambda: admin_threads() <= before, 10, "the collected Admin's loop thread to end")


def test_the_default_admin_reads_over_kafka_and_changes_at_the_coordinator(
    cluster: Cluster,
) -> None:
    """``Admin(url)``: topic reads go to the brokers' Kafka listeners (Metadata,
    DescribeConfigs, ListOffsets), changes to the coordinator (no CreateTopics, no
    OffsetCommit); a topic it created is answered once every leader serves."""
    name, group = "routed-reads", "routed-readers"
    with conveyor.Admin(cluster.url) as a:
        before = kafka_requests(cluster)
        created = a.create_topic(name, partitions=2, replication_factor=2)
        assert all(p.leader is not None for p in created.partitions)
        a.reset_offsets(group, name, 0)
        after_changes = kafka_requests(cluster)
        assert after_changes["CREATE_TOPICS"] == before["CREATE_TOPICS"]
        assert after_changes["OFFSET_COMMIT"] == before["OFFSET_COMMIT"]
        described = a.describe_topic(name)
        # the leaders' REST URLs, as over HTTP (Kafka's Metadata names Kafka addresses)
        assert all(
            p.leader is not None and p.leader_url == cluster.brokers[p.leader].url
            for p in described.partitions
        )
        assert a.describe_group(group).lag == 0
        assert name in {t.name for t in a.list_topics()}
        reads = kafka_requests(cluster) - after_changes
        for api in (
            "METADATA",
            "LIST_OFFSETS",
            "DESCRIBE_CONFIGS",
        ):
            assert reads[api] > 0, (api, reads)
