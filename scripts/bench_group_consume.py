"""W2 with Conveyor's own consumer group over its two transports, in one run (issue 19):
``--count`` x 100 B over 16 partitions (64 keys, so every partition has messages),
produced once, then read from the start by 4 consumer processes subscribed in one group,
over HTTP (heartbeats and commits to the coordinator, fetches to the leader) and over the
brokers' Kafka listeners (``bootstrap_servers`` only: ConsumerGroupHeartbeat,
OffsetCommit, Fetch), alternately, a new group each round.

Each round's members pause what they are given until all 4 are in the group with their
share (so the join and the cooperative hand-over are not timed); the window runs from the
first message read (``bench/w2_group.py``) to the last; auto-commit as the defaults. Reported:
msg/s, the members' CPU per message (user+sys of the 4 processes over the window), the
broker's and the coordinator's CPU per message over the window (``/proc``), and the load
average. Medians of ``--runs``.

    nice -n 10 .venv/bin/python scripts/bench_group_consume.py [--count 1000000] [--runs 3]
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
from pathlib import Path

import conveyor

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

import w2_group  # noqa: E402 -- bench/w2_group.py: the members and the round's timing
from tests.integration.cluster import Cluster  # noqa: E402

TOPIC = "w2-group"
PARTITIONS = w2_group.PARTITIONS
KEYS = w2_group.KEYS


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


def one_round(where: str, group: str, count: int, servers: list[int]) -> tuple[float, ...]:
    """(msg/s, members' CPU us per message, then each of ``servers``' CPU us per message)
    of one group reading ``count`` from the start (``bench/w2_group.py``'s round)."""
    result = w2_group.group_round("conveyor", where, group, TOPIC, count, servers)
    return (result.msg_per_s, result.members_cpu_us_per_msg, *result.servers_cpu_us_per_msg)


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
