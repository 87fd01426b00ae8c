"""Broker-wide group commit: produce throughput and broker CPU per request and per message.

One run: a throwaway 1-broker cluster (``LocalCluster`` of the tree whose Python runs this
file), then ``conveyor bench produce`` against it (acks=all, flush ``always``: fsync before
ack) with many partitions and concurrent producer processes. The broker's CPU (utime +
stime from /proc) and its ``conveyor_http_requests_total`` (POST to a records route) and
``conveyor_broker_flush_duration_seconds_count`` are read before and after the produce run,
so topic creation is not counted. Prints one JSON line.

Before/after comparisons run this file alternately with the old and the new tree's Python
(docs/benchmarks.md, "Broker-wide group commit"), e.g.::

    for i in 1 2 3; do for t in base new; do
        nice -n 10 /work/wt/$t/.venv/bin/python bench/group_commit.py --label $t
    done; done
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import urllib.request
from pathlib import Path

from conveyor.bench.local import LocalCluster


def _metric(url: str, name: str, *labels: str) -> float:
    """The sum of ``name`` over the series whose labels contain every one of ``labels``."""
    with urllib.request.urlopen(url + "/metrics", timeout=10) as response:  # noqa: S310
        text = response.read().decode()
    total = 0.0
    for line in text.splitlines():
        match = re.match(rf"^{re.escape(name)}(\{{.*\}})? ([0-9.e+-]+)$", line)
        if match and all(label in (match.group(1) or "") for label in labels):
            total += float(match.group(2))
    return total


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--label", default="")
    parser.add_argument("--partitions", type=int, default=32)
    parser.add_argument("--producers", type=int, default=4)
    parser.add_argument("--count", type=int, default=200_000)
    parser.add_argument("--linger-ms", type=int, default=1)
    parser.add_argument("--batch-bytes", type=int, default=16384)
    args = parser.parse_args()
    conveyor = str(Path(sys.executable).parent / "conveyor")
    with LocalCluster(1) as cluster:
        broker = cluster.broker_services[0]
        topic = "gc"
        subprocess.run(  # creates the topic and warms the broker up (not measured)
            [conveyor, "bench", "produce", "--bootstrap", cluster.url, "--topic", topic,
             "--partitions", str(args.partitions), "--keys", str(args.partitions),
             "--count", "2000", "--json"],
            check=True, capture_output=True,
        )  # fmt: skip
        produce = ('method="POST"', '/records"')  # the produce routes (partition, routed)
        requests_total = "conveyor_http_requests_total"
        flush_count = "conveyor_broker_flush_duration_seconds_count"
        before = (broker.cpu_s(), _metric(broker.url, requests_total, *produce))
        rounds_count = "conveyor_broker_flush_round_logs_count"  # 0 on trees without it
        flushes_before = _metric(broker.url, flush_count)
        rounds_before = _metric(broker.url, rounds_count)
        out = subprocess.run(
            [conveyor, "bench", "produce", "--bootstrap", cluster.url, "--topic", topic,
             "--partitions", str(args.partitions), "--keys", str(args.partitions),
             "--producers", str(args.producers), "--count", str(args.count),
             "--linger-ms", str(args.linger_ms), "--batch-bytes", str(args.batch_bytes),
             "--acks", "all", "--json"],
            check=True, capture_output=True, text=True,
        ).stdout  # fmt: skip
        cpu_s = broker.cpu_s() - before[0]
        requests = _metric(broker.url, requests_total, *produce) - before[1]
        flushes = _metric(broker.url, flush_count) - flushes_before
        rounds = _metric(broker.url, rounds_count) - rounds_before
    result = json.loads(out)
    messages = result["produce"]["messages"]
    print(
        json.dumps(
            {
                "label": args.label,
                "load_1m": os.getloadavg()[0],
                "msg_per_s": result["produce"]["msg_per_s"],
                "ack_p50_us": result["produce_latency_us"]["p50_us"],
                "produce_requests": requests,
                "log_flushes": flushes,
                "flush_rounds": rounds,
                "broker_cpu_s": round(cpu_s, 3),
                "broker_cpu_us_per_request": round(cpu_s * 1e6 / max(requests, 1), 1),
                "broker_cpu_us_per_message": round(cpu_s * 1e6 / messages, 2),
            }
        )
    )


if __name__ == "__main__":
    main()
