"""Consumer-group benchmarks (issue 5), on a local coordinator + 1 broker.

Usage: .venv/bin/python scripts/bench_groups.py [--runs 3] [--messages 100000]
       [--only throughput|rebalance]

1. Throughput: ``--messages`` 100-byte messages over 16 partitions are produced first,
   then a fresh group of 4 members reads them all, committing after every batch: the
   members as 4 threads in one process, then as 4 processes. Rate = messages committed
   (as the coordinator shows them) per second between 10% and 90% of the total, so
   process start-up and joining do not count. Medians of ``--runs``.
2. Rebalance: 4 members (threads) consume 16 partitions under a steady load (~2,000
   messages/s); a 5th joins. Reported: the longest consumption gap of partitions that
   stayed with their owner (target: no pause beyond the usual gap), and the time until
   each moved partition is consumed by its new owner (target: <= 2 heartbeat intervals,
   2 s with the default 1 s interval). Medians of ``--runs``.
"""

from __future__ import annotations

import argparse
import itertools
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from tests.integration.cluster import Cluster

from conveyor.client import Admin, Consumer, Producer

PARTITIONS = 16
VALUE = b"x" * 100


def produce(url: str, topic: str, count: int) -> None:
    with Producer(url, linger_ms=5) as producer:
        for i in range(count):
            producer.send(topic, VALUE, key=f"k{i % 64}")
        producer.flush()


def committed(url: str, group: str) -> int:
    rows = httpx.get(f"{url}/v1/groups/{group}", timeout=10).json().get("partitions", [])
    return sum(r.get("committed_offset", 0) for r in rows)


def consume_until_stopped(url: str, topic: str, group: str, stop: threading.Event) -> None:
    with Consumer(url, topic, group_id=group, enable_auto_commit=False) as consumer:
        while not stop.is_set():
            if consumer.poll(timeout=0.2):
                consumer.commit()


