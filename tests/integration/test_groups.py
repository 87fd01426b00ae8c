"""Consumer groups end to end: real coordinator, brokers and member processes.

Members are subprocesses (``group_member.py``) so that SIGKILL and SIGSTOP are real.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections import defaultdict
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

import conveyor
from tests.integration.cluster import Cluster
from tests.waiting import wait_for

ROOT = Path(__file__).resolve().parents[2]


@dataclass
class MemberProc:
    """One member process; its stdout (JSON lines) goes to a file read on demand."""

    path: Path
    process: subprocess.Popen[bytes]
    lines: list[dict[str, Any]] = field(default_factory=list)
    _read: int = 0

    @classmethod
    def start(
        cls,
        cluster: Cluster,
        topic: str,
        group: str,
        path: Path,
        *extra: str,
        bootstrap_only: bool = False,
    ) -> MemberProc:
        """A member that finds the brokers' Kafka listeners through the coordinator's URL,
        or, ``bootstrap_only``, is given nothing but them (``bootstrap_servers``)."""
        url = f"kafka://{cluster.bootstrap}" if bootstrap_only else cluster.url
        with path.open("wb") as out, path.with_suffix(".err").open("wb") as err:
            process = subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "tests.integration.group_member",
                    url,
                    topic,
                    group,
                    *extra,
                ],
                cwd=ROOT,
                stdout=out,
                stderr=err,
            )
        return cls(path, process)

    def read(self) -> list[dict[str, Any]]:
        data = self.path.read_bytes()
        complete = data[: data.rfind(b"\n") + 1]
        self.lines = [json.loads(line) for line in complete.splitlines() if line]
        return self.lines

    def processed(self) -> list[dict[str, Any]]:
        return [line for line in self.read() if "k" in line]

    def stop(self, timeout_s: float = 20.0) -> None:
        self.process.send_signal(signal.SIGTERM)
        self.process.wait(timeout_s)

    def kill(self) -> None:
        self.process.kill()
        self.process.wait(5)


@pytest.fixture
def members() -> Iterator[list[MemberProc]]:
    started: list[MemberProc] = []
    yield started
    for member in started:
        if member.process.poll() is None:
            member.process.send_signal(signal.SIGCONT)
            member.kill()


def produce(cluster: Cluster, topic: str, count: int, keys: int, start: int = 0) -> None:
    """Values ``key:n`` with n the message's sequence number within its key."""
    with conveyor.Producer(cluster.url) as producer:
        for i in range(start, start + count):
            key = f"key-{i % keys}"
            producer.send(topic, f"{key}:{i // keys}", key=key)
        producer.flush()


def make_topic(cluster: Cluster, name: str, partitions: int) -> None:
    with conveyor.Admin(cluster.url) as admin:
        admin.create_topic(name, partitions=partitions)


def union(procs: list[MemberProc]) -> list[dict[str, Any]]:
    return [line for p in procs for line in p.processed()]


def distinct(procs: list[MemberProc]) -> set[tuple[int, int]]:
    return {(line["p"], line["o"]) for line in union(procs)}


def check_key_order(lines: list[dict[str, Any]]) -> None:
    """Per key, the first time each value is seen comes in sequence order (a redelivered
    message may repeat, but a key's messages never go backwards past a new one)."""
    seen: dict[str, int] = {}
    for line in lines:
        key, n = line["v"].rsplit(":", 1)
        n_int = int(n)
        if n_int > seen.get(key, -1):
            assert n_int == seen.get(key, -1) + 1, f"{key}: {n_int} after {seen.get(key)}"
            seen[key] = n_int


def test_two_consumers_split_a_group_each_message_once_per_key_order(
    cluster: Cluster, members: list[MemberProc], tmp_path: Path
) -> None:
    """The seed's consumer-group test: 1,000 messages over 4 keys, two members, with
    nothing but the brokers' Kafka listeners (KIP-848 heartbeats, OffsetCommit, Fetch)."""
    make_topic(cluster, "seed", partitions=4)
    a = MemberProc.start(cluster, "seed", "g", tmp_path / "a.jsonl", bootstrap_only=True)
    b = MemberProc.start(cluster, "seed", "g", tmp_path / "b.jsonl", bootstrap_only=True)
    members += [a, b]
    wait_for(lambda: _stable_with(cluster, "g", 2), 20, "two members in a stable group")
    produce(cluster, "seed", 1_000, keys=4)
    wait_for(lambda: len(distinct([a, b])) == 1_000, 30, "every message consumed")
    metrics = _metrics(cluster)
    assert metrics['conveyor_coordinator_group_members{group="g"}'] == 2
    assert metrics['conveyor_coordinator_rebalances_total{group="g"}'] >= 2  # two joins
    a.stop()
    b.stop()
    got_a, got_b = a.processed(), b.processed()
    assert len(got_a) + len(got_b) == 1_000  # exactly once: no duplicates
    assert got_a and got_b  # both received some
    assert not {line["k"] for line in got_a} & {line["k"] for line in got_b}
    for got in (got_a, got_b):
        check_key_order(got)


