"""Changing a live topic: `conveyor topic add-partitions` and `alter-config` against real
processes; the broker serves the new partitions and applies the new settings without a
restart."""

from __future__ import annotations

import json
from collections.abc import Iterator

import httpx
import pytest

from conveyor.protocol.records import encode_batch
from tests.integration.cluster import Cluster, wait_for
from tests.integration.test_broker import BINARY, leaders, records_path
from tests.integration.test_cli import conveyor


def _produce(url: str, topic: str, partition: int, value: bytes) -> httpx.Response:
    batch = encode_batch([(None, value)])
    return httpx.post(records_path(url, topic, partition), content=batch, headers=BINARY)


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    """One cluster for the module: each test changes its own topic."""
    shared = Cluster(tmp_path_factory.mktemp("topic-changes"), broker_count=1).start()
    try:
        yield shared
    finally:
        shared.stop()


def _shape(cluster: Cluster, topic: str) -> tuple[object, ...]:
    """What a topic change could alter: its config and partitions' replicas and epochs
    (not the offsets, which move by themselves)."""
    described = httpx.get(f"{cluster.url}/v1/topics/{topic}").json()
    partitions = [
        (p["partition"], p["replicas"], p["leader_epoch"]) for p in described["partitions"]
    ]
    return described["config"], partitions


def test_add_partitions_then_produce_to_the_new_ones(cluster: Cluster) -> None:
    assert conveyor(cluster.url, "topic", "create", "grow", "--partitions", "2").returncode == 0
    grown = conveyor(cluster.url, "topic", "add-partitions", "grow", "--partitions", "4", "--json")
    assert grown.returncode == 0, grown.stderr
    assert [p["partition"] for p in json.loads(grown.stdout)["partitions"]] == [0, 1, 2, 3]
    urls = leaders(cluster, "grow")  # waits until every partition has a leader
    assert sorted(urls) == [0, 1, 2, 3]
    wait_for(
        lambda: _produce(urls[3], "grow", 3, b"new").status_code == 200,
        20,
        "the broker to serve the new partition 3",
    )
    shrink = conveyor(cluster.url, "topic", "add-partitions", "grow", "--partitions", "3")
    assert shrink.returncode == 1 and "INVALID_PARTITIONS" in shrink.stderr
    assert len(httpx.get(f"{cluster.url}/v1/topics/grow").json()["partitions"]) == 4


def test_alter_config_applies_on_the_broker_without_a_restart(cluster: Cluster) -> None:
    assert conveyor(cluster.url, "topic", "create", "tune", "--partitions", "1").returncode == 0
    url = leaders(cluster, "tune")[0]
    value = b"x" * 4000
    assert _produce(url, "tune", 0, value).status_code == 200
    broker = cluster.brokers[1]
    pid = broker.process.pid if broker.process else None

    lowered = conveyor(
        cluster.url, "topic", "alter-config", "tune", "--set", "max_message_bytes=2048", "--json"
    )
    assert lowered.returncode == 0, lowered.stderr
    assert json.loads(lowered.stdout)["config"]["max_message_bytes"] == 2048
    wait_for(
        lambda: _produce(url, "tune", 0, value).status_code == 413,
        20,
        "the broker to apply max_message_bytes=2048",
    )
    reset = conveyor(cluster.url, "topic", "alter-config", "tune", "--reset", "max_message_bytes")
    assert reset.returncode == 0, reset.stderr
    wait_for(
        lambda: _produce(url, "tune", 0, value).status_code == 200,
        20,
        "the broker to apply the default max_message_bytes again",
    )
    assert broker.process is not None and broker.process.pid == pid and broker.alive()


def test_bad_topic_changes_get_typed_errors_and_change_nothing(cluster: Cluster) -> None:
    assert conveyor(cluster.url, "topic", "create", "firm", "--partitions", "1").returncode == 0
    before = _shape(cluster, "firm")
    unknown = conveyor(cluster.url, "topic", "alter-config", "firm", "--set", "nope=1")
    assert unknown.returncode == 1 and "INVALID_CONFIG" in unknown.stderr
    nothing = conveyor(cluster.url, "topic", "alter-config", "firm")
    assert nothing.returncode == 1
    cases = [
        httpx.patch(
            f"{cluster.url}/v1/topics/firm/config",
            content=b'{"set": {',
            headers={"Content-Type": "application/json"},
        ),
        httpx.patch(f"{cluster.url}/v1/topics/firm/config", json={"set": {"retention_ms": -5}}),
        httpx.patch(f"{cluster.url}/v1/topics/firm/config", json={"sett": {}}),
        httpx.post(f"{cluster.url}/v1/topics/firm/partitions", json={"partitions": "many"}),
        httpx.post(f"{cluster.url}/v1/topics/firm/partitions", json={"partitions": 0}),
    ]
    for response in cases:
        assert response.status_code == 400, response.text
        assert response.json()["code"] in (
            "INVALID_REQUEST",
            "INVALID_CONFIG",
            "INVALID_PARTITIONS",
        )
    missing = httpx.post(f"{cluster.url}/v1/topics/absent/partitions", json={"partitions": 2})
    assert missing.status_code == 404 and missing.json()["code"] == "UNKNOWN_TOPIC"
    assert _shape(cluster, "firm") == before
