"""Consumer groups over the client's Kafka transport (issue 19), with real processes: the
members have nothing but the brokers' Kafka listeners (``bootstrap_servers``), so their
membership is KIP-848's ConsumerGroupHeartbeat, their commits OffsetCommit v9 and their
reads Fetch. The coordinator's session timeout for such members is its
``--group-consumer-session-timeout-ms`` (KIP-848: the group's, not the member's), short
here so that a killed or paused member is removed within seconds.

The HTTP variants of these scenarios are in test_groups.py; the seed scenario itself runs
there over both transports.
"""

from __future__ import annotations

import json
import signal
import threading
import time
from collections import defaultdict
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

import conveyor
from conveyor.protocol.errors import ConveyorError
from tests.integration.cluster import Cluster
from tests.integration.test_groups import (
    MemberProc,
    _describe,
    _produce_slowly,
    _stable_with,
    check_key_order,
    distinct,
    make_topic,
    merged_by_time,
    produce,
    union,
)
from tests.integration.test_kafka_transport import kafka_tls
from tests.waiting import wait_for

SESSION_TIMEOUT_MS = 2_000


@pytest.fixture(scope="module")
def kcluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    c = Cluster(
        tmp_path_factory.mktemp("groups-kafka"),
        broker_count=1,
        coordinator_args=["--group-consumer-session-timeout-ms", str(SESSION_TIMEOUT_MS)],
    ).start()
    try:
        yield c
    finally:
        c.stop()


@pytest.fixture
def members() -> Iterator[list[MemberProc]]:
    started: list[MemberProc] = []
    yield started
    for member in started:
        if member.process.poll() is None:
            member.process.send_signal(signal.SIGCONT)
            member.kill()


def _member(cluster: Cluster, topic: str, group: str, path: Path, *extra: str) -> MemberProc:
    return MemberProc.start(cluster, topic, group, path, *extra, bootstrap_only=True)


def test_a_killed_member_and_a_new_one_every_message_to_one_member_in_key_order(
    kcluster: Cluster, members: list[MemberProc], tmp_path: Path
) -> None:
    """Two members split 1,000 keyed messages; one is SIGKILLed and a third joins; 1,000
    more: nothing lost, duplicates only what the killed one processed after its last
    commit, per-key order across the hand-over. `conveyor group describe` shows the
    Kafka-transport members and the group's lag."""
    from tests.integration.test_cli import conveyor as cli

    make_topic(kcluster, "kseed", partitions=4)
    a = _member(kcluster, "kseed", "kg", tmp_path / "a.jsonl")
    b = _member(kcluster, "kseed", "kg", tmp_path / "b.jsonl")
    members += [a, b]
    wait_for(lambda: _stable_with(kcluster, "kg", 2), 90, "two members in a stable group")
    produce(kcluster, "kseed", 1_000, keys=8)
    wait_for(lambda: len(distinct([a, b])) == 1_000, 30, "the first 1,000")
    described = cli(kcluster.url, "group", "describe", "kg", "--json")
    assert described.returncode == 0, described.stderr
    description = json.loads(described.stdout)
    assert len(description["members"]) == 2
    assert {row["partition"] for row in description["partitions"]} == {0, 1, 2, 3}
    assert all("lag" in row for row in description["partitions"])
    before = _member_ids(kcluster, "kg")
    a.kill()
    c = _member(kcluster, "kseed", "kg", tmp_path / "c.jsonl")
    members.append(c)

    def a_replaced_by_c() -> bool:
        now = _member_ids(kcluster, "kg")
        return _stable_with(kcluster, "kg", 2) and len(now - before) == len(now & before) == 1

    wait_for(a_replaced_by_c, 60, "b and c after a's session")
    produce(kcluster, "kseed", 1_000, keys=8, start=1_000)
    procs = [a, b, c]
    wait_for(lambda: len(distinct(procs)) == 2_000, 60, "all 2,000")
    b.stop()
    c.stop()
    committed = max([line["committed"] for line in a.read() if "committed" in line] or [0])
    duplicates = len(union(procs)) - 2_000
    assert 0 <= duplicates <= len(a.processed()) - committed
    assert c.processed(), "the new member got a share"
    check_key_order(merged_by_time(procs))


def _member_ids(cluster: Cluster, group: str) -> set[str]:
    return {m["member_id"] for m in _describe(cluster, group)["members"]}


