"""The coordinator as a real process, with the tests posing as brokers (heartbeats by hand)."""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.integration.cluster import Cluster, wait_for

StartCoordinator = Callable[..., Cluster]


@pytest.fixture
def start_coordinator(tmp_path: Path) -> Iterator[StartCoordinator]:
    """Start a coordinator without brokers: ``start_coordinator("--no-auto-create-topics")``."""
    started: list[Cluster] = []

    def start(*coordinator_args: str) -> Cluster:
        cluster = Cluster(tmp_path, broker_count=0, coordinator_args=list(coordinator_args))
        started.append(cluster)
        return cluster.start()

    try:
        yield start
    finally:
        for cluster in started:
            cluster.stop()


@pytest.fixture
def coordinator(start_coordinator: StartCoordinator) -> Cluster:
    return start_coordinator()


@pytest.fixture
def http(coordinator: Cluster) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=coordinator.url, timeout=10) as client:
        yield client


def beat(http: httpx.Client, broker_id: int, **extra: Any) -> dict[str, Any]:
    """One heartbeat as broker ``broker_id`` would send it; returns the decoded reply."""
    body = {"broker_id": broker_id, "url": f"http://127.0.0.1:{19000 + broker_id}", **extra}
    response = http.post("/v1/brokers/heartbeat", json=body)
    assert response.status_code == 200, response.text
    reply: dict[str, Any] = response.json()
    return reply


def create(http: httpx.Client, name: str, **fields: Any) -> httpx.Response:
    return http.post("/v1/topics", json={"name": name, **fields})


def error_code(response: httpx.Response) -> str:
    code: str = response.json()["code"]
    return code


def test_create_list_describe_delete(http: httpx.Client) -> None:
    beat(http, 1)
    created = create(http, "orders", partitions=3, config={"flush": "never"})
    assert created.status_code == 201, created.text
    assert [p["leader"] for p in created.json()["partitions"]] == [1, 1, 1]

    assert http.get("/v1/topics").json() == {
        "topics": [{"name": "orders", "partitions": 3, "replication_factor": 1}]
    }
    described = http.get("/v1/topics/orders").json()
    assert described["config"]["flush"] == "never"
    partition = described["partitions"][2]
    assert partition["leader_url"] == "http://127.0.0.1:19001"
    assert (partition["leader_epoch"], partition["replicas"], partition["isr"]) == (0, [1], [1])

    report = {
        "topic": "orders",
        "partition": 2,
        "leader_epoch": 0,
        "log_start_offset": 0,
        "log_end_offset": 12,
        "high_watermark": 12,
    }
    beat(http, 1, partitions=[report])
    partition = http.get("/v1/topics/orders").json()["partitions"][2]
    assert (partition["log_end_offset"], partition["high_watermark"]) == (12, 12)

    assert http.delete("/v1/topics/orders").status_code == 204
    assert http.get("/v1/topics").json() == {"topics": []}
    missing = http.get("/v1/topics/orders")
    assert (missing.status_code, error_code(missing)) == (404, "UNKNOWN_TOPIC")
    again = http.delete("/v1/topics/orders")
    assert (again.status_code, error_code(again)) == (404, "UNKNOWN_TOPIC")
    assert beat(http, 1)["assignments"] == []  # the broker will delete its logs


@pytest.mark.parametrize("name", ["bad name", "..", "a" * 250, "ünïcode", "a/b"])
def test_invalid_topic_names_create_nothing(http: httpx.Client, name: str) -> None:
    beat(http, 1)
    response = create(http, name)
    assert (response.status_code, error_code(response)) == (400, "INVALID_TOPIC")
    metadata = http.get("/v1/metadata", params={"topics": name, "auto_create": "true"})
    assert (metadata.status_code, error_code(metadata)) == (400, "INVALID_TOPIC")
    assert http.get("/v1/topics").json() == {"topics": []}


def test_duplicates_and_bad_settings_are_rejected(http: httpx.Client) -> None:
    beat(http, 1)
    assert create(http, "t", partitions=2).status_code == 201
    duplicate = create(http, "t", partitions=5)
    assert (duplicate.status_code, error_code(duplicate)) == (409, "TOPIC_ALREADY_EXISTS")
    for fields in (
        {"partitions": 0},
        {"partitions": 10_001},
        {"replication_factor": 2},  # only one live broker
        {"config": {"flush": "sometimes"}},
        {"config": {"segment_bytes": 10}},
    ):
        response = create(http, "u", **fields)
        assert (response.status_code, error_code(response)) == (400, "INVALID_CONFIG"), fields
    typo = create(http, "u", config={"retention_msec": 5})  # unknown config keys are errors
    assert (typo.status_code, error_code(typo)) == (400, "INVALID_REQUEST")
    assert [t["name"] for t in http.get("/v1/topics").json()["topics"]] == ["t"]
    assert len(http.get("/v1/topics/t").json()["partitions"]) == 2


