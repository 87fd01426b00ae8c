"""Coordinator high availability with real processes: three coordinators on a real
3-member etcd, brokers and clients given every coordinator's URL. Each failure is
measured (printed; the numbers in docs/benchmarks.md come from scripts/bench_ha.py) and
every run ends with the "two active coordinators" check over every coordinator's log.

Tests that only stop coordinators share the session's etcd cluster (each under its own
prefix); those that kill etcd members start their own.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

import conveyor
from conveyor.cli.etcd_local import LocalEtcd
from conveyor.client import Consumer, Producer
from conveyor.protocol.errors import ConveyorError, ErrorCode
from tests.ha.conftest import own_etcd
from tests.ha.harness import HaCluster, measure
from tests.integration.cluster import wait_for

TTL_S = 2.0


@pytest.fixture
def ha(tmp_path: Path, shared_etcd: LocalEtcd, prefix: str) -> Iterator[HaCluster]:
    cluster = HaCluster(tmp_path, shared_etcd, prefix, broker_count=3).start()
    try:
        yield cluster
    finally:
        cluster.stop()
    cluster.check_no_two_actives()


def create(cluster: HaCluster, topic: str, partitions: int = 2, urls: str | None = None) -> float:
    """Seconds the creation took."""
    started = time.monotonic()
    with conveyor.Admin(urls or cluster.urls) as admin:
        admin.create_topic(topic, partitions=partitions, replication_factor=3)
    return time.monotonic() - started


def leader_of(cluster: HaCluster, topic: str, partition: int) -> int | None:
    """The leader the active coordinator elected (transport="http": its own view). The
    brokers' Kafka Metadata, which Admin reads by default, names a leader once the
    coordinator has the leader's report, so for a heartbeat after a takeover it names
    none (the reports are soft state the new coordinator has not heard yet)."""
    with conveyor.Admin(cluster.urls, transport="http") as admin:
        leader = admin.describe_topic(topic).partitions[partition].leader
    return None if leader is None else int(leader)


def produce(cluster: HaCluster, topic: str, values: list[str]) -> None:
    with Producer(cluster.urls, acks="all", linger_ms=0) as producer:
        for value in values:
            producer.send(topic, value.encode(), key=value.encode())
        producer.flush(30)


def read_all(cluster: HaCluster, topic: str, expected: int) -> set[str]:
    seen: set[str] = set()
    with Consumer(cluster.urls, topic, auto_offset_reset="earliest") as consumer:
        deadline = time.monotonic() + 30
        while len(seen) < expected and time.monotonic() < deadline:
            seen |= {m.value.decode() for m in consumer.poll(0.5) if m.value is not None}
    return seen


def test_sigkill_of_the_active_coordinator_then_of_a_leader_broker(ha: HaCluster) -> None:
    """A standby takes over within TTL + 1 s; a broker killed right after is failed over
    by the new active coordinator; nothing acknowledged is lost."""
    create(ha, "orders")
    before = [f"a{i}" for i in range(50)]
    produce(ha, "orders", before)
    old = ha.wait_active()
    old_epoch = ha.epoch(old)
    takeover_s = measure(
        ha.coordinators[old].kill,
        lambda: ha.active() not in (None, old),
        10,
        "a standby taking over",
    )
    print(f"takeover after SIGKILL: {takeover_s:.2f} s (lease ttl {TTL_S} s)")
    assert takeover_s <= TTL_S + 1.0
    new = ha.wait_active()
    assert ha.epoch(new) > old_epoch
    victim = leader_of(ha, "orders", 0)
    assert victim is not None
    failover_s = measure(
        ha.brokers[victim].kill,
        lambda: leader_of(ha, "orders", 0) not in (None, victim),
        15,
        "the new coordinator electing a new leader for orders-0",
    )
    print(f"broker failover by the new coordinator: {failover_s:.2f} s (session 3 s)")
    after = [f"b{i}" for i in range(50)]
    produce(ha, "orders", after)
    assert read_all(ha, "orders", 100) >= set(before) | set(after)


@pytest.mark.timeout(180)  # every wait below is bounded; a hang is a bug, reported early
def test_a_paused_active_coordinator_is_fenced_and_comes_back_as_a_standby(
    ha: HaCluster,
) -> None:
    create(ha, "paused")
    old = ha.wait_active()
    old_epoch = ha.epoch(old)
    ha.pause(old)
    try:
        new = ha.wait_active(10, other_than=old)
        new_epoch = ha.epoch(new)
        assert new_epoch > old_epoch
        # while the old one sleeps, the new one decides: a topic, an election on a death.
        # The client tries the paused one first: its kernel accepts the request, nobody
        # answers; the client asks the others and goes to the new active one.
        first = [ha.coordinators[old].url] + [
            c.url for c in ha.coordinators if c.url != ha.coordinators[old].url
        ]
        created_s = create(ha, "during-pause", urls=",".join(first))
        print(f"topic created {created_s:.2f} s with the paused coordinator listed first")
        assert created_s < 15  # the request timeout is 30 s
        # brokers follow the new epoch: they will refuse the old one's commands
        wait_for(
            lambda: all(f"-> {new_epoch}" in b.log_path.read_text() for b in ha.brokers.values()),
            10,
            "every broker on the new epoch",
        )
    finally:
        ha.resume(old)
    wait_for(
        lambda: (
            ha.statuses()[old]
            == {
                "role": "standby",
                "epoch": new_epoch,
                "url": ha.coordinators[old].url,
                "active_url": ha.coordinators[new].url,
                "store": "etcd",
            }
        ),
        10,
        "the resumed coordinator standing by, naming the new active one",
    )
    log = ha.coordinators[old].log_path.read_text()
    assert f"no longer active (epoch {old_epoch})" in log
    events = ha.check_no_two_actives()
    # the old epoch acted no more after the new one was active
    assert not [e for e in events if e.kind == "action" and e.epoch == old_epoch
                and e.time_ms > min(a.time_ms for a in events
                                    if a.kind == "active" and a.epoch == new_epoch)]  # fmt: skip
    with conveyor.Admin(ha.urls) as admin:
        assert {"paused", "during-pause"} <= {t.name for t in admin.list_topics()}


def test_group_members_keep_their_partitions_across_a_takeover(ha: HaCluster) -> None:
    create(ha, "jobs", partitions=4)
    consumers = [
        Consumer(ha.urls, "jobs", group_id="g", heartbeat_interval_ms=200, session_timeout_ms=6000)
        for _ in range(2)
    ]
    lost: list[str] = []
    stop = threading.Event()
    stable: list[set[tuple[str, int]]] = [set(), set()]

    def poll(index: int) -> None:
        while not stop.is_set():
            consumers[index].poll(0.1)
            now = {(tp.topic, tp.partition) for tp in consumers[index].assignment()}
            if stable[index] and not stable[index] <= now:
                lost.append(f"member {index} lost {sorted(stable[index] - now)}")

    try:
        threads = [threading.Thread(target=poll, args=(i,), daemon=True) for i in range(2)]
        for thread in threads:
            thread.start()
        wait_for(lambda: all(len(c.assignment()) == 2 for c in consumers), 20, "a balanced group")
        for index, consumer in enumerate(consumers):
            stable[index] = {(tp.topic, tp.partition) for tp in consumer.assignment()}
        old = ha.wait_active()
        ha.coordinators[old].kill()
        ha.wait_active(10, other_than=old)
        time.sleep(3 * 0.2 + 2)  # heartbeats under the new coordinator, past its recovery
        assert not lost, lost
        assert [{(tp.topic, tp.partition) for tp in c.assignment()} for c in consumers] == stable
    finally:
        stop.set()
        for consumer in consumers:
            consumer.close()


def test_a_full_restart_recovers_everything_from_etcd(ha: HaCluster) -> None:
    create(ha, "kept")
    produce(ha, "kept", [f"v{i}" for i in range(20)])
    with Consumer(ha.urls, "kept", group_id="reader", auto_offset_reset="earliest") as consumer:
        got = 0
        deadline = time.monotonic() + 20
        while got < 20 and time.monotonic() < deadline:
            got += len(consumer.poll(0.5))
        consumer.commit()
    ha.stop()
    for service in [*ha.coordinators, *ha.brokers.values()]:
        service.start()
    # six interpreters starting at once: on a loaded 2-core host their imports alone took
    # 20-30 s (the deadline is for starting, no takeover is measured here)
    ha.wait_active(60)
    for broker in ha.brokers.values():
        broker.wait_ready(60)
    with conveyor.Admin(ha.urls) as admin:
        assert "kept" in {t.name for t in admin.list_topics()}
    offsets = httpx.get(ha.coordinators[ha.wait_active()].url + "/v1/groups/reader/offsets")
    assert sum(o["offset"] for o in offsets.json()["offsets"]) == 20


def test_etcd_leader_loss_and_quorum_loss(tmp_path: Path, prefix: str) -> None:
    """An etcd leader killed: writes stall for an election, then go on. Two of three
    members down: no coordinator may act (the control plane pauses), leaders keep serving
    produce and fetch, and everything resumes when quorum returns."""
    etcd = own_etcd(tmp_path / "etcd")
    cluster = HaCluster(tmp_path, etcd, prefix, broker_count=2)
    try:
        cluster.start()
        with conveyor.Admin(cluster.urls) as admin:
            admin.create_topic("t", partitions=1, replication_factor=2)
        leader = etcd.leader()
        assert leader is not None
        leader.kill()
        started = time.monotonic()
        with conveyor.Admin(cluster.urls) as admin:
            deadline = time.monotonic() + 15
            while True:
                try:
                    admin.create_topic("after-leader-loss", partitions=1, replication_factor=2)
                    break
                except ConveyorError as exc:
                    assert exc.retriable, exc
                    assert time.monotonic() < deadline, exc
                    time.sleep(0.1)
        print(f"etcd leader killed: topic created {time.monotonic() - started:.2f} s later")
        etcd.start_member(leader)
        etcd.wait_healthy()
        # a producer that knows the leaders already keeps producing without any coordinator
        producer = Producer(cluster.urls, acks="all", linger_ms=0)
        producer.send("t", b"before").result(30)
        down = [m for m in etcd.members if m.alive()][:2]
        for member in down:
            member.kill()
        wait_for(lambda: cluster.active() is None, 10, "every coordinator standing down")
        with conveyor.Admin(cluster.urls, timeout_s=5) as admin:
            with pytest.raises(ConveyorError) as refused:
                admin.create_topic("during-quorum-loss", partitions=1)
            assert refused.value.code is ErrorCode.NOT_COORDINATOR and refused.value.retriable
        producer.send("t", b"still-served").result(30)
        producer.close()
        for member in down:
            etcd.start_member(member)
        resumed_s = measure(lambda: None, lambda: cluster.active() is not None, 30, "an active")
        print(f"quorum back: a coordinator active after {resumed_s:.2f} s")
        with conveyor.Admin(cluster.urls) as admin:
            admin.create_topic("after-quorum", partitions=1, replication_factor=2)
        assert {"before", "still-served"} <= read_all(cluster, "t", 2)
    finally:
        cluster.stop()
        etcd.stop()
    cluster.check_no_two_actives()
