"""Failover, decommission, rebalancing and coordinator restarts with real processes.

The control-plane assertions (a new leader from the ISR with a higher epoch, ISR shrink,
drains, durable coordinator state) hold on their own. The no-loss assertions need the data
plane's replication (followers fetching, AlterIsr from leaders): where a step can only
complete with it (a restarted broker rejoining the ISR, a new replica joining it), the
test waits for it and skips with a clear reason when replication is demonstrably absent.
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from conveyor.chaos import diskfault
from conveyor.chaos.nemesis import fill_disk, mount_tmpfs, unmount
from conveyor.client import Consumer, Producer
from conveyor.protocol.errors import ConveyorError, ErrorCode
from tests.integration.cluster import Cluster, wait_for
from tests.integration.load import BackgroundLoad

SESSION_MS = 2000
COORDINATOR_ARGS = [
    "--session-timeout-ms",
    str(SESSION_MS),
    "--replica-restore-delay-ms",
    "4000",
    "--max-concurrent-moves",
    "4",
]
RECOVERY_S = SESSION_MS / 1000 + 10
REPLICATION_WAIT_S = 20.0
NO_REPLICATION = (
    "data-plane replication is not in place: a follower never rejoined the ISR "
    "(no AlterIsr from leaders), so this step cannot complete"
)


@pytest.fixture
def cluster3(tmp_path: Path) -> Iterator[Cluster]:
    c = Cluster(tmp_path, broker_count=3, coordinator_args=COORDINATOR_ARGS).start()
    try:
        yield c
    finally:
        c.stop()


def describe(cluster: Cluster, topic: str) -> list[dict[str, Any]]:
    reply = httpx.get(f"{cluster.url}/v1/topics/{topic}", timeout=5)
    reply.raise_for_status()
    partitions: list[dict[str, Any]] = reply.json()["partitions"]
    return partitions


def create(cluster: Cluster, topic: str, partitions: int, rf: int = 3, min_isr: int = 2) -> None:
    body = {
        "name": topic,
        "partitions": partitions,
        "replication_factor": rf,
        "config": {"min_insync_replicas": min_isr},
    }
    httpx.post(f"{cluster.url}/v1/topics", json=body, timeout=5).raise_for_status()


def isr_full(cluster: Cluster, topic: str) -> bool:
    return all(sorted(p["isr"]) == sorted(p["replicas"]) for p in describe(cluster, topic))


def wait_isr_full(cluster: Cluster, topic: str) -> None:
    wait_for(lambda: isr_full(cluster, topic), REPLICATION_WAIT_S, "ISR full again")


def test_killing_each_leader_elects_an_in_sync_replica_with_a_higher_epoch(
    cluster3: Cluster,
) -> None:
    create(cluster3, "orders", partitions=3)
    load = BackgroundLoad(cluster3, "orders").__enter__()
    wait_for(lambda: load.count() >= 100, 30, "first acknowledged writes")
    for index in range(3):
        before = describe(cluster3, "orders")[index]
        leader = before["leader"]
        assert isinstance(leader, int)
        cluster3.brokers[leader].kill()  # SIGKILL

        def moved(index: int = index, leader: int = leader) -> bool:
            now = describe(cluster3, "orders")[index]
            return now["leader"] not in (None, leader) and leader not in now["isr"]

        wait_for(moved, RECOVERY_S, f"partition {index} failover from broker {leader}")
        after = describe(cluster3, "orders")[index]
        assert after["leader"] in before["isr"]
        assert after["leader_epoch"] > before["leader_epoch"]
        assert after.get("partition_epoch", 0) > before.get("partition_epoch", 0)
        status = httpx.get(f"{cluster3.url}/v1/cluster", timeout=5).json()
        assert status["under_replicated_partitions"] >= 1
        cluster3.add_broker(leader)  # the same id and data directory, restarted
        # it comes back as a follower; the leader re-adds it once it has caught up
        wait_isr_full(cluster3, "orders")
        count = load.count()
        wait_for(lambda count=count: load.count() > count + 100, 30, "writes go on")
    # Preferred-leader election spreads leadership back to each partition's first replica.
    wait_for(
        lambda: all(p["leader"] == p["replicas"][0] for p in describe(cluster3, "orders")),
        RECOVERY_S,
        "preferred leaders back",
    )
    load.stop()
    load.check(partitions=3)


def test_no_acknowledged_loss_across_leader_failovers(cluster3: Cluster) -> None:
    create(cluster3, "ledger", partitions=3)
    acked: list[bytes] = []
    failures: list[BaseException] = []
    stop = threading.Event()

    def produce() -> None:
        with Producer(cluster3.url, acks="all", delivery_timeout_ms=60_000) as producer:
            n = 0
            while not stop.is_set():
                value = f"m-{n}".encode()
                future = producer.send("ledger", value, key=f"k{n % 16}".encode())
                try:
                    future.result(timeout=60)
                    acked.append(value)
                except Exception as exc:  # an unacknowledged write may be lost, not counted
                    failures.append(exc)
                n += 1

    thread = threading.Thread(target=produce, daemon=True)
    thread.start()
    wait_for(lambda: len(acked) >= 200, 30, "first acknowledged writes")
    leader = describe(cluster3, "ledger")[0]["leader"]
    assert isinstance(leader, int)
    cluster3.brokers[leader].kill()
    count = len(acked)
    wait_for(lambda: len(acked) > count + 200, RECOVERY_S + 10, "writes acknowledged again")
    stop.set()
    thread.join(90)
    cluster3.add_broker(leader)
    wait_isr_full(cluster3, "ledger")
    seen = consume_all(cluster3, "ledger", len(acked))
    missing = set(acked) - seen
    assert not missing, f"{len(missing)} acknowledged messages lost, e.g. {sorted(missing)[:5]}"


def consume_all(cluster: Cluster, topic: str, at_least: int) -> set[bytes]:
    seen: set[bytes] = set()
    with Consumer(cluster.url, topics=topic) as consumer:
        deadline = time.monotonic() + 60
        while len(seen) < at_least and time.monotonic() < deadline:
            for message in consumer.poll(timeout=1.0):
                if message.value is not None:
                    seen.add(message.value)
    return seen


def test_decommission_drains_a_broker(tmp_path: Path) -> None:
    cluster = Cluster(tmp_path, broker_count=4, coordinator_args=COORDINATOR_ARGS).start()
    try:
        create(cluster, "drain", partitions=4)
        load = BackgroundLoad(cluster, "drain").__enter__()
        wait_for(lambda: load.count() >= 100, 30, "first acknowledged writes")
        reply = httpx.post(f"{cluster.url}/v1/brokers/4/decommission", timeout=5).json()
        assert reply["decommissioning"] is True

        def drained() -> bool:
            status = httpx.get(f"{cluster.url}/v1/brokers/4/decommission", timeout=5).json()
            return bool(status["done"])

        wait_for(drained, REPLICATION_WAIT_S, "broker 4 drained")
        for p in describe(cluster, "drain"):
            assert 4 not in p["replicas"]
            assert len(p["isr"]) == 3
        load.stop()
        load.check(partitions=4)
        hosted = httpx.get(f"{cluster.brokers[4].url}/v1/partitions", timeout=5).json()
        wait_for(
            lambda: (
                not httpx.get(f"{cluster.brokers[4].url}/v1/partitions", timeout=5).json()[
                    "partitions"
                ]
            ),
            15,
            f"broker 4 holding nothing (it holds {hosted})",
        )
    finally:
        cluster.stop()


def test_a_fourth_broker_gets_a_fair_share(cluster3: Cluster) -> None:
    create(cluster3, "grow", partitions=8)
    load = BackgroundLoad(cluster3, "grow").__enter__()
    wait_for(lambda: load.count() >= 100, 30, "first acknowledged writes")
    cluster3.add_broker(4)

    def fair() -> bool:
        brokers = httpx.get(f"{cluster3.url}/v1/cluster", timeout=5).json()["brokers"]
        counts = [b.get("replica_count", 0) for b in brokers]
        return len(counts) == 4 and max(counts) - min(counts) <= 1

    def settled() -> bool:
        moves_done = all(len(p["replicas"]) == 3 for p in describe(cluster3, "grow"))
        return moves_done and fair() and isr_full(cluster3, "grow")

    wait_for(settled, REPLICATION_WAIT_S, "replicas rebalanced onto broker 4, ISR full")
    for p in describe(cluster3, "grow"):
        assert len(p["replicas"]) == 3
    load.stop()
    load.check(partitions=8)


def test_coordinator_sigkill_and_restart_keeps_its_view(cluster3: Cluster) -> None:
    create(cluster3, "steady", partitions=3, rf=1, min_isr=1)
    # every leader has opened its partition (it reports it): a broker that has not heard of
    # a partition before the coordinator goes down cannot serve it until it is back
    wait_for(
        lambda: all(p.get("high_watermark") is not None for p in describe(cluster3, "steady")),
        15,
        "every partition served",
    )
    before = describe(cluster3, "steady")
    producer_id = httpx.post(f"{cluster3.url}/v1/producers/init", json={}, timeout=5).json()
    assert cluster3.coordinator is not None
    with Producer(cluster3.url, acks="all") as producer:
        producer.send("steady", b"before").result(timeout=30)
        cluster3.coordinator.kill()  # SIGKILL
        # brokers keep serving: writes to known leaders go on while the coordinator is down
        for n in range(50):
            producer.send("steady", f"during-{n}".encode()).result(timeout=30)
        cluster3.coordinator.start()
        cluster3.coordinator.wait_ready()
        producer.send("steady", b"after").result(timeout=30)
    after = describe(cluster3, "steady")
    strip = ("log_start_offset", "log_end_offset", "high_watermark")
    assert [{k: v for k, v in p.items() if k not in strip} for p in after] == [
        {k: v for k, v in p.items() if k not in strip} for p in before
    ]
    again = httpx.post(f"{cluster3.url}/v1/producers/init", json={}, timeout=5).json()
    # the counter is durable: never an id handed out before the restart (the idempotent
    # producer above took one too)
    assert again["producer_id"] == producer_id["producer_id"] + 2
    seen = consume_all(cluster3, "steady", 52)
    assert {b"before", b"after", *(f"during-{n}".encode() for n in range(50))} <= seen


def test_a_dead_brokers_replicas_are_restored_elsewhere(tmp_path: Path) -> None:
    cluster = Cluster(tmp_path, broker_count=4, coordinator_args=COORDINATOR_ARGS).start()
    try:
        create(cluster, "restore", partitions=4)
        wait_isr_full(cluster, "restore")
        load = BackgroundLoad(cluster, "restore").__enter__()
        wait_for(lambda: load.count() >= 100, 30, "first acknowledged writes")
        cluster.brokers[1].kill()  # never comes back

        def restored() -> bool:
            partitions = describe(cluster, "restore")
            return all(
                1 not in p["replicas"] and len(p["replicas"]) == 3 and len(p["isr"]) == 3
                for p in partitions
            )

        # session timeout + restore delay (4 s) + copying
        wait_for(restored, RECOVERY_S + 20, "replica count restored on live brokers")
        load.stop()
        load.check(partitions=4)
    finally:
        cluster.stop()


@pytest.fixture
def small_disk_cluster(tmp_path: Path) -> Iterator[Cluster]:
    """3 brokers, broker 1's data on a small tmpfs (root only: the ``disk-full`` fault's
    ``fill_disk`` fills it), topic ``full`` (3 partitions, RF 3) in sync."""
    if os.geteuid() != 0:
        pytest.skip("mounting a tmpfs for one broker needs root")
    data = tmp_path / "broker-1"
    if not mount_tmpfs(data):
        pytest.skip("mount -t tmpfs failed")
    cluster = Cluster(tmp_path, broker_count=3, coordinator_args=COORDINATOR_ARGS)
    try:
        cluster.start()
        create(cluster, "full", partitions=3)
        wait_isr_full(cluster, "full")
        yield cluster
    finally:
        cluster.stop()
        unmount(data)


def test_a_leader_whose_disk_fills_hands_over_and_rejoins_once_space_returns(
    small_disk_cluster: Cluster,
) -> None:
    """Kafka takes a log directory offline on an I/O error and moves its leaders; a
    Conveyor broker reports the replica's log failed and the coordinator does the same, so
    the partition keeps taking acks=all writes on its other in-sync replicas."""
    cluster = small_disk_cluster
    index = next(p["partition"] for p in describe(cluster, "full") if p["leader"] == 1)
    acknowledged: list[bytes] = []
    with Producer(cluster.url, linger_ms=0) as producer:
        for i in range(20):
            value = f"before-{i}".encode()
            producer.send("full", value, partition=index).result(10)
            acknowledged.append(value)
    with Producer(cluster.url, linger_ms=0, retries=0) as producer:
        heal = fill_disk(cluster.brokers[1].data_dir)
        refused = 0
        for _ in range(64):  # a partly used page may still take a small write or two
            try:
                producer.send("full", b"x" * 65536, partition=index).result(10)
            except ConveyorError as exc:
                # Kafka has no DISK_FULL: it arrives as its sibling KAFKA_STORAGE_ERROR
                # (docs/client.md, "Transport"), with the same retriability
                assert exc.code in (ErrorCode.DISK_FULL, ErrorCode.STORAGE_ERROR), exc
                assert "no space" in exc.message, exc
                refused += 1
                break
        assert refused, "broker 1's disk never refused a write"

        def handed_over() -> bool:
            p = describe(cluster, "full")[index]
            return p["leader"] in (2, 3) and 1 not in p["isr"]

        wait_for(handed_over, RECOVERY_S, "leadership to move off the full disk")
    with Producer(cluster.url, linger_ms=0) as producer:  # finds the new leader
        for i in range(20):
            value = f"after-{i}".encode()
            producer.send("full", value, partition=index).result(10)  # acks=all on 2 and 3
            acknowledged.append(value)
    heal()
    wait_isr_full(cluster, "full")  # broker 1 caught up and is back in the ISR
    read: list[bytes] = []

    def all_acknowledged_there() -> bool:
        # the preferred leader (broker 1) may take the partition back meanwhile
        leader = describe(cluster, "full")[index]["leader_url"]
        reply = httpx.get(f"{leader}/v1/topics/full/partitions/{index}/records?offset=0", timeout=5)
        if reply.status_code != 200:
            return False
        read[:] = [r["value"].encode() for r in reply.json()["records"]]
        return [v for v in read if not v.startswith(b"x")] == acknowledged

    wait_for(all_acknowledged_there, RECOVERY_S, f"the acknowledged values, read {read}")


def test_a_broker_restarted_on_a_full_disk_registers_and_opens_its_replicas_once_space_returns(
    small_disk_cluster: Cluster,
) -> None:
    """Found by a 240 s chaos campaign (seed 37): a broker killed, then started again while
    its disk was full, rebuilds its segments' indexes as it reopens its logs; the raw
    ENOSPC ended its start (its heartbeat task died), so it never registered, not even
    once space was back. Now the partitions it cannot open are skipped (DISK_FULL), it
    registers, and the coordinator's next answers open them once there is room."""
    cluster = small_disk_cluster
    acknowledged: set[bytes] = set()
    with Producer(cluster.url, linger_ms=0) as producer:
        for i in range(30):
            value = f"before-{i}".encode()
            producer.send("full", value, partition=i % 3).result(10)
            acknowledged.add(value)
    broker = cluster.brokers[1]
    broker.kill()  # no clean shutdown: the next start rescans and rewrites indexes
    # The active segments' preallocated tails (zeros) would be cut by that rescan, freeing
    # room for the indexes: cut them first, so that the start meets a disk with no room
    # at all (as a broker on a file system without fallocate would).
    for log_file in broker.data_dir.glob("*/*.log"):
        os.truncate(log_file, diskfault.data_end(log_file.read_bytes()))
    heal = fill_disk(broker.data_dir)
    broker.start()
    broker.wait_ready(RECOVERY_S)  # registered, with what it could open
    assert "no space to open" in broker.log_path.read_text(errors="replace")
    heal()
    wait_isr_full(cluster, "full")  # its replicas opened, caught up, back in the ISR
    assert consume_all(cluster, "full", len(acknowledged)) >= acknowledged