def _describe(cluster: Cluster, group: str) -> dict[str, Any]:
    import urllib.request

    with urllib.request.urlopen(f"{cluster.url}/v1/groups/{group}", timeout=5) as response:
        body: dict[str, Any] = json.loads(response.read())
    return body


def _metrics(cluster: Cluster) -> dict[str, float]:
    import urllib.request

    with urllib.request.urlopen(f"{cluster.url}/metrics", timeout=5) as response:
        text = response.read().decode()
    samples = {}
    for line in text.splitlines():
        if line and not line.startswith("#"):
            name, _, value = line.rpartition(" ")
            samples[name] = float(value)
    return samples


def _stable_with(cluster: Cluster, group: str, count: int) -> bool:
    description = _describe(cluster, group)
    return description["state"] == "stable" and len(description.get("members", [])) == count


def merged_by_time(procs: list[MemberProc]) -> list[dict[str, Any]]:
    lines = [dict(line, m=i) for i, p in enumerate(procs) for line in p.processed()]
    return sorted(lines, key=lambda line: line["t"])


def balanced_keys(owners: list[set[int]], partitions: int, per_owner: int) -> list[str]:
    """Key names whose partitions give each owner exactly ``per_owner`` keys: hashing 8
    keys onto 16 partitions is otherwise lopsided whatever the assignor does."""
    from conveyor.protocol.partitioner import partition_for_key

    chosen: list[str] = []
    count = [0] * len(owners)
    used: set[int] = set()
    for i in range(10_000):
        name = f"key-{i}"
        p = partition_for_key(name.encode(), partitions)
        owner = next(n for n, ps in enumerate(owners) if p in ps)
        if count[owner] < per_owner and p not in used:
            chosen.append(name)
            count[owner] += 1
            used.add(p)
        if len(chosen) == per_owner * len(owners):
            return chosen
    raise AssertionError("no balanced key set found")


def produce_keys(cluster: Cluster, topic: str, keys: list[str], count: int) -> None:
    with conveyor.Producer(cluster.url) as producer:
        for i in range(count):
            key = keys[i % len(keys)]
            producer.send(topic, f"{key}:{i // len(keys)}", key=key)
        producer.flush()


# The count (about 11 s here); CONVEYOR_TEST_GROUPS_MESSAGES overrides it.
FOUR_MEMBER_COUNT = int(os.environ.get("CONVEYOR_TEST_GROUPS_MESSAGES", "200000"))


def test_four_subscribers_split_sixteen_partitions_evenly(
    cluster: Cluster, members: list[MemberProc], tmp_path: Path
) -> None:
    make_topic(cluster, "wide", partitions=16)
    procs = [MemberProc.start(cluster, "wide", "g4", tmp_path / f"m{i}.jsonl") for i in range(4)]
    members += procs
    wait_for(lambda: _stable_with(cluster, "g4", 4), 30, "four members in a stable group")
    description = _describe(cluster, "g4")
    owners = [{p["partition"] for p in m["assigned"]} for m in description["members"]]
    assert sorted(len(o) for o in owners) == [4, 4, 4, 4]
    keys = balanced_keys(owners, 16, per_owner=2)
    produce_keys(cluster, "wide", keys, FOUR_MEMBER_COUNT)
    wait_for(lambda: len(distinct(procs)) == FOUR_MEMBER_COUNT, 90, "every message consumed")
    for p in procs:
        p.stop()
    lines = union(procs)
    assert len(lines) == FOUR_MEMBER_COUNT  # no duplicates
    even = FOUR_MEMBER_COUNT / 4
    for p in procs:
        share = len(p.processed())
        assert abs(share - even) <= 0.25 * even, f"{share} of {FOUR_MEMBER_COUNT}"
        check_key_order(p.processed())


