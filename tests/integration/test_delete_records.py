"""Deleting records up to an offset on a real 3-broker cluster: the leader's log start moves
inside a batch, every follower's follows before the answer, reads below it are out of range
on every path, the coordinator reports it, and it survives a SIGKILL of every broker."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Iterator

import httpx
import pytest

from conveyor.client import Admin, AsyncAdmin, Timestamp, TopicPartition
from conveyor.protocol.errors import ConveyorError, ErrorCode
from conveyor.protocol.records import decode_batches, encode_batch
from tests.integration.cluster import Cluster, wait_for
from tests.integration.test_broker import ACCEPT_BINARY, BINARY, leaders, records_path
from tests.integration.test_cli import conveyor

TOPIC = "trimmed"


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    shared = Cluster(tmp_path_factory.mktemp("delete-records"), broker_count=3).start()
    try:
        yield shared
    finally:
        shared.stop()


def create(cluster: Cluster, name: str, **config: object) -> str:
    """A one-partition topic on all three brokers, fully in sync; its leader's URL."""
    body: dict[str, object] = {"name": name, "partitions": 1, "replication_factor": 3}
    if config:
        body["config"] = config
    response = httpx.post(f"{cluster.url}/v1/topics", json=body, timeout=10)
    assert response.status_code in (200, 201), response.text
    url = leaders(cluster, name)[0]

    def in_sync() -> bool:
        described = httpx.get(f"{cluster.url}/v1/topics/{name}", timeout=5).json()
        return len(described["partitions"][0]["isr"]) == 3

    wait_for(in_sync, 30, f"{name}: all three replicas in sync")
    return url


def produce(url: str, topic: str, batches: int, per_batch: int) -> None:
    for _ in range(batches):
        batch = encode_batch([(None, b"v") for _ in range(per_batch)])
        response = httpx.post(records_path(url, topic, 0), content=batch, headers=BINARY)
        assert response.status_code == 200, response.text


def delete_records(url: str, topic: str, offset: int) -> httpx.Response:
    return httpx.delete(records_path(url, topic, 0), params={"before_offset": offset}, timeout=40)


def starts(cluster: Cluster, topic: str) -> dict[int, int]:
    """Each broker's log start of the partition, as it reports it (GET /v1/partitions)."""
    out = {}
    for broker_id, broker in cluster.brokers.items():
        hosted = httpx.get(f"{broker.url}/v1/partitions", timeout=5).json()["partitions"]
        for p in hosted:
            if p["topic"] == topic:
                out[broker_id] = p["log_start_offset"]
    return out


def reported_start(cluster: Cluster, topic: str) -> int | None:
    """The coordinator's log start of partition 0: absent (None, left out of the JSON)
    until a replica of the topic has reported in a heartbeat, which may come after the
    whole create-produce-delete sequence (heartbeats are a second apart)."""
    described = httpx.get(f"{cluster.url}/v1/topics/{topic}", timeout=5).json()
    start: int | None = described["partitions"][0].get("log_start_offset")
    return start


def test_every_replica_starts_at_the_offset_and_keeps_it_across_a_crash(
    cluster: Cluster,
) -> None:
    url = create(cluster, TOPIC)
    produce(url, TOPIC, batches=3, per_batch=10)  # batches 0-9, 10-19, 20-29
    response = delete_records(url, TOPIC, 15)  # inside the second batch
    assert response.status_code == 200, response.text
    assert response.json() == {"topic": TOPIC, "partition": 0, "low_watermark": 15}
    # the answer waited for every in-sync replica
    assert starts(cluster, TOPIC) == {1: 15, 2: 15, 3: 15}
    check_reads(url)
    wait_for(
        lambda: reported_start(cluster, TOPIC) == 15,
        20,
        "the coordinator to report the new log start",
    )

    for broker in cluster.brokers.values():  # SIGKILL: no clean shutdown anywhere
        broker.kill()
    for broker in cluster.brokers.values():
        broker.start()
    for broker in cluster.brokers.values():
        broker.wait_ready()
    wait_for(lambda: starts(cluster, TOPIC) == {1: 15, 2: 15, 3: 15}, 30, "starts after restart")

    def settled() -> bool:
        # leadership moves while the restarted brokers report in, then back to the
        # preferred replica once all are in sync: read once that is over
        partition = httpx.get(f"{cluster.url}/v1/topics/{TOPIC}", timeout=5).json()
        p = partition["partitions"][0]
        return p["leader"] == p["replicas"][0] and len(p["isr"]) == 3

    wait_for(settled, 60, "the preferred leader back, all in sync")
    url = leaders(cluster, TOPIC)[0]
    wait_for(lambda: _fetch(url, 15).status_code == 200, 30, "the leader to serve")
    check_reads(url)


def _fetch(url: str, offset: int, **headers: str) -> httpx.Response:
    return httpx.get(
        records_path(url, TOPIC, 0), params={"offset": offset}, headers=headers, timeout=5
    )


