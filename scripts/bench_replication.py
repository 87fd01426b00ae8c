"""Replication benchmarks (issue 4), each against a baseline measured in the same run.

Usage: .venv/bin/python scripts/bench_replication.py [--runs 3] [--messages 300000]
       [--catch-up-mib 1024] [--only throughput|catch-up]

1. Throughput: 100-byte messages over 8 keys from one Python producer on a 3-broker
   cluster, to a topic with RF 3 and acks=all (durable defaults: fsync on every replica
   before the acknowledgement) and to a topic with RF 1 and acks=1, alternating, medians of
   ``--runs``. Target: ratio >= 0.5.
2. Catch-up: a partition of ``--catch-up-mib`` MiB on broker 1 (RF 2, broker 2 stopped and
   its data deleted), then broker 2 started empty; time until its log end equals the
   leader's, against the time to read the leader's segment files (page cache dropped
   first when this process may, else warm, said in the output). Target: <= 2x. Also
   reported: the time until the new replica is back in the ISR (its copy fsynced, the
   leader's AlterIsr applied), and both brokers' CPU time.
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, NamedTuple

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from tests.integration.cluster import Cluster, wait_for

from conveyor.client import Producer
from conveyor.protocol.messages import BATCH_CONTENT_TYPE
from conveyor.protocol.records import BatchBuilder


def create(cluster: Cluster, name: str, partitions: int, rf: int, min_isr: int) -> None:
    body = {
        "name": name,
        "partitions": partitions,
        "replication_factor": rf,
        "config": {"min_insync_replicas": min_isr},
    }
    httpx.post(f"{cluster.url}/v1/topics", json=body, timeout=10).raise_for_status()


def describe(cluster: Cluster, name: str) -> list[dict[str, Any]]:
    reply = httpx.get(f"{cluster.url}/v1/topics/{name}", timeout=10).json()
    return list(reply["partitions"])


def ready(cluster: Cluster, name: str) -> bool:
    return all(
        p["leader"] is not None and sorted(p["isr"]) == sorted(p["replicas"])
        for p in describe(cluster, name)
    )


def produce_rate(cluster: Cluster, topic: str, acks: str, messages: int) -> float:
    value = b"v" * 100
    keys = [f"key-{k}".encode() for k in range(8)]
    with Producer(cluster.url, acks=acks, linger_ms=5) as producer:
        producer.send(topic, value, key=keys[0]).result(timeout=60)  # metadata, producer id
        started = time.perf_counter()
        for n in range(messages):
            producer.send(topic, value, key=keys[n & 7])
        producer.flush()
        return messages / (time.perf_counter() - started)


def throughput(runs: int, messages: int) -> None:
    with tempfile.TemporaryDirectory() as root:
        cluster = Cluster(Path(root), broker_count=3).start()
        try:
            create(cluster, "rf3", 8, 3, 2)
            create(cluster, "rf1", 8, 1, 1)
            wait_for(lambda: ready(cluster, "rf3") and ready(cluster, "rf1"), 30, "topics")
            rf3: list[float] = []
            rf1: list[float] = []
            for run in range(runs):
                rf1.append(produce_rate(cluster, "rf1", "1", messages))
                rf3.append(produce_rate(cluster, "rf3", "all", messages))
                print(
                    f"run {run + 1}: RF1 acks=1 {rf1[-1]:,.0f} msg/s, "
                    f"RF3 acks=all {rf3[-1]:,.0f} msg/s, ratio {rf3[-1] / rf1[-1]:.2f}"
                )
            m1, m3 = statistics.median(rf1), statistics.median(rf3)
            verdict = "PASS" if m3 / m1 >= 0.5 else "FAIL"
            print(
                f"median of {runs}: RF1 acks=1 {m1:,.0f} msg/s, RF3 acks=all {m3:,.0f} msg/s, "
                f"ratio {m3 / m1:.2f} (target >= 0.5: {verdict})"
            )
        finally:
            cluster.stop()


def fill(url: str, topic: str, mib: int) -> None:
    builder = BatchBuilder()
    for n in range(1024):
        builder.append(b"x" * 1000, key=f"{n}".encode())
    batch = builder.build()  # about 1 MiB
    offsets = f"{url}/v1/topics/{topic}/partitions/0/offsets"
    wait_for(lambda: httpx.get(offsets, timeout=10).status_code == 200, 30, "leader serving")
    with httpx.Client(timeout=60) as client:
        for _ in range(mib):
            reply = client.post(
                f"{url}/v1/topics/{topic}/partitions/0/records",
                params={"acks": "1"},
                content=batch,
                headers={"Content-Type": BATCH_CONTENT_TYPE},
            )
            reply.raise_for_status()


def drop_caches() -> bool:
    try:
        os.sync()
        Path("/proc/sys/vm/drop_caches").write_text("3\n")
        return True
    except OSError:
        return False


def read_files(directory: Path) -> tuple[float, int]:
    started = time.perf_counter()
    total = 0
    for path in sorted(directory.glob("*.log")):
        with path.open("rb", buffering=0) as f:
            while chunk := f.read(8 << 20):
                total += len(chunk)
    return time.perf_counter() - started, total


# One keep-alive connection for the catch-up's polls (every 50 ms): a new connection per
# poll cost the measured follower a CPU share of its own.
_POLLS = httpx.Client(timeout=10)


def end_offset(cluster: Cluster, broker: int, topic: str) -> int:
    reply = _POLLS.get(f"{cluster.brokers[broker].url}/v1/partitions").json()
    for p in reply["partitions"]:
        if p["topic"] == topic:
            return int(p["log_end_offset"])
    return -1


def cpu_s(pid: int) -> float:
    """CPU seconds (user + system) a process has used, from /proc."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