def test_a_paused_member_is_fenced_and_its_commits_refused_until_it_rejoins(
    kcluster: Cluster, members: list[MemberProc], tmp_path: Path
) -> None:
    """A member SIGSTOPped past the session timeout is removed; when it runs again its
    commits with the old member epoch are refused (fenced), it drops its partitions and
    rejoins, and from then on each partition is processed by one member only."""
    total = 4_000
    make_topic(kcluster, "kzombie", partitions=4)
    # the members' own session timeout below the coordinator's: a member that was paused
    # past the coordinator's knows it on waking (before its next heartbeat answer), drops
    # its partitions and rejoins (docs/client.md, "Consumer groups over Kafka")
    zombie = _member(kcluster, "kzombie", "kz", tmp_path / "z.jsonl", "1500", "0.002")
    other = _member(kcluster, "kzombie", "kz", tmp_path / "o.jsonl", "1500", "0.002")
    members += [zombie, other]
    wait_for(lambda: _stable_with(kcluster, "kz", 2), 90, "two members")
    producer = threading.Thread(target=_produce_slowly, args=(kcluster, "kzombie", total, 8))
    producer.start()
    try:
        wait_for(lambda: len(zombie.processed()) > 200, 30, "the zombie consuming")
        zombie.process.send_signal(signal.SIGSTOP)
        wait_for(lambda: _stable_with(kcluster, "kz", 1), 40, "the zombie removed")
        zombie.process.send_signal(signal.SIGCONT)
        wait_for(lambda: _stable_with(kcluster, "kz", 2), 40, "the zombie back in")
        settled_at = time.time()
    finally:
        producer.join(120)
    procs = [zombie, other]
    wait_for(lambda: len(distinct(procs)) == total, 60, "every message consumed")
    for p in procs:
        p.stop()
    assert "fenced" in zombie.path.with_suffix(".err").read_text()
    refused = {line["commit_failed"] for line in zombie.read() if "commit_failed" in line}
    assert refused <= {"UNKNOWN_MEMBER", "FENCED_MEMBER", "ILLEGAL_GENERATION"}, refused
    owners: dict[int, set[int]] = defaultdict(set)
    for line in merged_by_time(procs):
        if line["t"] > settled_at + 0.5:
            owners[line["p"]].add(line["m"])
    assert all(len(who) == 1 for who in owners.values()), owners
    check_key_order(merged_by_time(procs))


def test_a_member_that_stops_polling_leaves_and_rejoins(kcluster: Cluster) -> None:
    """KIP-848 leaves max.poll.interval.ms to the client: a consumer whose application
    stops polling leaves the group itself (its partitions move), and rejoins when it
    polls again."""
    make_topic(kcluster, "kstuck", partitions=4)
    settings: dict[str, Any] = {
        "group_id": "kp",
        "bootstrap_servers": kcluster.bootstrap,
        "tls": kafka_tls(kcluster),
        "heartbeat_interval_ms": 200,
        "max_poll_interval_ms": 1_500,
    }
    with (
        conveyor.Consumer(topics="kstuck", **settings) as stuck,
        conveyor.Consumer(topics="kstuck", **settings) as healthy,
    ):

        def both_poll() -> bool:
            stuck.poll(timeout=0.05)
            healthy.poll(timeout=0.05)
            return _stable_with(kcluster, "kp", 2) and stuck.assignment_settled()

        wait_for(both_poll, 60, "two members")

        def healthy_polls() -> bool:
            healthy.poll(timeout=0.1)
            return len(healthy.assignment()) == 4

        wait_for(healthy_polls, 60, "all partitions on the healthy member")
        assert len(_describe(kcluster, "kp")["members"]) == 1
        wait_for(lambda: both_poll() and len(stuck.assignment()) == 2, 60, "its share back")


def test_offsets_committed_over_one_transport_are_read_over_the_other(
    kcluster: Cluster,
) -> None:
    """One store of committed offsets: a commit over Kafka (OffsetCommit) is what an HTTP
    consumer of the group starts from, and the other way round (OffsetFetch)."""
    make_topic(kcluster, "kstore", partitions=2)
    produce(kcluster, "kstore", 40, keys=4)
    partitions = [("kstore", 0), ("kstore", 1)]
    # no auto-commit: closing would commit the positions it read from over these
    over_kafka: dict[str, Any] = {
        "bootstrap_servers": kcluster.bootstrap,
        "tls": kafka_tls(kcluster),
        "enable_auto_commit": False,
    }
    with conveyor.Consumer(group_id="ks", **over_kafka) as kafka_side:
        kafka_side.assign(partitions)
        kafka_side.commit({("kstore", 0): 3, ("kstore", 1): 5})
    with conveyor.Consumer(kcluster.url, group_id="ks", enable_auto_commit=False) as http_side:
        assert http_side.committed(partitions) == {
            conveyor.TopicPartition("kstore", 0): 3,
            conveyor.TopicPartition("kstore", 1): 5,
        }
        http_side.assign(partitions)
        http_side.commit({("kstore", 0): 7, ("kstore", 1): 9})
    with conveyor.Consumer(group_id="ks", **over_kafka) as kafka_side:
        assert kafka_side.committed(partitions) == {
            conveyor.TopicPartition("kstore", 0): 7,
            conveyor.TopicPartition("kstore", 1): 9,
        }
        ends = kafka_side.end_offsets(partitions)
        assert sum(ends.values()) == 40
        assert kafka_side.beginning_offsets(partitions) == dict.fromkeys(ends, 0)
    # a member's group refuses a commit from outside it (over Kafka: no member id)
    with (
        conveyor.Consumer(topics="kstore", group_id="ks", **over_kafka) as member,
        conveyor.Consumer(group_id="ks", **over_kafka) as outsider,
    ):

        def joined() -> bool:
            member.poll(timeout=0.1)
            return _stable_with(kcluster, "ks", 1)

        wait_for(joined, 60, "the member in the group")
        outsider.assign(partitions)
        with pytest.raises(ConveyorError):
            outsider.commit({("kstore", 0): 1})


