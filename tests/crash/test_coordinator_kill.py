"""SIGKILL the coordinator at random moments during topic creates and offset commits.

Two writers talk to a real coordinator (and one broker, for placement) over HTTP. The topic
writer creates ``t-0``, ``t-1``, ... one at a time and moves on only once a create is
acknowledged (201, or 409 for a create that had landed before a kill); the offset writer
commits 1, 2, 3, ... for one partition. After every kill the coordinator restarts on the
same SQLite file and the test checks, while the writers go on:

- every acknowledged create and commit survived;
- the topics are a prefix ``t-0..t-k`` with no gap, and at most one beyond the last
  acknowledged (the one in flight when the kill came);
- the committed offset is the last acknowledged one, or the one in flight.

At the end the file passes ``PRAGMA integrity_check`` and loads through the store's own
invariant checks.
"""

from __future__ import annotations

import json
import random
import sqlite3
import threading
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from conveyor.coordinator.store import DB_FILE, CoordinatorStore
from tests.integration.cluster import Cluster, wait_for

KILLS = 10
SEED = 20261128
KILL_AFTER_S = (0.05, 0.8)
REQUEST_TIMEOUT_S = 2.0
BASE_TOPIC = "base"
GROUP = "crash-group"


def request(url: str, method: str = "GET", body: object | None = None) -> tuple[int, Any]:
    """(status, JSON body); status 0 when there was no answer (refused, reset, timeout)."""
    data = None if body is None else json.dumps(body).encode()
    req = urllib.request.Request(url, data=data, method=method)
    req.add_header("Content-Type", "application/json")
    try:
        with urllib.request.urlopen(req, timeout=REQUEST_TIMEOUT_S) as response:
            raw = response.read()
            return response.status, json.loads(raw) if raw else None
    except urllib.error.HTTPError as e:
        return e.code, None
    except (OSError, ValueError):
        return 0, None


@dataclass
class Writers:
    url: str
    topics_acked: int = 0  # t-0 .. t-(n-1) acknowledged
    offset_acked: int = 0  # highest acknowledged committed offset
    stop: threading.Event = field(default_factory=threading.Event)
    errors: list[str] = field(default_factory=list)

    def create_topics(self) -> None:
        i = 0
        while not self.stop.is_set():
            body = {"name": f"t-{i}", "partitions": 1, "replication_factor": 1}
            status, _ = request(self.url + "/v1/topics", "POST", body)
            if status in (201, 409):
                self.topics_acked = i + 1
                i += 1
            elif status not in (0, 400, 503):  # 400: no live broker yet after a restart
                self.errors.append(f"create t-{i}: HTTP {status}")
                time.sleep(0.05)
            else:
                time.sleep(0.02)

    def commit_offsets(self) -> None:
        offset = 1
        while not self.stop.is_set():
            body = {"offsets": [{"topic": BASE_TOPIC, "partition": 0, "offset": offset}]}
            status, _ = request(f"{self.url}/v1/groups/{GROUP}/offsets", "POST", body)
            if status == 200:
                self.offset_acked = offset
                offset += 1
            elif status not in (0, 503):
                self.errors.append(f"commit {offset}: HTTP {status}")
                time.sleep(0.05)
            else:
                time.sleep(0.02)


def check_state(url: str, topics_acked: int, offset_acked: int) -> tuple[int, int]:
    """Check what the restarted coordinator serves against what was acknowledged before."""
    status, listed = request(url + "/v1/topics")
    assert status == 200, status
    names = {t["name"] for t in listed["topics"]} - {BASE_TOPIC}
    numbers = sorted(int(n.removeprefix("t-")) for n in names)
    assert numbers == list(range(len(numbers))), f"topics are not a prefix: {numbers}"
    assert len(numbers) >= topics_acked, (numbers, topics_acked)
    status, offsets = request(f"{url}/v1/groups/{GROUP}/offsets?topic={BASE_TOPIC}")
    assert status == 200, status
    committed = max((o["offset"] for o in offsets["offsets"]), default=0)
    assert committed >= offset_acked, (committed, offset_acked)
    return len(numbers), committed


def test_coordinator_store_survives_sigkill_with_a_prefix_complete_state(tmp_path: Path) -> None:
    rng = random.Random(SEED)
    cluster = Cluster(tmp_path, broker_count=1).start()
    assert cluster.coordinator is not None
    coordinator = cluster.coordinator
    status, _ = request(
        cluster.url + "/v1/topics",
        "POST",
        {"name": BASE_TOPIC, "partitions": 1, "replication_factor": 1},
    )
    assert status == 201
    writers = Writers(cluster.url)
    threads = [
        threading.Thread(target=writers.create_topics, name="topics"),
        threading.Thread(target=writers.commit_offsets, name="offsets"),
    ]
    for thread in threads:
        thread.start()
    try:
        for _ in range(KILLS):
            time.sleep(rng.uniform(*KILL_AFTER_S))  # a random point in the write stream
            topics_acked, offset_acked = writers.topics_acked, writers.offset_acked
            coordinator.kill()
            coordinator.start()
            coordinator.wait_ready()
            topics, committed = check_state(cluster.url, topics_acked, offset_acked)
            # at most the one request in flight beyond what was acknowledged at the kill
            assert topics <= writers.topics_acked + 1
            assert committed <= writers.offset_acked + 1
        acked = writers.topics_acked
        wait_for(lambda: writers.topics_acked > acked, 20, "topic creates after the last restart")
    finally:
        writers.stop.set()
        for thread in threads:
            thread.join(30)
        cluster.stop()
    assert not writers.errors, writers.errors[:10]
    assert writers.topics_acked >= KILLS and writers.offset_acked >= KILLS
    with sqlite3.connect(tmp_path / "coordinator" / DB_FILE) as db:
        assert db.execute("PRAGMA integrity_check").fetchone() == ("ok",)
    store = CoordinatorStore.open(tmp_path / "coordinator")
    try:
        state = store.load()  # replays every record and checks the model's invariants
    finally:
        store.close()
    names = set(state.topics) - {BASE_TOPIC}
    assert names == {f"t-{i}" for i in range(len(names))}
    assert len(names) >= writers.topics_acked
