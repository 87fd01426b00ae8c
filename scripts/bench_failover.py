"""Failover time: SIGKILL of a partition leader -> first acknowledged write on it.

Usage: .venv/bin/python scripts/bench_failover.py [--session-timeout-ms 2000] [--runs 3]

Starts a coordinator and three brokers on 127.0.0.1 (tests/integration/cluster.py), a topic
with RF 3 and min ISR 2, writes to partition 0 with acks=all, kills its leader with SIGKILL
and times until a write to partition 0 is acknowledged again (the client retries through
NOT_LEADER / metadata refresh by itself). Target: <= session timeout + 2 s.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from tests.integration.cluster import Cluster

from conveyor.client import Producer


def one_run(session_timeout_ms: int) -> float:
    with tempfile.TemporaryDirectory() as root:
        args = ["--session-timeout-ms", str(session_timeout_ms)]
        cluster = Cluster(Path(root), broker_count=3, coordinator_args=args).start()
        try:
            body = {
                "name": "f",
                "partitions": 1,
                "replication_factor": 3,
                "config": {"min_insync_replicas": 2},
            }
            httpx.post(f"{cluster.url}/v1/topics", json=body, timeout=5).raise_for_status()
            with Producer(cluster.url, acks="all", retry_backoff_max_ms=100) as producer:
                for _ in range(20):
                    producer.send("f", b"warm", partition=0).result(timeout=30)
                topic = httpx.get(f"{cluster.url}/v1/topics/f", timeout=5).json()
                leader = topic["partitions"][0]["leader"]
                start = time.monotonic()
                cluster.brokers[leader].kill()
                producer.send("f", b"after", partition=0).result(timeout=60)
                return time.monotonic() - start
        finally:
            cluster.stop()


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--session-timeout-ms", type=int, default=2000)
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args()
    times = [one_run(args.session_timeout_ms) for _ in range(args.runs)]
    target = args.session_timeout_ms / 1000 + 2
    print(
        f"failover seconds: runs {[round(t, 2) for t in times]} median "
        f"{statistics.median(times):.2f} max {max(times):.2f} (target <= {target:.1f})"
    )


if __name__ == "__main__":
    main()
