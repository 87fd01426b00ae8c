"""The compiled record codec's cost per batch of a W1 producer: ``append`` per record and
``build`` per batch (header and CRC-32C), for the source tree on ``PYTHONPATH``. Run it
once per tree, alternating, to compare them (docs/benchmarks.md, "W1 send per record").

    PYTHONPATH=src nice -n 10 .venv/bin/python scripts/bench_batch_build.py [--batches 300]

Each batch: 1,100 records of 100 B over 8 keys (126,497 bytes, about what one W1 produce
request carries), one timestamp; medians over the batches.
"""

from __future__ import annotations

import argparse
import os
import statistics
import time

from conveyor.protocol.fastrecords import CompiledBatchBuilder

RECORDS = 1_100
VALUE = os.urandom(100)
KEYS = [f"key-{n}".encode() for n in range(8)]


def one_batch(timestamp_ms: int) -> tuple[float, float]:
    """(ns per append, us per build) for one batch."""
    builder = CompiledBatchBuilder()
    append = builder.append
    started = time.perf_counter_ns()
    for n in range(RECORDS):
        append(VALUE, KEYS[n & 7], (), timestamp_ms)
    appended = time.perf_counter_ns()
    builder.set_producer(5, 0, 100)
    builder.build(0, -1)
    built = time.perf_counter_ns()
    return (appended - started) / RECORDS, (built - appended) / 1000


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--batches", type=int, default=300)
    args = parser.parse_args()
    timestamp_ms = time.time_ns() // 1_000_000
    runs = [one_batch(timestamp_ms) for _ in range(args.batches)]
    append_ns = statistics.median(run[0] for run in runs)
    build_us = statistics.median(run[1] for run in runs)
    print(f"append {append_ns:.0f} ns/record, build {build_us:.1f} us/batch", end="")
    print(f"  (load average {os.getloadavg()[0]:.2f})")


if __name__ == "__main__":
    main()
