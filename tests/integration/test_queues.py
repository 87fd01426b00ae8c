"""Share groups (queues) on real processes: one coordinator and three brokers for the
module (each test uses its own topic and group), RF 3 everywhere.

What is checked is what docs/queues.md promises: every record accepted exactly once in
the final state and never delivered again after its accept was confirmed; releases and
rejects; dead letters with their headers; the REST form with lock tokens; a mode clash
refused; the counts `group describe` shows; a SIGKILLed member's records redelivered after
their lock; the `conveyor queue` commands (dead letters moved back by `requeue`).
"""

from __future__ import annotations

import json
import random
import signal
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

import conveyor
from conveyor.protocol.share import ShareGroupConfig
from tests.integration.cluster import Cluster, wait_for

pytestmark = pytest.mark.timeout(180)


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    c = Cluster(tmp_path_factory.mktemp("queues"), broker_count=3).start()
    try:
        yield c
    finally:
        c.stop()


def produce(cluster: Cluster, topic: str, count: int, keys: int = 16, partitions: int = 4) -> None:
    conveyor.Admin(cluster.url).create_topic(topic, partitions=partitions, replication_factor=3)
    with conveyor.Producer(cluster.url) as producer:
        for i in range(count):
            producer.send(topic, f"value-{i}".encode(), key=f"key-{i % keys}")
        producer.flush()


def http_json(url: str, body: object | None = None, method: str = "POST") -> Any:
    data = None if body is None else json.dumps(body).encode()
    request = urllib.request.Request(url, data=data, method=method)
    request.add_header("Content-Type", "application/json")
    with urllib.request.urlopen(request, timeout=30) as response:
        return json.loads(response.read() or b"null")