def test_metadata_auto_creates_only_when_asked(http: httpx.Client) -> None:
    beat(http, 1)
    not_asked = http.get("/v1/metadata", params={"topics": "fresh"})
    assert (not_asked.status_code, error_code(not_asked)) == (404, "UNKNOWN_TOPIC")
    asked = http.get("/v1/metadata", params={"topics": "fresh,other", "auto_create": "true"})
    assert asked.status_code == 200, asked.text
    metadata = asked.json()
    assert [t["name"] for t in metadata["topics"]] == ["fresh", "other"]
    assert all(len(t["partitions"]) == 8 for t in metadata["topics"])
    assert metadata["brokers"][0]["broker_id"] == 1
    assert [t["name"] for t in http.get("/v1/metadata").json()["topics"]] == ["fresh", "other"]


def test_metadata_with_auto_create_off(start_coordinator: StartCoordinator) -> None:
    cluster = start_coordinator("--no-auto-create-topics")
    with httpx.Client(base_url=cluster.url, timeout=10) as http:
        beat(http, 1)
        response = http.get("/v1/metadata", params={"topics": "fresh", "auto_create": "true"})
        assert (response.status_code, error_code(response)) == (404, "UNKNOWN_TOPIC")
        assert http.get("/v1/topics").json() == {"topics": []}


def test_placement_is_even_over_three_brokers(http: httpx.Client) -> None:
    for broker_id in (1, 2, 3):
        beat(http, broker_id)
    topic = create(http, "even", partitions=8).json()
    leaders = Counter(p["leader"] for p in topic["partitions"])
    assert sorted(leaders.values()) == [2, 3, 3]
    replicated = create(http, "replicated", partitions=6, replication_factor=2).json()
    held = Counter(b for p in replicated["partitions"] for b in p["replicas"])
    assert sorted(held.values()) == [4, 4, 4]
    assert all(len(set(p["replicas"])) == 2 for p in replicated["partitions"])
    # both topics together: 14 leaderships, each broker within one of the others
    status = http.get("/v1/cluster").json()
    assert sorted(b["leader_count"] for b in status["brokers"]) == [4, 5, 5]
    assert (status["topics"], status["partitions"], status.get("offline_partitions", 0)) == (
        2,
        14,
        0,
    )


def test_heartbeat_reply_carries_the_assignments(http: httpx.Client) -> None:
    beat(http, 1)
    beat(http, 2)
    create(http, "a", partitions=4, replication_factor=2, config={"retention_ms": 60000})
    reply = beat(http, 2)
    assert len(reply["cluster_id"]) == 36
    assert len(reply["assignments"]) == 4  # RF 2 on 2 brokers: everything
    for assignment in reply["assignments"]:
        assert assignment["topic"] == "a"
        assert assignment["leader"] in (1, 2)
        assert sorted(assignment["replicas"]) == [1, 2]
        assert assignment["leader_epoch"] == 0
    assert reply["topic_configs"] == {"a": {"retention_ms": 60000}}
    assert {b["broker_id"]: b["url"] for b in reply["brokers"]} == {
        1: "http://127.0.0.1:19001",
        2: "http://127.0.0.1:19002",
    }
    moved = beat(http, 2, url="http://127.0.0.1:29002")
    assert {b["broker_id"]: b["url"] for b in moved["brokers"]}[2] == "http://127.0.0.1:29002"
    led_by_2 = [p for p in http.get("/v1/topics/a").json()["partitions"] if p["leader"] == 2]
    assert led_by_2
    assert {p["leader_url"] for p in led_by_2} == {"http://127.0.0.1:29002"}


def test_silent_broker_is_declared_dead(start_coordinator: StartCoordinator) -> None:
    cluster = start_coordinator("--session-timeout-ms", "1000")
    with httpx.Client(base_url=cluster.url, timeout=10) as http:
        assert beat(http, 1)["heartbeat_interval_ms"] == 333
        beat(http, 2)
        create(http, "t", partitions=4, replication_factor=1)  # RF 1: its partitions go offline

        def broker_2_dead() -> bool:
            beat(http, 1)  # broker 1 stays healthy throughout
            brokers = {b["broker_id"]: b for b in http.get("/v1/cluster").json()["brokers"]}
            return brokers[2].get("alive", True) is False

        wait_for(broker_2_dead, timeout_s=10, what="broker 2 declared dead")
        status = http.get("/v1/cluster").json()
        assert [b.get("alive", True) for b in status["brokers"]] == [True, False]
        partitions = http.get("/v1/topics/t").json()["partitions"]
        offline = [p for p in partitions if p["leader"] is None]
        assert len(offline) == 2 == status["offline_partitions"]
        assert all(p["leader_epoch"] == 1 and "leader_url" not in p for p in offline)
        assert all(
            p["leader"] == 1 and p["leader_epoch"] == 0 for p in partitions if p not in offline
        )

        back = beat(http, 2)  # it returns: leads its partitions again, with a new epoch
        assert {a["leader_epoch"] for a in back["assignments"]} == {2}
        assert all(a["leader"] == 2 for a in back["assignments"])
    assert "broker 2 declared dead: no heartbeat for" in cluster.logs()


