"""Reading with Conveyor's consumer over its two transports in one run (issue 19, slice (c)):
N x 100 B over 8 keys and 8 partitions produced once, then read from the start by a
``Consumer`` without a group, over HTTP and over the brokers' Kafka listeners
(``transport="kafka"``) alternately; medians of --runs, client CPU per message, load.

    nice -n 10 .venv/bin/python scripts/bench_transport_consume.py [--count 500000] [--runs 3]
"""

from __future__ import annotations

import argparse
import os
import statistics
import time

import conveyor
from conveyor.bench.local import LocalCluster

TOPIC = "bench-consume"


def read_all(url: str, transport: str, count: int) -> tuple[float, float]:
    """(msg/s, client CPU us per message) of reading ``count`` records from the start."""
    with conveyor.Consumer(url, TOPIC, transport=transport, max_poll_records=10_000) as consumer:
        cpu = time.process_time()
        began = time.perf_counter()
        seen = 0
        while seen < count:
            seen += len(consumer.poll(timeout=1.0))
        elapsed = time.perf_counter() - began
        cpu = time.process_time() - cpu
    return count / elapsed, cpu / count * 1e6


def load() -> str:
    return f"{os.getloadavg()[0]:.1f}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--count", type=int, default=500_000)
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args()
    with LocalCluster(1) as cluster:
        with conveyor.Admin(cluster.url) as admin:
            admin.create_topic(TOPIC, partitions=8, replication_factor=1)
        with conveyor.Producer(cluster.url) as producer:
            value = b"x" * 100
            for n in range(args.count):
                producer.send(TOPIC, value, key=b"key-%d" % (n % 8))
            producer.flush()
        rates: dict[str, list[float]] = {"http": [], "kafka": []}
        cpus: dict[str, list[float]] = {"http": [], "kafka": []}
        for round_index in range(args.runs):
            for transport in ("http", "kafka"):
                before = load()
                rate, cpu = read_all(cluster.url, transport, args.count)
                rates[transport].append(rate)
                cpus[transport].append(cpu)
                print(
                    f"round {round_index + 1} {transport:5}: {rate:>10,.0f} msg/s, client CPU "
                    f"{cpu:.2f} us/msg (load {before} -> {load()})",
                    flush=True,
                )
    for transport in ("http", "kafka"):
        print(
            f"median {transport:5}: {statistics.median(rates[transport]):>10,.0f} msg/s, "
            f"client CPU {statistics.median(cpus[transport]):.2f} us/msg"
        )


if __name__ == "__main__":
    main()