class Ledger:
    """What members saw: deliveries with their time, accepts with their confirmation."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.delivered: list[tuple[float, int, int]] = []  # (time, partition, offset)
        self.confirmed: dict[tuple[int, int], float] = {}  # (partition, offset) -> time
        self.duplicate_confirms: list[tuple[int, int]] = []

    def deliver(self, messages: list[conveyor.QueueMessage]) -> None:
        now = time.monotonic()
        with self.lock:
            self.delivered += [(now, m.partition, m.offset) for m in messages]

    def confirm(self, messages: list[conveyor.QueueMessage]) -> None:
        now = time.monotonic()
        with self.lock:
            for m in messages:
                if (m.partition, m.offset) in self.confirmed:
                    self.duplicate_confirms.append((m.partition, m.offset))
                self.confirmed[(m.partition, m.offset)] = now

    def redelivered_after_confirm(self) -> list[tuple[int, int]]:
        return [
            (p, o)
            for t, p, o in self.delivered
            if (p, o) in self.confirmed and t > self.confirmed[(p, o)]
        ]


def member(cluster: Cluster, ledger: Ledger, total: int, seed: int) -> None:
    rng = random.Random(seed)
    # 20 attempts: with the default 5, a record released five times in a row (10% each:
    # about 1 in 50 runs of 2,000 records) is dead-lettered, never accepted, as promised
    config = ShareGroupConfig(mode="unordered", max_delivery_attempts=20)
    with conveyor.Queue("work-once", "once", url=cluster.url, config=config) as queue:
        deadline = time.monotonic() + 60
        while len(ledger.confirmed) < total and time.monotonic() < deadline:
            messages = queue.receive(max_records=50, timeout=0.5)
            ledger.deliver(messages)
            accepted = []
            for message in messages:
                if rng.random() < 0.1:
                    message.release()  # a failure: delivered again, to anyone
                else:
                    message.ack()
                    accepted.append(message)
            refused = {
                (f.partition, o)
                for f in queue.commit()
                for o in range(f.first_offset, f.last_offset + 1)
            }
            ledger.confirm([m for m in accepted if (m.partition, m.offset) not in refused])


def test_every_record_accepted_exactly_once(cluster: Cluster) -> None:
    total = 2_000
    produce(cluster, "work-once", total)
    ledger = Ledger()
    threads = [
        threading.Thread(target=member, args=(cluster, ledger, total, seed)) for seed in range(3)
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(90)
    offsets = conveyor.Admin(cluster.url).describe_topic("work-once").partitions
    expected = {(p.partition, o) for p in offsets for o in range(p.high_watermark or 0)}
    assert len(expected) == total
    assert set(ledger.confirmed) == expected
    assert ledger.duplicate_confirms == []
    assert ledger.redelivered_after_confirm() == []
    # the counts brokers report (every heartbeat) come to rest: nothing in flight, every
    # partition's start offset at its end
    wait_for_describe(
        cluster,
        "once",
        lambda d: (
            len(d.get("partitions", [])) == 4
            and all(p.get("in_flight", 0) == 0 for p in d["partitions"])
            and sum(p["start_offset"] for p in d["partitions"]) == total
        ),
    )


def wait_for_describe(
    cluster: Cluster, group: str, ready: Any, timeout_s: float = 15
) -> dict[str, Any]:
    found: dict[str, Any] = {}

    def check() -> bool:
        found.update(http_json(f"{cluster.url}/v1/share-groups/{group}", method="GET"))
        return bool(ready(found))

    wait_for(check, timeout_s, f"share group {group}'s description")
    return found


def test_rest_receive_and_acknowledge_by_lock_token(cluster: Cluster) -> None:
    conveyor.Admin(cluster.url).create_topic("work-rest", partitions=1, replication_factor=3)
    broker = cluster.brokers[1].url
    records = [{"key": f"k{i}", "value": f"v{i}"} for i in range(6)]
    http_json(f"{broker}/v1/topics/work-rest/records", {"records": records})
    conveyor.Queue("work-rest", "rest", url=cluster.url).close()  # creates the group
    leader = _leader_url(cluster, "work-rest", 0)
    got = http_json(
        f"{leader}/v1/share-groups/rest/topics/work-rest/receive",
        {"max_records": 6, "max_wait_ms": 2000},
    )
    assert [r["value"] for r in got["records"]] == [f"v{i}" for i in range(6)]
    assert all(r["delivery_count"] == 1 for r in got["records"])
    tokens = [r["lock_token"] for r in got["records"]]
    answer = http_json(
        f"{leader}/v1/share-groups/rest/topics/work-rest/acknowledge",
        {
            "acknowledgements": [
                *({"lock_token": t} for t in tokens[:4]),
                {"lock_token": tokens[4], "type": "release"},
                {"lock_token": tokens[5], "type": "release", "delay_ms": 60_000},
            ]
        },
    )
    assert [r.get("error") for r in answer["results"]] == [None] * 6
    again = http_json(
        f"{leader}/v1/share-groups/rest/topics/work-rest/receive",
        {"max_records": 6, "max_wait_ms": 500},
    )
    assert [(r["value"], r["delivery_count"]) for r in again["records"]] == [("v4", 2)]
    # an acknowledgement with the first delivery's token is refused: the lock is gone
    stale = http_json(
        f"{leader}/v1/share-groups/rest/topics/work-rest/acknowledge",
        {"acknowledgements": [{"lock_token": tokens[4]}]},
    )
    assert stale["results"][0]["error"] == "INVALID_RECORD_STATE"
    with pytest.raises(urllib.error.HTTPError) as bad:
        http_json(
            f"{leader}/v1/share-groups/rest/topics/work-rest/acknowledge",
            {"acknowledgements": [{"lock_token": "not-a-token"}]},
        )
    assert bad.value.code == 400
    bad.value.close()


def _leader_url(cluster: Cluster, topic: str, partition: int) -> str:
    description = conveyor.Admin(cluster.url).describe_topic(topic)
    info = next(p for p in description.partitions if p.partition == partition)
    assert info.leader_url is not None
    return info.leader_url


def test_rejected_and_failing_records_are_dead_lettered_with_headers(cluster: Cluster) -> None:
    produce(cluster, "work-dlq", 4, keys=4, partitions=1)
    config = ShareGroupConfig(lock_duration_ms=1_000, max_delivery_attempts=5)
    with conveyor.Queue("work-dlq", "dlq", url=cluster.url, config=config) as queue:
        first = queue.receive(max_records=4, timeout=5)
        assert [m.offset for m in first] == [0, 1, 2, 3]
        first[0].reject("malformed payload")
        first[2].ack()
        first[3].ack()
        poison = first[1]
        counts = [poison.delivery_count]
        poison.release(reason="handler crashed")
        for _ in range(4):
            again = receive_some(queue)
            assert [m.offset for m in again] == [1]
            counts.append(again[0].delivery_count)
            again[0].release(reason="handler crashed")
        assert counts == [1, 2, 3, 4, 5]
        assert queue.commit() == []
    dead = consume_all(cluster, "dlq.dead-letters", 2)
    by_offset = {int(h["conveyor-dlq-offset"]): (m, h) for m, h in dead}
    assert set(by_offset) == {0, 1}
    message, headers = by_offset[0]
    assert message.value == b"value-0" and message.key == b"key-0"
    assert headers["conveyor-dlq-error"] == "malformed payload"
    assert headers["conveyor-dlq-delivery-count"] == "1"
    assert headers["conveyor-dlq-topic"] == "work-dlq"
    assert headers["conveyor-dlq-partition"] == "0"
    assert headers["conveyor-dlq-group"] == "dlq"
    _, headers = by_offset[1]
    assert headers["conveyor-dlq-error"] == "handler crashed"
    assert headers["conveyor-dlq-delivery-count"] == "5"
    described = wait_for_describe(
        cluster, "dlq", lambda d: any(p.get("start_offset") == 4 for p in d.get("partitions", []))
    )
    assert described["dead_letter_topic"] == "dlq.dead-letters"


def receive_some(queue: conveyor.Queue) -> list[conveyor.QueueMessage]:
    got: list[conveyor.QueueMessage] = []
    wait_for(lambda: got.extend(queue.receive(10, timeout=0.5)) or got, 10, "a delivery")
    return got


def consume_all(
    cluster: Cluster, topic: str, count: int
) -> list[tuple[conveyor.Message, dict[str, str]]]:
    out: list[tuple[conveyor.Message, dict[str, str]]] = []
    wait_for(lambda: _topic_exists(cluster, topic), 15, f"topic {topic}")
    with conveyor.Consumer(cluster.url, topic, enable_auto_commit=False) as consumer:
        deadline = time.monotonic() + 20
        while len(out) < count and time.monotonic() < deadline:
            for message in consumer.poll(timeout=0.5):
                headers = {k: (v or b"").decode() for k, v in message.headers}
                out.append((message, headers))
    assert len(out) == count, out
    return out


def _topic_exists(cluster: Cluster, topic: str) -> bool:
    try:
        conveyor.Admin(cluster.url).describe_topic(topic)
    except conveyor.ConveyorError:
        return False
    return True


def test_a_mode_clash_is_refused(cluster: Cluster, tmp_path: Path) -> None:
    conveyor.Admin(cluster.url).create_topic("work-mode", partitions=1, replication_factor=3)
    conveyor.Queue("work-mode", "moded", url=cluster.url, mode="key_ordered").close()
    with pytest.raises(conveyor.InvalidRequestError) as refused:
        conveyor.Queue("work-mode", "moded", url=cluster.url, mode="unordered")
    assert refused.value.code is conveyor.ErrorCode.INCONSISTENT_GROUP_PROTOCOL
    # a consumer group cannot take a share group's name either
    with (
        conveyor.Consumer(cluster.url, "work-mode", group_id="moded") as consumer,
        pytest.raises(conveyor.ConveyorError) as clash,
    ):
        consumer.poll(timeout=3)
    assert clash.value.code is conveyor.ErrorCode.INCONSISTENT_GROUP_PROTOCOL


KILLED_MEMBER = """
import json, sys, time
import conveyor
from conveyor.protocol.share import ShareGroupConfig