def test_scale_out_under_load_then_leave_and_kill(
    cluster: Cluster, members: list[MemberProc], tmp_path: Path
) -> None:
    """1 member, +3 mid-stream, 2 leave gracefully, 1 is SIGKILLed: nothing lost;
    duplicates only from what the killed one processed after its last commit; per-key
    order holds across every hand-over."""
    import threading

    total = 12_000
    make_topic(cluster, "scale", partitions=8)
    first = MemberProc.start(cluster, "scale", "gs", tmp_path / "m0.jsonl")
    members.append(first)
    wait_for(lambda: _stable_with(cluster, "gs", 1), 20, "the first member")
    producer = threading.Thread(target=_produce_slowly, args=(cluster, "scale", total, 8))
    producer.start()
    try:
        wait_for(lambda: len(first.processed()) > 1_000, 30, "consumption under way")
        more = [
            MemberProc.start(cluster, "scale", "gs", tmp_path / f"m{i}.jsonl") for i in (1, 2, 3)
        ]
        members += more
        wait_for(lambda: _stable_with(cluster, "gs", 4), 30, "four members")
        # each has its share (some partitions carry no key of the 8, so "has consumed"
        # would depend on which partitions a member got)
        assert all(m["assigned"] for m in _describe(cluster, "gs")["members"])
        more[0].stop()
        more[1].stop()
        wait_for(lambda: _stable_with(cluster, "gs", 2), 30, "two members after leaves")
        victim = more[2]
        victim.kill()
    finally:
        producer.join(120)
    procs = [first, *more]
    wait_for(lambda: len(distinct(procs)) == total, 60, "every message consumed")
    first.stop()
    lines = union(procs)
    duplicates = len(lines) - total
    victim_lines = victim.read()
    committed = max([line["committed"] for line in victim_lines if "committed" in line] or [0])
    uncommitted = len(victim.processed()) - committed
    assert 0 <= duplicates <= uncommitted, (duplicates, uncommitted)
    check_key_order(merged_by_time(procs))


def _produce_slowly(cluster: Cluster, topic: str, count: int, keys: int) -> None:
    """About 1,000 messages a second, so members come and go mid-stream."""
    with conveyor.Producer(cluster.url) as producer:
        for i in range(count):
            key = f"key-{i % keys}"
            producer.send(topic, f"{key}:{i // keys}", key=key)
            if i % 100 == 99:
                producer.flush()
                time.sleep(0.1)
        producer.flush()


def test_a_paused_zombie_is_fenced_and_rejoins(
    cluster: Cluster, members: list[MemberProc], tmp_path: Path
) -> None:
    import threading

    total = 6_000
    make_topic(cluster, "zombie", partitions=4)
    zombie = MemberProc.start(cluster, "zombie", "gz", tmp_path / "z.jsonl", "1500", "0.002")
    other = MemberProc.start(cluster, "zombie", "gz", tmp_path / "o.jsonl", "1500", "0.002")
    members += [zombie, other]
    wait_for(lambda: _stable_with(cluster, "gz", 2), 20, "two members")
    producer = threading.Thread(target=_produce_slowly, args=(cluster, "zombie", total, 8))
    producer.start()
    try:
        wait_for(lambda: len(zombie.processed()) > 200, 30, "the zombie consuming")
        zombie.process.send_signal(signal.SIGSTOP)
        wait_for(lambda: _stable_with(cluster, "gz", 1), 20, "the zombie removed")
        zombie.process.send_signal(signal.SIGCONT)
        wait_for(lambda: _stable_with(cluster, "gz", 2), 20, "the zombie back in")
        settled_at = time.time()
    finally:
        producer.join(120)
    procs = [zombie, other]
    wait_for(lambda: len(distinct(procs)) == total, 60, "every message consumed")
    for p in procs:
        p.stop()
    stderr = zombie.path.with_suffix(".err").read_text()
    assert "fenced" in stderr  # it noticed it lost its partitions and rejoined
    rejected = [line for line in zombie.read() if "commit_failed" in line]
    assert all(line["commit_failed"] != "NETWORK_ERROR" for line in rejected)
    # after the rebalance settled, each partition is processed by one member only
    owners: dict[int, set[int]] = defaultdict(set)
    for line in merged_by_time(procs):
        if line["t"] > settled_at + 0.5:
            owners[line["p"]].add(line["m"])
    assert all(len(who) == 1 for who in owners.values()), owners
    check_key_order(merged_by_time(procs))


