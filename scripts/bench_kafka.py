"""Issue 16's "Measured" workloads through the Kafka listener, medians of --runs rounds:

* W1: 1,000,000 x 100 B, 8 keys, acks=all, fsync before ack, 1 broker, confluent-kafka's
  producer at librdkafka's default batching (linger.ms 5, batch.size 1,000,000): msg/s,
  broker CPU microseconds per message; and Redis Streams' W1 (bench/peers/peers.py, the
  same count, pipelined XADD, appendfsync everysec) in the same round, for the ratio.
* W3: 2,000 single-message acknowledged sends, linger.ms 0 (p50, p99 in microseconds).
* W2: the same 1,000,000 messages over 16 partitions read by 4 manual-assign
  confluent-kafka consumers (msg/s).

Rounds alternate the systems so that load drifts on this shared machine hit both alike.
Usage: python scripts/bench_kafka.py [--count 1000000] [--runs 3] [--out results.json]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "bench" / "peers"))

COMMON = ["--message-bytes", "100", "--keys", "8", "--acks", "all", "--client", "confluent-kafka"]


def bench(*args: str) -> dict[str, Any]:
    argv = [sys.executable, "-m", "conveyor", "bench", *args, *COMMON, "--json"]
    done = subprocess.run(argv, capture_output=True, text=True, check=False, timeout=3600)
    if done.returncode != 0:
        raise RuntimeError(f"{' '.join(argv)} failed:\n{done.stderr[-3000:]}")
    result: dict[str, Any] = json.loads(done.stdout)
    return result


def redis_w1(count: int) -> float:
    import peers  # bench/peers/peers.py: installs and starts redis-server

    peers.ensure_installed("redis")
    server = peers.Server("redis").start()
    try:
        return count / peers.redis_produce(server.port, count)
    finally:
        server.stop()


def load() -> str:
    return " ".join(f"{x:.1f}" for x in os.getloadavg())


def one_round(count: int) -> dict[str, float]:
    row: dict[str, float] = {}
    w1 = bench(
        "produce", "--local", "1", "--count", str(count), "--linger-ms", "5",
        "--batch-bytes", "1000000",
    )  # fmt: skip
    row["w1_msg_per_s"] = w1["produce"]["msg_per_s"]
    row["w1_broker_us_per_msg"] = w1["broker_cpu_s"] * 1e6 / w1["produce"]["messages"]
    row["w1_errors"] = w1["errors"]
    row["redis_w1_msg_per_s"] = redis_w1(count)
    w3 = bench("produce", "--local", "1", "--count", "2000", "--sequential", "--linger-ms", "0")
    row["w3_p50_us"] = w3["produce_latency_us"]["p50_us"]
    row["w3_p99_us"] = w3["produce_latency_us"]["p99_us"]
    w2 = bench(
        "consume", "--local", "1", "--count", str(count), "--partitions", "16",
        "--consumers", "4",
    )  # fmt: skip
    row["w2_msg_per_s"] = w2["consume"]["msg_per_s"]
    row["w2_errors"] = w2["errors"]
    return row


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--count", type=int, default=1_000_000)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args()
    rounds = []
    for index in range(args.runs):
        before = load()
        started = time.monotonic()
        row = one_round(args.count)
        row["seconds"] = time.monotonic() - started
        rounds.append({"round": index + 1, "load_before": before, "load_after": load(), **row})
        print(json.dumps(rounds[-1]), flush=True)
    keys = [k for k in rounds[0] if isinstance(rounds[0][k], float | int) and k != "round"]
    medians = {k: statistics.median(r[k] for r in rounds) for k in keys}
    medians["w1_ratio_to_redis"] = medians["w1_msg_per_s"] / medians["redis_w1_msg_per_s"]
    print(json.dumps({"medians": medians}, indent=1))
    if args.out:
        args.out.write_text(json.dumps({"rounds": rounds, "medians": medians}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
