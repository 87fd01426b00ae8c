"""W2 with Conveyor's own consumer group over its two transports, in one run (issue 19):
``--count`` x 100 B over 16 partitions (64 keys, so every partition has messages),
produced once, then read from the start by 4 consumer processes subscribed in one group,
over HTTP (heartbeats and commits to the coordinator, fetches to the leader) and over the
brokers' Kafka listeners (``bootstrap_servers`` only: ConsumerGroupHeartbeat,
OffsetCommit, Fetch), alternately, a new group each round.

Each round's window starts once all 4 members are in the group with their share (they
pause what they are given until then, so the join and the cooperative hand-over are not
timed) and ends at the last message consumed; auto-commit as the defaults. Reported:
msg/s, the members' CPU per message (user+sys of the 4 processes over the window), the
broker's and the coordinator's CPU per message over the window (``/proc``), and the load
average. Medians of ``--runs``.

    nice -n 10 .venv/bin/python scripts/bench_group_consume.py [--count 1000000] [--runs 3]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import conveyor

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from tests.integration.cluster import Cluster  # noqa: E402

TOPIC = "w2-group"
PARTITIONS = 16
MEMBERS = 4
KEYS = 64

# One member: joins, pauses what it is given until "go" on stdin, then reads; a JSON line
# on stdout when its share is settled, then {"n", "last", "cpu"} every 0.2 s.
MEMBER = r"""
import json, sys, threading, time
import conveyor
where, group, topic = sys.argv[1:4]
kafka = where.startswith("kafka://")
go = threading.Event()
consumer = conveyor.Consumer(
    None if kafka else where, topic, group_id=group,
    bootstrap_servers=where.removeprefix("kafka://") if kafka else None,
    max_poll_records=10_000, fetch_max_bytes=4 * 1024 * 1024, fetch_max_wait_ms=100,
    on_assign=lambda parts: None if go.is_set() else consumer.pause(parts),
)
threading.Thread(target=lambda: (sys.stdin.readline(), go.set()), daemon=True).start()
said = False
while not go.is_set():
    consumer.poll(timeout=0.1)
    if not said and consumer.assignment_settled() and consumer.assignment():
        print(json.dumps({"settled": len(consumer.assignment())}), flush=True)
        said = True
consumer.resume(consumer.assignment())
cpu0 = time.process_time()
n, last, next_report = 0, 0.0, 0.0
while True:
    got = len(consumer.poll(timeout=0.2))
    now = time.time()
    if got:
        n, last = n + got, now
    if now >= next_report:
        print(json.dumps({"n": n, "last": last, "cpu": time.process_time() - cpu0}), flush=True)
        next_report = now + 0.2
"""


def produce(cluster: Cluster, count: int) -> None:
    with conveyor.Admin(cluster.url) as admin:
        admin.create_topic(TOPIC, partitions=PARTITIONS)
    with conveyor.Producer(cluster.url, linger_ms=5) as producer:
        value = b"x" * 100
        keys = [b"key-%d" % k for k in range(KEYS)]
        for start in range(0, count, 10_000):
            size = min(10_000, count - start)
            producer.send_many(TOPIC, [value] * size, keys=[keys[i % KEYS] for i in range(size)])
        producer.flush()


class Member:
    def __init__(self, where: str, group: str) -> None:
        self.process = subprocess.Popen(
            [sys.executable, "-c", MEMBER, where, group, TOPIC],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        self.settled = threading.Event()
        self.latest: dict[str, Any] = {"n": 0, "last": 0.0, "cpu": 0.0}
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        assert self.process.stdout is not None
        for line in self.process.stdout:
            report = json.loads(line)
            if "settled" in report:
                self.settled.set()
            else:
                self.latest = report

    def go(self) -> None:
        assert self.process.stdin is not None
        self.process.stdin.write("go\n")
        self.process.stdin.flush()

    def stop(self) -> None:
        self.process.kill()
        self.process.wait(10)


def cpu_s(pid: int) -> float:
    """User + system CPU seconds of process ``pid`` so far (Linux ``/proc``)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def wait(condition: Any, what: str, timeout_s: float = 120) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        if time.monotonic() > deadline:
            raise SystemExit(f"timed out waiting for {what}")
        time.sleep(0.05)


def one_round(where: str, group: str, count: int, servers: list[int]) -> tuple[float, ...]:
    """(msg/s, members' CPU us per message, then each of ``servers``' CPU us per message)
    of one group reading ``count`` from the start."""
    members = [Member(where, group) for _ in range(MEMBERS)]
    try:
        wait(lambda: all(m.settled.is_set() for m in members), "4 settled members")
        server_cpu = [cpu_s(pid) for pid in servers]
        started = time.time()
        for m in members:
            m.go()
        wait(lambda: sum(m.latest["n"] for m in members) >= count, f"{count} consumed", 600)
        server_cpu = [cpu_s(pid) - before for pid, before in zip(servers, server_cpu, strict=True)]
        time.sleep(0.3)  # one more report each, for the CPU figure
        last = max(m.latest["last"] for m in members)
        members_cpu_s = sum(m.latest["cpu"] for m in members)
        consumed = sum(m.latest["n"] for m in members)
    finally:
        for m in members:
            m.stop()
    per_message = [c / consumed * 1e6 for c in (members_cpu_s, *server_cpu)]
    return (consumed / (last - started), *per_message)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--count", type=int, default=1_000_000)
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as root:
        cluster = Cluster(Path(root), broker_count=1).start()
        try:
            produce(cluster, args.count)
            results: dict[str, list[tuple[float, ...]]] = {"http": [], "kafka": []}
            where = {"http": cluster.url, "kafka": f"kafka://{cluster.bootstrap}"}
            servers = [
                service.process.pid
                for service in (cluster.brokers[1], cluster.coordinator)
                if service is not None and service.process is not None
            ]
            for index in range(args.runs):
                for transport in ("http", "kafka"):
                    before = os.getloadavg()[0]
                    group = f"w2-{transport}-{index}"
                    row = one_round(where[transport], group, args.count, servers)
                    results[transport].append(row)
                    rate, members_us, broker_us, coordinator_us = row
                    print(
                        f"round {index + 1} {transport:5}: {rate:>10,.0f} msg/s, CPU us/msg: "
                        f"members {members_us:.2f}, broker {broker_us:.2f}, coordinator "
                        f"{coordinator_us:.3f} (load {before:.1f} -> {os.getloadavg()[0]:.1f})",
                        flush=True,
                    )
        finally:
            cluster.stop()
    medians = {}
    for transport, rows in results.items():
        medians[transport] = statistics.median(r[0] for r in rows)
        cpu = [statistics.median(r[i] for r in rows) for i in (1, 2, 3)]
        print(
            f"median {transport:5}: {medians[transport]:>10,.0f} msg/s "
            f"({' / '.join(f'{r[0]:,.0f}' for r in rows)}), CPU us/msg: members {cpu[0]:.2f}, "
            f"broker {cpu[1]:.2f}, coordinator {cpu[2]:.3f}"
        )
    print(f"kafka / http: {medians['kafka'] / medians['http']:.2f}x")


if __name__ == "__main__":
    main()
