"""Conveyor's own transactional producer over its two transports in one run: the
transaction's steps over the coordinator's HTTP routes against Kafka's transaction APIs
on the brokers' listeners (``transport="kafka"``; docs/benchmarks.md, "Transactions over
the client's two transports").

Transactional W1: --count x 100 B over 8 keys to an 8-partition topic, committed every
--per-transaction messages (acks=all, idempotent, linger 5 ms), on one local broker
(``LocalCluster``); the same producer without transactions on each transport as the
baseline. Rounds alternate the four variants so that load drifts on a shared machine hit
all alike; medians of --rounds, commit latency (``commit_transaction()``: flush, then
EndTxn, answered once the markers are written) p50/p99 over every commit, and the
client's CPU per message (process time of this process, which runs only the producer).

    nice -n 10 .venv/bin/python scripts/bench_txn_transport.py [--count 50000] [--rounds 3]
"""

from __future__ import annotations

import argparse
import os
import statistics
import time
import uuid

import conveyor
from conveyor.bench.local import LocalCluster
from conveyor.bench.transactions import KEYS, PARTITIONS, percentile

VARIANTS = [("http", False), ("kafka", False), ("http", True), ("kafka", True)]


def one_run(
    url: str, topic: str, transport: str, txn: bool, *, count: int, per_txn: int
) -> tuple[float, float, list[float]]:
    """(msg/s, client CPU us per message, commit latencies in ms)."""
    tid = f"bench-{transport}-{uuid.uuid4().hex[:8]}" if txn else None
    value = b"x" * 100
    keys = [f"key-{k}".encode() for k in range(KEYS)]
    commits: list[float] = []
    with conveyor.Producer(url, transport=transport, transactional_id=tid) as producer:
        if txn:
            producer.init_transactions()
        cpu_before, started = time.process_time(), time.perf_counter()
        for first in range(0, count, per_txn):
            if txn:
                producer.begin_transaction()
            for i in range(first, min(count, first + per_txn)):
                producer.send(topic, value, key=keys[i % KEYS])
            if txn:
                before = time.perf_counter()
                producer.commit_transaction()
                commits.append((time.perf_counter() - before) * 1000)
        producer.flush()
        seconds = time.perf_counter() - started
        cpu_s = time.process_time() - cpu_before
    return count / seconds, cpu_s / count * 1e6, commits


def load() -> str:
    return " ".join(f"{x:.1f}" for x in os.getloadavg())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--count", type=int, default=50_000)
    parser.add_argument("--per-transaction", type=int, default=1_000)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    rates: dict[tuple[str, bool], list[float]] = {v: [] for v in VARIANTS}
    cpu: dict[tuple[str, bool], list[float]] = {v: [] for v in VARIANTS}
    commits: dict[tuple[str, bool], list[float]] = {v: [] for v in VARIANTS}
    with LocalCluster(1) as cluster:
        topic = f"bench-txn-transport-{uuid.uuid4().hex[:8]}"
        with conveyor.Admin(cluster.url) as admin:
            admin.create_topic(topic, partitions=PARTITIONS)
        for round_index in range(args.rounds):
            for variant in VARIANTS:
                transport, txn = variant
                before = load()
                rate, cpu_us, latencies = one_run(
                    cluster.url, topic, transport, txn, count=args.count,
                    per_txn=args.per_transaction,
                )  # fmt: skip
                rates[variant].append(rate)
                cpu[variant].append(cpu_us)
                commits[variant] += latencies
                kind = "transactional" if txn else "plain"
                print(
                    f"round {round_index + 1} {transport:5} {kind:13}: {rate:>9,.0f} msg/s, "
                    f"client CPU {cpu_us:.2f} us/msg (load {before} -> {load()})",
                    flush=True,
                )
    for variant in VARIANTS:
        transport, txn = variant
        kind = "transactional" if txn else "plain"
        line = (
            f"median {transport:5} {kind:13}: {statistics.median(rates[variant]):>9,.0f} msg/s "
            f"{[round(r) for r in rates[variant]]}, client CPU "
            f"{statistics.median(cpu[variant]):.2f} us/msg"
        )
        if txn:
            line += (
                f", commit p50 {percentile(commits[variant], 0.5):.1f} ms, p99 "
                f"{percentile(commits[variant], 0.99):.1f} ms ({len(commits[variant])} commits)"
            )
        print(line)
    for transport in ("http", "kafka"):
        ratio = statistics.median(rates[(transport, True)]) / statistics.median(
            rates[(transport, False)]
        )
        print(f"{transport}: transactional / plain {ratio:.2f}x")
    kafka_over_http = statistics.median(rates[("kafka", True)]) / statistics.median(
        rates[("http", True)]
    )
    print(f"transactional kafka / http: {kafka_over_http:.2f}x")


if __name__ == "__main__":
    main()
