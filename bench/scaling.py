"""Scaling and partition-count benchmarks (issue #9, "Also"), written to docs/benchmarks.md.

- scaling: the same producer load (``--producers`` processes, acks=all, RF=1, 12 partitions
  spread over the brokers) against 1, 2 and 3 brokers, each broker pinned to a CPU
  (``--pin-brokers``); throughput and CPU seconds per million messages (client + brokers).
- partition sweep: one producer, no keys (the sticky partitioner spreads batches), topics
  of 1, 10, 100 and 1,000 partitions on one broker; throughput and the broker's peak RSS.

Usage: python bench/scaling.py [--count 200000] [--runs 3] [--no-docs]
"""

from __future__ import annotations

import argparse
import json
import re
import statistics
import subprocess
import sys
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
DOC = ROOT / "docs" / "benchmarks.md"
BEGIN, END = "<!-- scaling:begin -->", "<!-- scaling:end -->"


def bench(*args: str) -> dict[str, Any]:
    argv = [sys.executable, "-m", "conveyor", "bench", "produce", *args, "--json"]
    done = subprocess.run(argv, capture_output=True, text=True, check=False, timeout=1800)
    if done.returncode != 0:
        raise RuntimeError(f"{' '.join(argv)} failed:\n{done.stderr[-3000:]}")
    result: dict[str, Any] = json.loads(done.stdout)
    return result


def scaling_row(brokers: int, count: int, producers: int, runs: int) -> dict[str, float]:
    results = [
        bench(
            "--local",
            str(brokers),
            "--pin-brokers",
            "--replication-factor",
            "1",
            "--partitions",
            "12",
            "--producers",
            str(producers),
            "--count",
            str(count),
        )
        for _ in range(runs)
    ]
    per_million = 1_000_000 / count
    return {
        "brokers": brokers,
        "msg_per_s": statistics.median(r["produce"]["msg_per_s"] for r in results),
        "client_cpu_s_per_m": statistics.median(
            r["produce"]["client_cpu_s"] * per_million for r in results
        ),
        "broker_cpu_s_per_m": statistics.median(r["broker_cpu_s"] * per_million for r in results),
    }


def sweep_row(partitions: int, count: int, runs: int) -> dict[str, float]:
    results = [
        bench("--local", "1", "--keys", "0", "--partitions", str(partitions), "--count", str(count))
        for _ in range(runs)
    ]
    return {
        "partitions": partitions,
        "msg_per_s": statistics.median(r["produce"]["msg_per_s"] for r in results),
        "broker_rss_mib": statistics.median(r["broker_rss_bytes_max"] / 2**20 for r in results),
        "broker_cpu_s": statistics.median(r["broker_cpu_s"] for r in results),
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--count", type=int, default=200_000)
    parser.add_argument("--producers", type=int, default=2)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--no-docs", action="store_true")
    args = parser.parse_args()
    lines = [
        f"Scaling ({args.producers} producer processes, {args.count:,} x 100 B, acks=all, RF=1, "
        f"12 partitions, brokers pinned to CPUs; median of {args.runs}):",
        "",
        "| brokers | msg/s | client CPU s per 10^6 msgs | broker CPU s per 10^6 msgs |",
        "|---:|---:|---:|---:|",
    ]
    for brokers in (1, 2, 3):
        row = scaling_row(brokers, args.count, args.producers, args.runs)
        print(json.dumps(row), flush=True)
        lines.append(
            f"| {brokers} | {row['msg_per_s']:,.0f} | {row['client_cpu_s_per_m']:.2f} "
            f"| {row['broker_cpu_s_per_m']:.2f} |"
        )
    lines += [
        "",
        f"Partition sweep (1 producer, no keys, {args.count:,} x 100 B, 1 broker; "
        f"median of {args.runs}):",
        "",
        "| partitions | msg/s | broker peak RSS MiB | broker CPU s |",
        "|---:|---:|---:|---:|",
    ]
    for partitions in (1, 10, 100, 1000):
        row = sweep_row(partitions, args.count, args.runs)
        print(json.dumps(row), flush=True)
        lines.append(
            f"| {partitions:,} | {row['msg_per_s']:,.0f} | {row['broker_rss_mib']:.0f} "
            f"| {row['broker_cpu_s']:.2f} |"
        )
    section = "\n".join(lines)
    print(section)
    if not args.no_docs:
        text = DOC.read_text()
        block = f"{BEGIN}\n{section}\n{END}"
        if BEGIN in text:
            text = re.sub(
                re.escape(BEGIN) + ".*?" + re.escape(END), lambda _: block, text, flags=re.S
            )
        else:
            text = text.rstrip("\n") + "\n\n" + block + "\n"
        DOC.write_text(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