url, topic, group = sys.argv[1:4]
config = ShareGroupConfig(lock_duration_ms=2_000)
queue = conveyor.Queue(topic, group, url=url, config=config, prefetch=False)
got = []
deadline = time.monotonic() + 30
while len(got) < 5 and time.monotonic() < deadline:
    got += queue.receive(max_records=5 - len(got), timeout=1)
print(json.dumps([m.offset for m in got]), flush=True)
time.sleep(600)  # holding the locks until SIGKILLed
"""


def test_a_killed_members_records_are_redelivered_after_their_lock(cluster: Cluster) -> None:
    produce(cluster, "work-kill", 5, partitions=1)
    child = subprocess.Popen(
        [sys.executable, "-c", KILLED_MEMBER, cluster.url, "work-kill", "killed"],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert child.stdout is not None
        held = json.loads(child.stdout.readline())
        assert held == [0, 1, 2, 3, 4]
        child.send_signal(signal.SIGKILL)
        child.wait(10)
    finally:
        child.kill()
        child.wait()
        if child.stdout is not None:
            child.stdout.close()
    with conveyor.Queue("work-kill", "killed", url=cluster.url) as other:
        redelivered: list[conveyor.QueueMessage] = []
        wait_for(
            lambda: redelivered.extend(other.receive(5, timeout=0.5)) or len(redelivered) == 5,
            20,
            "the killed member's records",
        )
        assert sorted(m.offset for m in redelivered) == held
        assert {m.delivery_count for m in redelivered} == {2}
        other.ack(redelivered)
        assert other.commit() == []


def cli_json(capsys: pytest.CaptureFixture[str], *argv: str, must: bool = True) -> Any:
    """The command's JSON output; None when it failed and ``must`` is false."""
    from conveyor.cli.main import main

    capsys.readouterr()
    code = main([*argv, "--json"])
    if not must and code != 0:
        return None  # e.g. a dead-letter topic just made, its leader not serving yet
    assert code == 0
    return json.loads(capsys.readouterr().out)


