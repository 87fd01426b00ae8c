"""Regression tests for what the chaos harness found, each named for its anomaly and
reproduced deterministically with real processes (no schedule, no randomness).

replica-divergence (seed 11, ``conveyor chaos --duration 180 --seed 11 --faults
kill-leader,partition-asym,power-loss,pause,partition,torn-write``): the leader of
partition 2 (broker 3, epoch 15) lost its unsynced tail in a power loss and was back
within the 3 s session timeout, so it resumed leadership *at the same epoch* with a
shorter log. Broker 1, its follower, still held the lost offset 8999
(``p2-k2:9270``); because the epoch had not changed it did not truncate, and kept fetching
from 9000 while the leader wrote ``p1-k0:6808`` (acknowledged) at 8999.
Fixed: brokers send a per-process incarnation in heartbeats; a new one within the session
moves leadership to another in-sync replica and takes the broker out of the ISR until it
has caught up again (coordinator/state.py ``_on_restart``, Kafka's KIP-966 handling).
"""

from __future__ import annotations

import json
import urllib.request
from pathlib import Path
from typing import Any

from conveyor.chaos import checker, diskfault
from tests.integration.cluster import Cluster, wait_for

TOPIC = "divergence"
RECORDS_BEFORE = 10
CUT_AT = 5
RECORDS_AFTER = 5


def get(url: str) -> Any:
    with urllib.request.urlopen(url, timeout=5) as response:
        return json.load(response)


def post(url: str, body: object) -> tuple[int, Any]:
    request = urllib.request.Request(url, data=json.dumps(body).encode(), method="POST")
    request.add_header("Content-Type", "application/json")
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status, json.load(response)
    except urllib.error.HTTPError as e:
        return e.code, None


def leader_of(cluster: Cluster) -> int | None:
    leader: int | None = get(f"{cluster.url}/v1/topics/{TOPIC}")["partitions"][0]["leader"]
    return leader


def log_end(cluster: Cluster, broker_id: int) -> int:
    hosted = get(cluster.brokers[broker_id].url + "/v1/partitions")["partitions"]
    return int(next(p["log_end_offset"] for p in hosted if p["topic"] == TOPIC))


def all_reach(cluster: Cluster, offset: int) -> bool:
    return all(log_end(cluster, broker_id) >= offset for broker_id in cluster.brokers)


def produce(cluster: Cluster, value: str) -> int:
    """Send one record with acks=all to the current leader until acknowledged; its offset."""
    offset: int | None = None

    def attempt() -> bool:
        nonlocal offset
        leader = leader_of(cluster)
        if leader is None:
            return False
        url = f"{cluster.brokers[leader].url}/v1/topics/{TOPIC}/partitions/0/records?acks=all"
        try:
            status, answer = post(url, {"records": [{"value": value}]})
        except OSError:
            return False
        if status == 200:
            offset = answer["base_offset"]
        return status == 200

    wait_for(attempt, 30, f"{value} acknowledged")
    assert offset is not None
    return offset


def test_replica_divergence_after_a_leader_loses_its_tail_and_comes_back(tmp_path: Path) -> None:
    cluster = Cluster(tmp_path, broker_count=3).start()
    try:
        config = {"flush": "never"}  # nothing is promised fsynced: any tail may be lost
        body = {"name": TOPIC, "partitions": 1, "replication_factor": 3, "config": config}
        assert post(cluster.url + "/v1/topics", body)[0] == 201
        acked = {produce(cluster, f"before-{i}"): f"before-{i}" for i in range(RECORDS_BEFORE)}
        wait_for(lambda: all_reach(cluster, RECORDS_BEFORE), 20, "every replica caught up")
        leader = leader_of(cluster)
        assert leader is not None
        victim = cluster.brokers[leader]
        victim.kill()  # power loss: its page cache (everything from CUT_AT on) is gone
        diskfault.lose_unsynced(victim.data_dir / f"{TOPIC}-0", CUT_AT)
        victim.start()  # back well within the session timeout
        victim.wait_ready()
        for i in range(RECORDS_AFTER):
            acked[produce(cluster, f"after-{i}")] = f"after-{i}"
        wait_for(lambda: all_reach(cluster, len(acked)), 20, "every replica caught up")
    finally:
        cluster.stop()
    replicas = []
    for broker_id, broker in cluster.brokers.items():
        read = diskfault.read_replica(broker.data_dir / f"{TOPIC}-0")
        replicas.append(checker.Replica(0, broker_id, read.records, read.problems))
    result = checker.Result()
    checker.check_replicas(replicas, result)
    assert result.counts["replica-divergence"] == 0, [e.description for e in result.examples]
    for replica in replicas:  # every acknowledged record at its offset, on every replica
        at = {offset: value for offset, _key, value in replica.records}
        assert {o: at.get(o) for o in acked} == acked, replica.broker