def test_coordinator_and_broker_restarts_keep_offsets_and_assignments(
    cluster: Cluster, members: list[MemberProc], tmp_path: Path
) -> None:
    make_topic(cluster, "restart", partitions=4)
    procs = [
        # a session longer than the restart takes on a loaded machine: members that lose
        # their session drop their partitions and join afresh (safe, but not "recovered")
        MemberProc.start(cluster, "restart", "gr", tmp_path / f"m{i}.jsonl", "20000")
        for i in range(2)
    ]
    members += procs
    wait_for(lambda: _stable_with(cluster, "gr", 2), 20, "two members")
    produce(cluster, "restart", 2_000, keys=4)
    wait_for(lambda: len(distinct(procs)) == 2_000, 30, "the first 2,000")
    before = _assignment(cluster, "gr")
    assert cluster.coordinator is not None
    cluster.coordinator.stop()
    cluster.coordinator.start()
    cluster.coordinator.wait_ready()
    wait_for(lambda: _stable_with(cluster, "gr", 2), 20, "the members back after restart")
    assert _assignment(cluster, "gr") == before  # re-admitted with what they owned
    produce(cluster, "restart", 2_000, keys=4, start=2_000)
    wait_for(lambda: len(distinct(procs)) == 4_000, 30, "2,000 more after the restart")
    broker = cluster.brokers[1]
    broker.stop()
    broker.start()
    broker.wait_ready()
    produce(cluster, "restart", 2_000, keys=4, start=4_000)
    wait_for(lambda: len(distinct(procs)) == 6_000, 60, "2,000 more after a broker restart")
    for p in procs:
        p.stop()
    assert len(union(procs)) == 6_000  # consumption continued from the committed offsets
    for p in procs:
        check_key_order(p.processed())


def _assignment(cluster: Cluster, group: str) -> dict[str, list[int]]:
    return {
        m["member_id"]: sorted(p["partition"] for p in m["assigned"])
        for m in _describe(cluster, group)["members"]
    }


def test_two_groups_each_see_every_message_once(
    cluster: Cluster, members: list[MemberProc], tmp_path: Path
) -> None:
    make_topic(cluster, "shared", partitions=4)
    one = [MemberProc.start(cluster, "shared", "first", tmp_path / f"a{i}.jsonl") for i in range(2)]
    two = [MemberProc.start(cluster, "shared", "second", tmp_path / "b.jsonl")]
    members += one + two
    wait_for(lambda: _stable_with(cluster, "first", 2), 20, "group first")
    wait_for(lambda: _stable_with(cluster, "second", 1), 20, "group second")
    produce(cluster, "shared", 1_000, keys=4)
    wait_for(lambda: len(distinct(one)) == 1_000, 30, "all in group first")
    wait_for(lambda: len(distinct(two)) == 1_000, 30, "all in group second")
    for p in one + two:
        p.stop()
    assert len(union(one)) == 1_000
    assert len(union(two)) == 1_000
    # the coordinator sees both fully committed, lag 0
    wait_for(lambda: _caught_up(cluster, "first", 1_000), 15, "first caught up")
    wait_for(lambda: _caught_up(cluster, "second", 1_000), 15, "second caught up")


def _caught_up(cluster: Cluster, group: str, count: int) -> bool:
    listing = {g["group"]: g for g in _get(cluster, "/v1/groups")["groups"]}
    rows = _describe(cluster, group)["partitions"]
    committed = sum(r.get("committed_offset", 0) for r in rows)
    return bool(listing[group].get("lag", 0) == 0 and committed == count)


def _get(cluster: Cluster, path: str) -> dict[str, Any]:
    import urllib.request

    with urllib.request.urlopen(f"{cluster.url}{path}", timeout=5) as response:
        body: dict[str, Any] = json.loads(response.read())
    return body