def wait_committed(url: str, group: str, count: int, timeout_s: float = 600) -> float:
    """Wait until ``count`` are committed; the steady rate (msg/s) between 10% and 90%
    committed, so process start-up and the join do not count."""
    deadline = time.monotonic() + timeout_s
    t10 = t90 = None
    while True:
        done = committed(url, group)
        now = time.monotonic()
        if t10 is None and done >= count // 10:
            t10 = now
        if t90 is None and done >= count * 9 // 10:
            t90 = now
        if done >= count:
            break
        if now > deadline:
            raise TimeoutError(f"group {group}: not all {count} committed")
        time.sleep(0.02)
    assert t10 is not None and t90 is not None
    return (count * 8 // 10) / max(t90 - t10, 1e-3)


def throughput_threads(url: str, topic: str, count: int, run: int) -> float:
    group = f"threads-{run}-{time.time_ns()}"
    stop = threading.Event()
    threads = [
        threading.Thread(target=consume_until_stopped, args=(url, topic, group, stop))
        for _ in range(4)
    ]
    for t in threads:
        t.start()
    rate = wait_committed(url, group, count)
    stop.set()
    for t in threads:
        t.join(30)
    return rate


def throughput_processes(url: str, topic: str, count: int, run: int) -> float:
    group = f"procs-{run}-{time.time_ns()}"
    workers = [
        subprocess.Popen([sys.executable, __file__, "--worker", url, topic, group])
        for _ in range(4)
    ]
    try:
        rate = wait_committed(url, group, count)
    finally:
        for w in workers:
            w.terminate()
        for w in workers:
            w.wait(30)
    return rate


def rebalance(url: str, topic: str, run: int) -> tuple[float, float, float]:
    """(longest gap of unmoved partitions s, median and max time to resume a moved one s)."""
    group = f"rebalance-{run}-{time.time_ns()}"
    seen: dict[int, list[tuple[float, int]]] = {p: [] for p in range(PARTITIONS)}  # (t, member)
    lock = threading.Lock()
    stop = threading.Event()

    def member(index: int) -> None:
        with Consumer(url, topic, group_id=group, auto_commit_interval_ms=200) as consumer:
            while not stop.is_set():
                for m in consumer.poll(timeout=0.1):
                    with lock:
                        seen[m.partition].append((time.monotonic(), index))

    producing = threading.Event()

    def load() -> None:
        with Producer(url, linger_ms=5) as producer:
            i = 0
            while not producing.is_set():
                for _ in range(100):
                    producer.send(topic, VALUE, partition=i % PARTITIONS)
                    i += 1
                time.sleep(0.05)

    threads = [threading.Thread(target=member, args=(i,)) for i in range(4)]
    loader = threading.Thread(target=load)
    loader.start()
    for t in threads:
        t.start()
    _wait_stable(url, group, 4)
    time.sleep(3)
    joined_at = time.monotonic()
    fifth = threading.Thread(target=member, args=(4,))
    fifth.start()
    _wait_stable(url, group, 5)
    time.sleep(3)
    stop.set()
    producing.set()
    for t in [*threads, fifth, loader]:
        t.join(30)
    gaps, resumes = [], []
    for events in seen.values():
        before = [m for t, m in events if t < joined_at]
        after = [(t, m) for t, m in events if t >= joined_at]
        if not before or not after:
            continue
        old_owner = before[-1]
        if all(m == old_owner for _, m in after):
            times = [t for t, _ in events if t >= joined_at - 1]
            gaps.append(max(b - a for a, b in itertools.pairwise(times)))
        else:
            first_new = min(t for t, m in after if m != old_owner)
            resumes.append(first_new - joined_at)
    return max(gaps), statistics.median(resumes), max(resumes)


def _wait_stable(url: str, group: str, members: int) -> None:
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        reply: dict[str, Any] = httpx.get(f"{url}/v1/groups/{group}", timeout=10).json()
        if reply.get("state") == "stable" and len(reply.get("members", [])) == members:
            return
        time.sleep(0.05)
    raise TimeoutError(f"group {group} not stable with {members} members")


def worker(url: str, topic: str, group: str) -> None:
    stop = threading.Event()
    import signal

    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    consume_until_stopped(url, topic, group, stop)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--messages", type=int, default=100_000)
    parser.add_argument("--only", choices=("throughput", "rebalance"), default=None)
    parser.add_argument("--worker", nargs=3, metavar=("URL", "TOPIC", "GROUP"))
    args = parser.parse_args()
    if args.worker:
        worker(*args.worker)
        return
    with tempfile.TemporaryDirectory(prefix="bench-groups-") as root:
        cluster = Cluster(Path(root), broker_count=1).start()
        try:
            url = cluster.url
            with Admin(url) as admin:
                admin.create_topic("bench", partitions=PARTITIONS)
                admin.create_topic("load", partitions=PARTITIONS)
            if args.only in (None, "throughput"):
                produce(url, "bench", args.messages)
                one = [throughput_threads(url, "bench", args.messages, r) for r in range(args.runs)]
                four = [
                    throughput_processes(url, "bench", args.messages, r) for r in range(args.runs)
                ]
                print(f"4 members, 1 process : {statistics.median(one):,.0f} msg/s  runs {one}")
                print(f"4 members, 4 processes: {statistics.median(four):,.0f} msg/s  runs {four}")
            if args.only in (None, "rebalance"):
                results = [rebalance(url, "load", r) for r in range(args.runs)]
                gap = statistics.median(r[0] for r in results)
                resume = statistics.median(r[1] for r in results)
                worst = statistics.median(r[2] for r in results)
                print(
                    f"5th member joins: unmoved partitions' longest gap {gap:.2f} s; moved "
                    f"partitions resume after {resume:.2f} s (median), {worst:.2f} s (max)  "
                    f"runs {results}"
                )
        finally:
            cluster.stop()


if __name__ == "__main__":
    main()