def test_a_commit_with_the_epoch_before_a_rejoin_is_fenced(kcluster: Cluster) -> None:
    """OffsetCommit v9 carries the member epoch: after a member rejoined (same member id,
    KIP-1082) in a group that went on (another member keeps it alive), a commit with its
    epoch from before is refused with a fencing error; one with the new epoch is not."""
    from conveyor.client.group import Assignment

    make_topic(kcluster, "kfence", partitions=2)
    settings: dict[str, Any] = {
        "group_id": "kf",
        "bootstrap_servers": kcluster.bootstrap,
        "tls": kafka_tls(kcluster),
        "heartbeat_interval_ms": 200,
    }
    with (
        conveyor.Consumer(topics="kfence", **settings) as consumer,
        conveyor.Consumer(topics="kfence", **settings) as other,
    ):
        core = consumer._core

        def one_each() -> bool:
            consumer.poll(timeout=0.1)
            other.poll(timeout=0.1)
            return len(consumer.assignment()) == len(other.assignment()) == 1

        wait_for(one_each, 60, "a partition each")
        before = core.fetcher.assignment
        membership = core.membership
        assert membership is not None

        async def rejoin() -> None:  # on the consumer's loop, as the heartbeat loop would
            membership.drop_all("test: rejoin")  # epoch 0 again, with the same member id

        consumer._io.run(rejoin())
        wait_for(
            lambda: one_each() and core.fetcher.assignment.generation > before.generation,
            60,
            "the member back in a later epoch",
        )
        after = core.fetcher.assignment
        assert after.member_id == before.member_id
        group = core.group
        assert group is not None
        offsets = {after.partitions[0]: 0}
        stale = Assignment(after.partitions, before.generation, before.member_id)
        with pytest.raises(ConveyorError) as fenced:
            consumer._io.run(group.commit(offsets, stale))
        assert fenced.value.code.name in {"FENCED_MEMBER", "ILLEGAL_GENERATION"}
        consumer._io.run(group.commit(offsets, after))


def test_a_static_consumer_waits_for_its_instance_id_then_takes_its_place(
    kcluster: Cluster,
) -> None:
    """KIP-848's static membership with Conveyor's consumer: a second consumer with the
    instance id of a live one is refused (UNRELEASED_INSTANCE_ID) and keeps asking, the
    holder keeps its partitions; once the holder closes (member epoch -2: its place kept)
    the waiting one takes its place and partitions, with no new generation."""
    make_topic(kcluster, "kstatic", partitions=2)
    settings: dict[str, Any] = {
        "topics": "kstatic",
        "group_id": "kst",
        "group_instance_id": "w-1",
        "bootstrap_servers": kcluster.bootstrap,
        "tls": kafka_tls(kcluster),
        "heartbeat_interval_ms": 200,
    }
    holder = conveyor.Consumer(**settings)
    try:

        def held() -> bool:
            holder.poll(timeout=0.05)
            return len(holder.assignment()) == 2 and _stable_with(kcluster, "kst", 1)

        wait_for(held, 60, "the holder owns both partitions")
        generation = _describe(kcluster, "kst")["generation"]
        waiting = conveyor.Consumer(**settings)
    except BaseException:
        holder.close()
        raise
    with waiting:
        with holder:
            # longer than the group's session (2 s): the live holder is never replaced
            deadline = time.monotonic() + SESSION_TIMEOUT_MS / 1000 * 1.5
            while time.monotonic() < deadline:
                holder.poll(timeout=0.05)
                assert waiting.poll(timeout=0.05) == [] and not waiting.assignment()
            described = _describe(kcluster, "kst")
            assert [m["instance_id"] for m in described["members"]] == ["w-1"]
            assert described["generation"] == generation
        # the holder left with -2: its place waited for the next holder of w-1

        def took_over() -> bool:
            waiting.poll(timeout=0.05)
            return len(waiting.assignment()) == 2

        wait_for(took_over, 30, "the waiting consumer owns both partitions")
        assert _describe(kcluster, "kst")["generation"] == generation
