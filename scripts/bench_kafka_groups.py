"""Kafka consumer groups through the Kafka listener (issue 17), on a local coordinator and
one broker (real processes on 127.0.0.1), confluent-kafka (librdkafka) members.

Usage: .venv/bin/python scripts/bench_kafka_groups.py [--runs 3] [--count 1000000]
       [--only rebalance|w2] [--out results.json]

1. Rebalance: 4 members (threads, one Consumer each) read 16 partitions under a steady
   load (~2,000 messages/s over every partition); a 5th joins. Reported per protocol
   (classic with librdkafka's default eager assignors, classic cooperative-sticky, and
   KIP-848 ``group.protocol=consumer``): the longest consumption gap of partitions that
   stayed with their owner, and the time from the 5th member's start until each moved
   partition is consumed by its new owner (median and slowest). librdkafka's defaults
   otherwise (heartbeat.interval.ms 3 s for classic; KIP-848 members heartbeat at the
   coordinator's 1 s), the coordinator's defaults (initial rebalance delay 3 s: only the
   group's first rebalance waits it). Same method as scripts/bench_groups.py's
   rebalance for Conveyor's own groups.
2. W2: ``--count`` 100-byte messages over 16 partitions, read by a 4-member
   confluent-kafka consumer group (4 processes, ``subscribe``, auto-commit;
   ``bench/w2_group.py``: the members hold their shares paused until all have one, then
   the window runs from the first message read to the last); beside 4 manual-assign
   confluent-kafka consumers (``conveyor bench consume``, issue 16's W2, with the same 64
   keys and librdkafka's default fetch sizes) in the same round.
   Medians of ``--runs``.
   ``--profile FILE``: one more group round, not counted, with py-spy sampling the broker
   (collapsed stacks, ``--format raw``: one line per stack with its sample count).
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

import w2_group as groups  # noqa: E402 -- bench/w2_group.py: W2's members and timing
from tests.integration.cluster import Cluster  # noqa: E402

PARTITIONS = 16
VALUE = b"x" * 100
# W2's keys: enough that murmur2 puts messages on every one of the 16 partitions (issue 16's
# 8 keys leave some partitions, and so some of the 4 consumers, without any)
KEYS = 64
PROTOCOLS = {
    "classic (range, eager)": {},
    "classic cooperative-sticky": {"partition.assignment.strategy": "cooperative-sticky"},
    "KIP-848 (group.protocol=consumer)": {"group.protocol": "consumer"},
}


def create_topic(cluster: Cluster, name: str) -> None:
    from conveyor.client import Admin

    with Admin(cluster.url) as admin:
        admin.create_topic(name, partitions=PARTITIONS, replication_factor=1)


def consumer_conf(cluster: Cluster, group: str, extra: dict[str, str]) -> dict[str, Any]:
    return {
        "bootstrap.servers": cluster.bootstrap,
        "group.id": group,
        "auto.offset.reset": "latest",
        **extra,
    }


def rebalance(
    cluster: Cluster, topic: str, extra: dict[str, str], run: int
) -> tuple[float, float, float]:
    """(longest gap of unmoved partitions s, median and max time to resume a moved one s)."""
    from confluent_kafka import Consumer

    group = f"rebalance-{run}-{time.time_ns()}"
    seen: dict[int, list[tuple[float, int]]] = {p: [] for p in range(PARTITIONS)}
    assigned: dict[int, set[int]] = {}
    lock = threading.Lock()
    stop = threading.Event()

    def member(index: int) -> None:
        consumer = Consumer(consumer_conf(cluster, group, extra))

        def on_assign(c: Any, parts: list[Any]) -> None:
            with lock:
                assigned.setdefault(index, set()).update(p.partition for p in parts)

        def on_revoke(c: Any, parts: list[Any]) -> None:
            with lock:
                assigned.setdefault(index, set()).difference_update(p.partition for p in parts)

        consumer.subscribe([topic], on_assign=on_assign, on_revoke=on_revoke, on_lost=on_revoke)
        try:
            while not stop.is_set():
                for m in consumer.consume(num_messages=1000, timeout=0.1):
                    partition = m.partition()
                    if m.error() is None and partition is not None:
                        with lock:
                            seen[partition].append((time.monotonic(), index))
        finally:
            consumer.close()

    loading = threading.Event()

    def settled(count: int) -> bool:
        with lock:
            owned = [p for i in range(count) for p in assigned.get(i, ())]
            return len(owned) == PARTITIONS == len(set(owned)) and all(
                assigned.get(i) for i in range(count)
            )

    loader = threading.Thread(target=load, args=(cluster, topic, loading))
    loader.start()
    threads = [threading.Thread(target=member, args=(i,)) for i in range(4)]
    for t in threads:
        t.start()
    _wait(lambda: settled(4), "4 members")
    time.sleep(3)
    joined_at = time.monotonic()
    fifth = threading.Thread(target=member, args=(4,))
    fifth.start()
    _wait(lambda: settled(5), "5 members")
    time.sleep(4)
    stop.set()
    loading.set()
    for t in [*threads, fifth, loader]:
        t.join(60)
    return _gaps(seen, joined_at)


def load(cluster: Cluster, topic: str, done: threading.Event) -> None:
    """About 2,000 messages a second over every partition until ``done``."""
    from confluent_kafka import Producer

    producer = Producer({"bootstrap.servers": cluster.bootstrap, "linger.ms": 5})
    i = 0
    while not done.is_set():
        for _ in range(100):
            producer.produce(topic, VALUE, partition=i % PARTITIONS)
            i += 1
        producer.poll(0)
        time.sleep(0.05)
    producer.flush(10)


def _gaps(seen: dict[int, list[tuple[float, int]]], joined_at: float) -> tuple[float, float, float]:
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
    return max(gaps, default=0.0), statistics.median(resumes), max(resumes)


def _wait(condition: Any, what: str, timeout_s: float = 120) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        if time.monotonic() > deadline:
            raise TimeoutError(what)
        time.sleep(0.05)


def produce(cluster: Cluster, topic: str, count: int) -> None:
    from confluent_kafka import Producer

    producer = Producer(  # murmur2: the partitions `conveyor bench consume` fills too
        {
            "bootstrap.servers": cluster.bootstrap,
            "linger.ms": 20,
            "batch.size": 1_000_000,
            "partitioner": "murmur2_random",
        }
    )
    for i in range(count):
        while True:
            try:
                producer.produce(topic, VALUE, key=b"key-%d" % (i % KEYS))
                break
            except BufferError:
                producer.poll(0.05)
    producer.flush(120)


def w2_group(
    cluster: Cluster, topic: str, count: int, run: int, profile: Path | None = None
) -> float:
    """A 4-member confluent-kafka group reads ``topic`` (``bench/w2_group.py``'s round:
    timed from ``go`` to the last message, the join excluded)."""
    group = f"w2-{run}-{time.time_ns()}"
    spy = None
    broker = cluster.brokers[1].process
    assert broker is not None
    if profile is not None:  # the broker, sampled until the group has read everything
        py_spy = shutil.which("py-spy") or str(Path(sys.executable).parent / "py-spy")
        argv = [py_spy, "record", "--pid", str(broker.pid), "--rate", "100"]
        spy = subprocess.Popen([*argv, "--format", "raw", "--output", str(profile)])
    try:
        result = groups.group_round(
            "confluent-kafka", f"kafka://{cluster.bootstrap}", group, topic, count
        )
    finally:
        if spy is not None:
            spy.send_signal(signal.SIGINT)  # py-spy writes what it sampled and exits
            spy.wait(60)
    return result.msg_per_s


def w2_manual(cluster: Cluster, count: int, run: int) -> float:
    """Issue 16's W2 on the same cluster: ``conveyor bench consume`` fills its own topic
    (untimed) and reads it with 4 manual-assign confluent-kafka consumers."""
    argv = [
        sys.executable, "-m", "conveyor", "bench", "consume", "--bootstrap", cluster.url,
        "--topic", f"w2-manual-{run}", "--count", str(count), "--consumers", "4",
        "--partitions", str(PARTITIONS), "--message-bytes", "100", "--keys", str(KEYS),
        "--client", "confluent-kafka", "--json",
        # librdkafka's defaults, as the group's members run with (the bench's are 4 MiB, 100 ms)
        "--fetch-max-bytes", str(52_428_800), "--fetch-max-wait-ms", "500",
    ]  # fmt: skip
    done = subprocess.run(argv, capture_output=True, text=True, check=True, timeout=3600)
    return float(json.loads(done.stdout)["consume"]["msg_per_s"])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--count", type=int, default=1_000_000)
    parser.add_argument("--only", choices=("rebalance", "w2"))
    parser.add_argument("--out", type=Path)
    parser.add_argument("--profile", type=Path, help="py-spy's raw stacks of the broker (W2)")
    args = parser.parse_args()
    report: dict[str, Any] = {"load_before": os.getloadavg()}
    with tempfile.TemporaryDirectory(prefix="bench-kgroups-") as root:
        cluster = Cluster(Path(root), broker_count=1).start()
        try:
            if args.only in (None, "rebalance"):
                create_topic(cluster, "load")
                for name, extra in PROTOCOLS.items():
                    runs = [rebalance(cluster, "load", extra, r) for r in range(args.runs)]
                    report[name] = runs
                    print(
                        f"{name}: unmoved partitions' longest gap "
                        f"{statistics.median(r[0] for r in runs):.2f} s; moved partitions "
                        f"resume after {statistics.median(r[1] for r in runs):.2f} s (median), "
                        f"{statistics.median(r[2] for r in runs):.2f} s (slowest)  runs {runs}",
                        flush=True,
                    )
            if args.only in (None, "w2"):
                create_topic(cluster, "w2")
                produce(cluster, "w2", args.count)
                group, manual = [], []
                for r in range(args.runs):
                    group.append(w2_group(cluster, "w2", args.count, r))
                    manual.append(w2_manual(cluster, args.count, r))
                report["w2_group"], report["w2_manual"] = group, manual
                if args.profile:  # a round of its own: py-spy slows what it samples
                    profiled = w2_group(cluster, "w2", args.count, args.runs, args.profile)
                    report["w2_group_profiled"] = profiled
                print(
                    f"W2 4-member group: {statistics.median(group):,.0f} msg/s  runs {group}; "
                    f"4 manual-assign: {statistics.median(manual):,.0f} msg/s  runs {manual}",
                    flush=True,
                )
        finally:
            cluster.stop()
    report["load_after"] = os.getloadavg()
    print(f"load average before {report['load_before']}, after {report['load_after']}")
    if args.out:
        args.out.write_text(json.dumps(report, indent=1))


if __name__ == "__main__":
    main()
