"""W3 through the Kafka listener against HTTP, in the same run on the same broker:
single-message acknowledged latency (one send, wait for its ack, repeat), acks=all, the
topic's default fsync-before-ack, 1 broker on 127.0.0.1.

    .venv/bin/python scripts/bench_kafka_latency.py [--count 2000] [--rounds 3]

Kafka: confluent-kafka's Producer (linger.ms 0, acks all); HTTP: Conveyor's own Producer
(linger_ms 0, acks all). The two alternate by round, each on its own topic; printed:
p50/p99 in microseconds per round and the median over rounds.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from tests.integration.cluster import Cluster  # noqa: E402


def _quantiles(samples_us: list[float]) -> tuple[float, float]:
    ordered = sorted(samples_us)
    return ordered[len(ordered) // 2], ordered[min(len(ordered) - 1, int(len(ordered) * 0.99))]


def kafka_w3(bootstrap: str, topic: str, count: int) -> tuple[float, float]:
    import confluent_kafka

    producer = confluent_kafka.Producer(
        {"bootstrap.servers": bootstrap, "linger.ms": 0, "acks": "all", "enable.idempotence": False}
    )
    producer.produce(topic, b"warm-up")
    producer.flush(30)
    samples = []
    for i in range(count):
        start = time.perf_counter()
        producer.produce(topic, b"x" * 100, key=b"k%d" % (i % 8))
        producer.flush(10)
        samples.append((time.perf_counter() - start) * 1e6)
    return _quantiles(samples)


def http_w3(url: str, topic: str, count: int) -> tuple[float, float]:
    import conveyor

    with conveyor.Producer(url, acks="all", linger_ms=0) as producer:
        producer.send(topic, b"warm-up").result(30)
        samples = []
        for i in range(count):
            start = time.perf_counter()
            producer.send(topic, b"x" * 100, key=b"k%d" % (i % 8)).result(10)
            samples.append((time.perf_counter() - start) * 1e6)
    return _quantiles(samples)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--count", type=int, default=2000)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as root:
        cluster = Cluster(Path(root), broker_count=1).start()
        try:
            results: dict[str, list[tuple[float, float]]] = {"kafka": [], "http": []}
            for round_ in range(args.rounds):
                for name in ("kafka", "http") if round_ % 2 == 0 else ("http", "kafka"):
                    topic = f"w3-{name}-{round_}"
                    if name == "kafka":
                        result = kafka_w3(cluster.bootstrap, topic, args.count)
                    else:
                        result = http_w3(cluster.url, topic, args.count)
                    results[name].append(result)
                    print(f"round {round_} {name}: p50 {result[0]:.0f} us, p99 {result[1]:.0f} us")
            for name, values in results.items():
                p50 = statistics.median(v[0] for v in values)
                p99 = statistics.median(v[1] for v in values)
                print(f"{name}: median p50 {p50:.0f} us, median p99 {p99:.0f} us")
        finally:
            cluster.stop()


if __name__ == "__main__":
    main()