def test_cli_group_list_describe_and_reset_offsets(
    cluster: Cluster, members: list[MemberProc], tmp_path: Path
) -> None:
    from tests.integration.test_cli import conveyor as cli

    make_topic(cluster, "ops", partitions=2)
    produce(cluster, "ops", 100, keys=4)
    member = MemberProc.start(cluster, "ops", "ops-g", tmp_path / "m.jsonl")
    members.append(member)
    wait_for(lambda: len(distinct([member])) == 100, 30, "the member consumed everything")
    wait_for(lambda: _caught_up(cluster, "ops-g", 100), 15, "lag 0")
    listed = cli(cluster.url, "group", "list", "--json")
    assert listed.returncode == 0, listed.stderr
    (ops,) = [g for g in json.loads(listed.stdout) if g["group"] == "ops-g"]
    # at least the table's columns, even where a value equals its default (lag 0)
    table = {"group": "ops-g", "state": "stable", "members": 1, "lag": 0}
    assert {key: ops[key] for key in table} == table and "generation" in ops
    described = cli(cluster.url, "group", "describe", "ops-g")
    assert described.returncode == 0 and "member" in described.stdout
    busy = cli(cluster.url, "group", "reset-offsets", "ops-g", "--topic", "ops", "--to", "earliest")
    assert busy.returncode == 1 and "GROUP_NOT_EMPTY" in busy.stderr
    member.stop()
    wait_for(lambda: _describe(cluster, "ops-g")["state"] == "empty", 15, "an empty group")
    for to, expected in (("earliest", 0), ("7", 7), ("latest", None), ("2000-01-01T00:00:00Z", 0)):
        reset = cli(
            cluster.url, "group", "reset-offsets", "ops-g", "--topic", "ops", "--to", to, "--json"
        )
        assert reset.returncode == 0, reset.stderr
        offsets = {o["partition"]: o["offset"] for o in json.loads(reset.stdout)["offsets"]}
        assert len(offsets) == 2
        if expected is not None:
            assert set(offsets.values()) == {expected}
        else:
            assert sum(offsets.values()) == 100
    bad = cli(cluster.url, "group", "reset-offsets", "ops-g", "--topic", "ops", "--to", "soon")
    assert bad.returncode == 1 and "ISO 8601" in bad.stderr


def test_a_member_that_stops_polling_loses_its_partitions_then_rejoins(cluster: Cluster) -> None:
    """max_poll_interval_ms: a stuck application must not hold partitions forever."""
    make_topic(cluster, "stuck", partitions=4)
    produce(cluster, "stuck", 40, keys=4)
    settings: dict[str, Any] = {
        "group_id": "gp",
        "session_timeout_ms": 1_000,
        "heartbeat_interval_ms": 200,
        "max_poll_interval_ms": 1_500,
    }
    with (
        conveyor.Consumer(cluster.url, "stuck", **settings) as stuck,
        conveyor.Consumer(cluster.url, "stuck", **settings) as healthy,
    ):

        def both_poll() -> bool:
            stuck.poll(timeout=0.05)
            healthy.poll(timeout=0.05)
            return _stable_with(cluster, "gp", 2)

        wait_for(both_poll, 20, "two members")

        def healthy_polls() -> bool:
            healthy.poll(timeout=0.1)
            return len(healthy.assignment()) == 4

        # only `healthy` polls from now on: `stuck` is removed and everything moves
        wait_for(healthy_polls, 20, "all partitions on the healthy member")
        assert _describe(cluster, "gp")["members"][0]["member_id"] != "stuck"
        assert len(_describe(cluster, "gp")["members"]) == 1
        healthy.commit()
        # the stuck one polls again: it rejoins and gets its share back
        wait_for(both_poll, 20, "the stuck member back")
        wait_for(lambda: both_poll() and len(stuck.assignment()) == 2, 10, "its share back")


def test_async_members_split_partitions_and_at_most_once_commits_first(cluster: Cluster) -> None:
    import asyncio

    make_topic(cluster, "amo", partitions=4)
    produce(cluster, "amo", 200, keys=4)

    async def body() -> None:
        settings: dict[str, Any] = {"group_id": "ga", "delivery": "at-most-once"}
        async with (
            conveyor.AsyncConsumer(cluster.url, "amo", **settings) as a,
            conveyor.AsyncConsumer(cluster.url, "amo", **settings) as b,
        ):
            seen: dict[str, list[tuple[int, int]]] = {"a": [], "b": []}
            deadline = time.monotonic() + 30
            while len(seen["a"]) + len(seen["b"]) < 200 and time.monotonic() < deadline:
                for name, consumer in (("a", a), ("b", b)):
                    for m in await consumer.poll(timeout=0.1):
                        seen[name].append((m.partition, m.offset))
            assert len(seen["a"]) + len(seen["b"]) == 200
            assert len(set(seen["a"]) | set(seen["b"])) == 200
            # at-most-once: what poll returned was committed before it returned
            rows = _describe(cluster, "ga")["partitions"]
            assert sum(r.get("committed_offset", 0) for r in rows) == 200

    asyncio.run(body())
