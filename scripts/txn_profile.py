"""Where a transaction's time goes, from the client's side (docs/benchmarks.md,
"Transactions"): a confluent-kafka transactional producer runs the benchmark's loop
(1,000 x 100 B over 8 keys to 8 partitions, commit) against a throwaway local cluster,
with librdkafka's protocol debug log on; each request's round trip ("rtt" in
librdkafka's "Received ...Response" lines) is collected per API. Prints the time per
transaction, the commit latency and each API's round trips (p50, p90), and the CPU
seconds of the coordinator and the brokers, with the load average.

    nice -n 10 .venv/bin/python scripts/txn_profile.py [--transactions 60] [--brokers 1]

The debug log costs the client some CPU, so the rates are below `conveyor bench txn`'s;
the round trips are what to read.
"""

from __future__ import annotations

import argparse
import logging
import os
import re
import statistics
import time
import uuid
from collections import defaultdict
from typing import Any

from confluent_kafka import Producer, admin

from conveyor.bench.client import kafka_bootstrap
from conveyor.bench.local import LocalCluster

_RTT = re.compile(r"Received (\w+)Response .*rtt ([0-9.]+)ms")
KEYS = 8
PARTITIONS = 8
PER_TRANSACTION = 1000


class _Rtts(logging.Handler):
    def __init__(self) -> None:
        super().__init__()
        self.found: dict[str, list[float]] = defaultdict(list)

    def emit(self, record: logging.LogRecord) -> None:
        match = _RTT.search(record.getMessage())
        if match:
            self.found[match.group(1)].append(float(match.group(2)))


def _producer(bootstrap: str, logger: logging.Logger) -> Any:
    producer = Producer(
        {
            "bootstrap.servers": bootstrap,
            "enable.idempotence": True,
            "acks": "all",
            "linger.ms": 5,
            "batch.size": 512 * 1024,
            "partitioner": "murmur2_random",
            "transactional.id": f"profile-{uuid.uuid4().hex[:8]}",
            "debug": "protocol",
            "logger": logger,
        }
    )
    producer.init_transactions(30)
    return producer


def _run(producer: Any, topic: str, transactions: int) -> tuple[float, list[float]]:
    keys = [f"key-{k}".encode() for k in range(KEYS)]
    value = b"x" * 100
    commit_ms: list[float] = []
    started = time.perf_counter()
    for _ in range(transactions):
        producer.begin_transaction()
        for i in range(PER_TRANSACTION):
            producer.produce(topic, value, key=keys[i % KEYS])
        before = time.perf_counter()
        producer.commit_transaction(60)
        commit_ms.append((time.perf_counter() - before) * 1000)
    return time.perf_counter() - started, commit_ms


def _line(name: str, values: list[float]) -> str:
    ordered = sorted(values)
    p90 = ordered[min(len(ordered) - 1, int(0.9 * len(ordered)))]
    return f"{name:22s} n={len(values):5d}  p50 {statistics.median(values):7.2f}  p90 {p90:7.2f} ms"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--transactions", type=int, default=60)
    parser.add_argument("--brokers", type=int, default=1)
    args = parser.parse_args()
    rtts = _Rtts()
    logger = logging.getLogger("librdkafka")
    logger.addHandler(rtts)
    logger.setLevel(logging.DEBUG)
    logger.propagate = False
    with LocalCluster(args.brokers) as cluster:
        bootstrap = kafka_bootstrap(cluster.url)
        topic = f"profile-{uuid.uuid4().hex[:8]}"
        client = admin.AdminClient({"bootstrap.servers": bootstrap})
        new_topic = admin.NewTopic(topic, PARTITIONS, 1)  # type: ignore[attr-defined]
        for future in client.create_topics([new_topic]).values():
            future.result(30)
        producer = _producer(bootstrap, logger)
        _run(producer, topic, 5)  # warm up: connections, metadata
        rtts.found.clear()
        load = os.getloadavg()
        services = [cluster.coordinator, *cluster.broker_services]
        cpu_before = [s.cpu_s() for s in services]
        seconds, commit_ms = _run(producer, topic, args.transactions)
        cpu_ms = [
            (s.cpu_s() - before) * 1000 / args.transactions
            for s, before in zip(services, cpu_before, strict=True)
        ]
        print(f"load average {load[0]:.1f}; {args.transactions} transactions of "
              f"{PER_TRANSACTION} messages")  # fmt: skip
        print(f"per transaction {seconds / args.transactions * 1000:.1f} ms "
              f"({args.transactions * PER_TRANSACTION / seconds:,.0f} msg/s)")  # fmt: skip
        print(_line("commit_transaction()", commit_ms))
        for api, values in sorted(rtts.found.items()):
            if api in ("AddPartitionsToTxn", "Produce", "EndTxn"):
                print(_line(api, values))
        spent = {s.name: round(ms, 2) for s, ms in zip(services, cpu_ms, strict=True)}
        print("CPU ms per transaction:", spent)
        producer.flush(30)


if __name__ == "__main__":
    main()