def test_restart_keeps_everything(start_coordinator: StartCoordinator) -> None:
    cluster = start_coordinator()
    with httpx.Client(base_url=cluster.url, timeout=10) as http:
        beat(http, 1)
        beat(http, 2)
        create(http, "kept", partitions=5, replication_factor=2)
        commit = {"offsets": [{"topic": "kept", "partition": 4, "offset": 42, "metadata": "m"}]}
        assert http.post("/v1/groups/g/offsets", json=commit).status_code == 200
        before = (
            http.get("/v1/cluster").json()["cluster_id"],
            http.get("/v1/topics/kept").json(),
            beat(http, 2)["assignments"],
        )
    assert cluster.coordinator is not None
    assert cluster.coordinator.stop() == 0  # graceful SIGTERM
    cluster.restart()
    with httpx.Client(base_url=cluster.url, timeout=10) as http:
        after = (
            http.get("/v1/cluster").json()["cluster_id"],
            http.get("/v1/topics/kept").json(),
            beat(http, 2)["assignments"],
        )
        assert after[0] == before[0]
        assert after[1] == before[1], (after[1], before[1])
        assert after[2] == before[2]
        offsets = http.get("/v1/groups/g/offsets").json()
        assert offsets == {
            "group": "g",
            "offsets": [{"topic": "kept", "partition": 4, "offset": 42, "metadata": "m"}],
        }


def test_offsets_commit_and_fetch(http: httpx.Client) -> None:
    beat(http, 1)
    create(http, "t", partitions=2)
    create(http, "u", partitions=1)
    body = {
        "offsets": [
            {"topic": "t", "partition": 0, "offset": 5},
            {"topic": "u", "partition": 0, "offset": 0},
        ],
        "generation": -1,
    }
    committed = http.post("/v1/groups/readers/offsets", json=body)
    assert committed.status_code == 200, committed.text
    assert [o["offset"] for o in committed.json()["offsets"]] == [5, 0]
    fetched = http.get("/v1/groups/readers/offsets", params={"topic": "t"}).json()
    assert fetched == {"group": "readers", "offsets": [{"topic": "t", "partition": 0, "offset": 5}]}
    assert http.get("/v1/groups/nobody/offsets").json() == {"group": "nobody", "offsets": []}

    def commit(group: str, **offset: Any) -> httpx.Response:
        item = {"topic": "t", "partition": 0, "offset": 1, **offset}
        return http.post(f"/v1/groups/{group}/offsets", json={"offsets": [item]})

    for response, status, code in [
        (commit("readers", offset=-1), 400, "INVALID_REQUEST"),
        (commit("readers", partition=2), 404, "UNKNOWN_PARTITION"),
        (commit("readers", topic="missing"), 404, "UNKNOWN_TOPIC"),
        (commit("bad%09group"), 400, "INVALID_REQUEST"),  # a tab: not printable
        (http.get("/v1/groups/readers/offsets", params={"topic": "missing"}), 404, "UNKNOWN_TOPIC"),
    ]:
        assert (response.status_code, error_code(response)) == (status, code), response.text
    # nothing changed by the rejected commits
    fetched = http.get("/v1/groups/readers/offsets", params={"topic": "t"}).json()
    assert fetched["offsets"] == [{"topic": "t", "partition": 0, "offset": 5}]


def test_openapi_lists_every_route(http: httpx.Client) -> None:
    paths = http.get("/openapi.json").json()["paths"]
    expected = {
        ("post", "/v1/brokers/heartbeat"),
        ("get", "/v1/metadata"),
        ("post", "/v1/topics"),
        ("get", "/v1/topics"),
        ("get", "/v1/topics/{topic}"),
        ("delete", "/v1/topics/{topic}"),
        ("get", "/v1/cluster"),
        ("post", "/v1/groups/{group}/offsets"),
        ("get", "/v1/groups/{group}/offsets"),
        ("get", "/healthz"),
        ("get", "/readyz"),
    }
    listed = {(method, path) for path, operations in paths.items() for method in operations}
    assert expected <= listed
    assert paths["/v1/brokers/heartbeat"]["post"]["tags"] == ["internal"]


def test_bad_bodies(http: httpx.Client) -> None:
    wrong_type = http.post(
        "/v1/topics", content=b'{"name": "t"}', headers={"Content-Type": "text/plain"}
    )
    assert (wrong_type.status_code, error_code(wrong_type)) == (415, "UNSUPPORTED_MEDIA_TYPE")
    malformed = http.post(
        "/v1/topics", content=b'{"name": ', headers={"Content-Type": "application/json"}
    )
    assert (malformed.status_code, error_code(malformed)) == (400, "INVALID_REQUEST")
    assert malformed.json().get("retriable", False) is False
    wrong_shape = http.post("/v1/brokers/heartbeat", json={"broker_id": "one"})
    assert (wrong_shape.status_code, error_code(wrong_shape)) == (400, "INVALID_REQUEST")
    bad_flag = http.get("/v1/metadata", params={"auto_create": "maybe"})
    assert (bad_flag.status_code, error_code(bad_flag)) == (400, "INVALID_REQUEST")
    assert http.get("/v1/topics").json() == {"topics": []}