def test_queue_cli_receive_stats_dead_letters_and_requeue(
    cluster: Cluster, capsys: pytest.CaptureFixture[str]
) -> None:
    produce(cluster, "work-cli", 3, keys=3, partitions=1)
    url = ("--url", cluster.url)
    info = cli_json(capsys, "queue", "configure", "cli", "--max-delivery-attempts", "2", *url)
    assert info["config"]["max_delivery_attempts"] == 2
    got = cli_json(
        capsys, "queue", "receive", "work-cli", "cli", "-n", "3", "--then", "reject", *url
    )
    assert [r["value"] for r in got["records"]] == ["value-0", "value-1", "value-2"]
    assert got["failed"] == []

    def dead_letters() -> list[dict[str, Any]]:
        if not _topic_exists(cluster, "cli.dead-letters"):
            return []
        found = cli_json(capsys, "queue", "dead-letters", "cli", *url, must=False)
        return [] if found is None else list(found["records"])

    wait_for(lambda: len(dead_letters()) == 3, 15, "three dead letters")
    dead = dead_letters()
    assert [d["source"] for d in dead] == ["work-cli-0@0", "work-cli-0@1", "work-cli-0@2"]
    assert {d["error"] for d in dead} == {"rejected by conveyor queue receive"}
    stats = cli_json(capsys, "queue", "stats", "cli", *url)
    assert stats["config"]["max_delivery_attempts"] == 2
    assert stats["dead_letter_topic"] == "cli.dead-letters"
    assert cli_json(capsys, "group", "describe", "cli", *url)["group"] == "cli"
    assert cli_json(capsys, "queue", "requeue", "cli", *url)["requeued"] == {"work-cli": 3}
    assert cli_json(capsys, "queue", "requeue", "cli", *url)["requeued"] == {}  # moved once
    again = cli_json(capsys, "queue", "receive", "work-cli", "cli", "-n", "3", *url)
    assert [(r["offset"], r["value"], r["delivery_count"]) for r in again["records"]] == [
        (3, "value-0", 1),
        (4, "value-1", 1),
        (5, "value-2", 1),
    ]
    listed = cli_json(capsys, "queue", "list", *url)
    assert "cli" in {g["group"] for g in listed}


class Processing:
    """Every processing attempt of a key-ordered run, in the order they started."""

    def __init__(self, seed: int) -> None:
        self.lock = threading.Lock()
        self.rng = random.Random(seed)
        self.attempts: list[tuple[bytes | None, int, int, bool]] = []  # key, partition, offset, ok

    def handle(self, message: conveyor.QueueMessage) -> None:
        with self.lock:
            ok = self.rng.random() >= 0.1
            self.attempts.append((message.key, message.partition, message.offset, ok))
        if not ok:
            raise RuntimeError("a seeded failure")


def test_key_ordered_keeps_each_keys_order_across_redeliveries_and_a_hung_member(
    cluster: Cluster,
) -> None:
    """16 members on 4 partitions (40 keys), a seeded 10% of attempts failing (released),
    and one member that stops acknowledging after 3 records with more locked (its locks
    expire): per key, attempts start in offset order (a retry of n may follow n, nothing
    before n follows n + 1), and every record is processed and settled."""
    total = 800
    produce(cluster, "work-keyed", total, keys=40)
    config = ShareGroupConfig(mode="key_ordered", lock_duration_ms=2_000, max_delivery_attempts=20)
    processing = Processing(seed=23)
    queues = [
        conveyor.Queue("work-keyed", "keyed", url=cluster.url, config=config) for _ in range(16)
    ]
    hung = queues.pop()
    held = []
    wait_for(lambda: held.extend(hung.receive(10, timeout=0.5)) or len(held) > 3, 20, "records")
    for message in held[:3]:
        with processing.lock:
            processing.attempts.append((message.key, message.partition, message.offset, True))
        message.ack()
    hung.commit()  # the rest stay locked, unacknowledged, until their locks expire
    threads = [
        threading.Thread(target=q.subscribe, args=(processing.handle,), kwargs={"timeout": 0.3})
        for q in queues
    ]
    for thread in threads:
        thread.start()
    try:
        wait_for_describe(
            cluster,
            "keyed",
            lambda d: (
                len(d.get("partitions", [])) == 4
                and sum(p["start_offset"] for p in d["partitions"]) == total
            ),
            timeout_s=90,
        )
    finally:
        for queue in queues:
            queue.stop()
        for thread in threads:
            thread.join(30)
        for queue in [*queues, hung]:
            queue.close()
    by_key: dict[bytes | None, list[tuple[int, int]]] = {}
    for key, partition, offset, _ in processing.attempts:
        by_key.setdefault(key, []).append((partition, offset))
    for key, seen in by_key.items():
        assert seen == sorted(seen), f"key {key!r} processed out of order: {seen}"
    done = {(p, o) for _, p, o, ok in processing.attempts if ok}
    assert len(done) == total
    assert any(not ok for *_, ok in processing.attempts)  # the schedule did fail some