def check_reads(url: str) -> None:
    below = _fetch(url, 14)
    assert below.status_code == 416, below.text
    assert below.json()["details"]["log_start_offset"] == 15
    json_answer = _fetch(url, 15).json()
    assert json_answer["log_start_offset"] == 15
    assert [r["offset"] for r in json_answer["records"]][:1] == [15]
    binary = _fetch(url, 15, **ACCEPT_BINARY)
    first = decode_batches(binary.content)[0]
    assert first.offset == 10  # the whole batch holding 15: the client skips 10-14
    offsets = httpx.get(f"{url}/v1/topics/{TOPIC}/partitions/0/offsets", timeout=5).json()
    assert offsets["log_start_offset"] == 15


def test_minus_one_deletes_up_to_the_high_watermark_then_writes_go_on(cluster: Cluster) -> None:
    topic = "emptied"
    url = create(cluster, topic)
    produce(url, topic, batches=2, per_batch=5)
    response = delete_records(url, topic, -1)
    assert response.status_code == 200, response.text
    assert response.json()["low_watermark"] == 10
    assert starts(cluster, topic) == {1: 10, 2: 10, 3: 10}
    produce(url, topic, batches=1, per_batch=3)
    records = httpx.get(records_path(url, topic, 0), params={"offset": 10}, timeout=5).json()
    assert [r["offset"] for r in records["records"]] == [10, 11, 12]
    beyond = delete_records(url, topic, 14)
    assert beyond.status_code == 416 and beyond.json()["code"] == "OFFSET_OUT_OF_RANGE"


def test_typed_refusals(cluster: Cluster) -> None:
    url = create(cluster, "kept", cleanup_policy="compact")
    refused = delete_records(url, "kept", 0)
    assert refused.status_code == 400 and refused.json()["code"] == "POLICY_VIOLATION"
    follower = next(b.url for b in cluster.brokers.values() if b.url != url)
    not_leader = delete_records(follower, "kept", 0)
    assert not_leader.status_code == 421 and not_leader.json()["code"] == "NOT_LEADER"
    unknown = delete_records(url, "no-such-topic", 0)
    assert unknown.status_code == 404 and unknown.json()["code"] == "UNKNOWN_TOPIC"


def test_cli_trim_by_offset_and_by_time_on_every_partition(cluster: Cluster) -> None:
    """`conveyor topic trim` finds each partition's leader through the coordinator."""
    topic = "cli-trim"
    made = conveyor(
        cluster.url, "topic", "create", topic, "--partitions", "2", "--replication-factor", "3"
    )
    assert made.returncode == 0, made.stderr
    urls = leaders(cluster, topic)
    now_ms = time.time_ns() // 1_000_000
    for partition, url in urls.items():  # an old batch (0-4), then a new one (5-9)
        for stamp_ms in (now_ms - 60_000, now_ms):
            batch = encode_batch([(None, b"v")] * 5, timestamp_ms=stamp_ms)
            answer = httpx.post(records_path(url, topic, partition), content=batch, headers=BINARY)
            assert answer.status_code == 200, answer.text

    by_offset = conveyor(cluster.url, "topic", "trim", topic, "-p", "0", "-o", "3", "--json")
    assert by_offset.returncode == 0, by_offset.stderr
    assert json.loads(by_offset.stdout) == [{"topic": topic, "partition": 0, "low_watermark": 3}]
    cut_ms = str(now_ms - 30_000)  # between the two batches, on every partition
    by_time = conveyor(cluster.url, "topic", "trim", topic, "--before-time", cut_ms, "--json")
    assert by_time.returncode == 0, by_time.stderr
    assert [row["low_watermark"] for row in json.loads(by_time.stdout)] == [5, 5]
    for partition, url in urls.items():
        offsets = httpx.get(f"{url}/v1/topics/{topic}/partitions/{partition}/offsets").json()
        assert offsets["log_start_offset"] == 5

    beyond = conveyor(cluster.url, "topic", "trim", topic, "-p", "1", "-o", "99")
    assert beyond.returncode == 1 and "OFFSET_OUT_OF_RANGE" in beyond.stderr
    unknown = conveyor(cluster.url, "topic", "trim", topic, "-p", "7", "-o", "1")
    assert unknown.returncode == 1 and "UNKNOWN_PARTITION" in unknown.stderr


def test_admin_and_async_admin_delete_records(cluster: Cluster) -> None:
    topic = "admin-trim"
    url = create(cluster, topic)
    produce(url, topic, batches=2, per_batch=5)
    tp = TopicPartition(topic, 0)
    with Admin(cluster.url) as admin:
        assert admin.delete_records({tp: 4}) == {tp: 4}
        with pytest.raises(ConveyorError) as beyond:
            admin.delete_records({tp: 11})
        assert beyond.value.code == ErrorCode.OFFSET_OUT_OF_RANGE
        with pytest.raises(ConveyorError) as unknown:
            admin.delete_records({(topic, 3): 1})
        assert unknown.value.code == ErrorCode.UNKNOWN_PARTITION

    async def go() -> dict[TopicPartition, int]:
        async with AsyncAdmin(cluster.url) as admin:
            later_ms = time.time_ns() // 10**6 + 1  # after every record's timestamp
            return await admin.delete_records({(topic, 0): Timestamp(later_ms)})

    # a time after the last record: everything goes (up to the high watermark)
    assert asyncio.run(go()) == {tp: 10}
    # the in-sync replicas moved before the answer; one that fell out of the ISR follows
    wait_for(lambda: starts(cluster, topic) == {1: 10, 2: 10, 3: 10}, 30, "every replica at 10")