class CatchUp(NamedTuple):
    size_bytes: int
    read_s: float  # reading the leader's segment files
    total_s: float  # from the new broker's start until caught up
    copy_s: float  # from its first replicated byte until caught up
    isr_s: float  # from the new broker's start until it is in the ISR again
    cold: bool
    leader_cpu_s: float
    follower_cpu_s: float  # from its first replicated byte (its start-up not counted)


def catch_up_once(mib: int) -> CatchUp:
    with tempfile.TemporaryDirectory() as root:
        cluster = Cluster(
            Path(root), broker_count=2, coordinator_args=["--replica-restore-delay-ms", "600000"]
        ).start()
        try:
            create(cluster, "big", 1, 2, 1)
            wait_for(lambda: ready(cluster, "big"), 30, "topic")
            leader = describe(cluster, "big")[0]["leader"]
            follower = 2 if leader == 1 else 1
            cluster.brokers[follower].stop()
            fill(cluster.brokers[leader].url, "big", mib)
            target = end_offset(cluster, leader, "big")
            shutil.rmtree(cluster.brokers[follower].data_dir)
            cold = drop_caches()
            read_s, size = read_files(cluster.brokers[leader].data_dir / "big-0")
            if cold:
                drop_caches()
            leader_pid = _pid(cluster, leader)
            leader_cpu = cpu_s(leader_pid)
            started = time.perf_counter()
            cluster.add_broker(follower, wait=False)
            wait_for(lambda: _safe_end(cluster, follower) > 0, 600, "first bytes", interval_s=0.01)
            first_s = time.perf_counter()
            follower_cpu = cpu_s(_pid(cluster, follower))
            wait_for(lambda: _safe_end(cluster, follower) >= target, 600, "caught up")
            done = time.perf_counter()
            follower_cpu = cpu_s(_pid(cluster, follower)) - follower_cpu
            leader_cpu = cpu_s(leader_pid) - leader_cpu
            wait_for(lambda: follower in describe(cluster, "big")[0]["isr"], 600, "in the ISR")
            in_isr = time.perf_counter()
            return CatchUp(
                size,
                read_s,
                done - started,
                done - first_s,
                in_isr - started,
                cold,
                leader_cpu,
                follower_cpu,
            )
        finally:
            cluster.stop()


def _pid(cluster: Cluster, broker: int) -> int:
    process = cluster.brokers[broker].process
    assert process is not None
    return process.pid


def catch_up(runs: int, mib: int) -> None:
    ratios: list[float] = []
    copy_ratios: list[float] = []
    isr_ratios: list[float] = []
    follower_cpu: list[float] = []
    for run in range(runs):
        r = catch_up_once(mib)
        ratios.append(r.total_s / r.read_s)
        copy_ratios.append(r.copy_s / r.read_s)
        isr_ratios.append(r.isr_s / r.read_s)
        follower_cpu.append(r.follower_cpu_s * 2**30 / r.size_bytes)
        cache = "cold" if r.cold else "warm (cannot drop caches)"
        mib_s = r.size_bytes / 2**20
        print(
            f"run {run + 1}: {mib_s:,.0f} MiB; read from disk ({cache} cache) "
            f"{r.read_s:.2f} s ({mib_s / r.read_s:,.0f} MiB/s); new replica caught up "
            f"in {r.total_s:.2f} s from its start ({mib_s / r.total_s:,.0f} MiB/s), "
            f"{r.copy_s:.2f} s from its first byte; ratio {ratios[-1]:.2f} "
            f"(copy only {copy_ratios[-1]:.2f}); CPU: leader {r.leader_cpu_s:.2f} s, "
            f"follower {r.follower_cpu_s:.2f} s (from its first byte); back in the ISR "
            f"after {r.isr_s:.2f} s (ratio {isr_ratios[-1]:.2f})"
        )
    median = statistics.median(ratios)
    verdict = "PASS" if median <= 2 else "FAIL"
    print(
        f"median of {runs}: catch-up / disk read = {median:.2f} (target <= 2: {verdict}); "
        f"copy phase only {statistics.median(copy_ratios):.2f}; back in the ISR "
        f"{statistics.median(isr_ratios):.2f}; follower CPU "
        f"{statistics.median(follower_cpu):.2f} s/GiB"
    )


def _safe_end(cluster: Cluster, broker: int) -> int:
    try:
        return end_offset(cluster, broker, "big")
    except httpx.HTTPError:
        return -1


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--messages", type=int, default=300_000)
    parser.add_argument("--catch-up-mib", type=int, default=1024)
    parser.add_argument("--only", choices=("throughput", "catch-up"))
    args = parser.parse_args()
    if args.only in (None, "throughput"):
        throughput(args.runs, args.messages)
    if args.only in (None, "catch-up"):
        catch_up(args.runs, args.catch_up_mib)


if __name__ == "__main__":
    main()
