"""Compaction benchmark (issue 22): the log cleaner's throughput, and what a running
cleaner costs produce throughput.

Usage: nice .venv/bin/python scripts/bench_compaction.py [--runs 3] [--log-mib 128]
       [--messages 200000] [--cleaner-io-mib-per-s 0] [--produce-only]

1. **Cleaner throughput** (in process, the storage engine alone): a compacted log of
   ``--log-mib`` MiB in 8 MiB segments, 100-byte values over 10,000 keys in batches of 50
   (uncompressed, then gzip), cleaned once unthrottled; MB/s is the sealed bytes the pass
   covered over its wall time. Medians of ``--runs``.
2. **Produce while cleaning** (a real coordinator and broker): one Python producer sends
   ``--messages`` 100-byte messages over 1,000 keys, acks=1, alternating between three
   topics: ``cleanup_policy=delete`` (the baseline), ``compact`` with a dirty ratio of
   0.99 (the produce path's key check, the cleaner rarely due) and ``compact`` with 0.1 (1
   MiB segments, cleaner backoff 100 ms: its worker process cleans all along); the bytes
   the cleaner read during each busy run come from the broker's metrics.
"""

from __future__ import annotations

import argparse
import os
import re
import statistics
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from tests.integration.cluster import Cluster

from conveyor.client import Admin, Producer
from conveyor.protocol.records import Codec, encode_batch
from conveyor.storage import LogConfig, PartitionLog
from conveyor.storage.cleaner import clean_log

MIB = 1024 * 1024


def build_log(directory: Path, size_mib: int, codec: Codec) -> PartitionLog:
    config = LogConfig(segment_bytes_max=8 * MIB, cleanup_policy="compact", flush=LogConfig().flush)
    log = PartitionLog.open(directory, config)
    now = int(time.time() * 1000)
    n = 0
    while log.size_bytes < size_mib * MIB:
        pairs = [
            (f"key-{(n + i) % 10_000}".encode(), os.urandom(50).hex().encode()) for i in range(50)
        ]
        log.append(encode_batch(pairs, codec=codec, timestamp_ms=now))
        n += 50
    log.flush()
    return log


def cleaner_rate(size_mib: int, codec: Codec) -> tuple[float, float, int]:
    """(MB/s of sealed log cleaned, records/s read, bytes left)."""
    with tempfile.TemporaryDirectory(prefix="bench-compaction-") as root:
        log = build_log(Path(root) / "log", size_mib, codec)
        try:
            sealed = sum(s.size_bytes for s in log.cleaning_view().sealed)
            stats = clean_log(log, now_ms=int(time.time() * 1000))
            return sealed / 1e6 / stats.seconds, stats.records_read / stats.seconds, log.size_bytes
        finally:
            log.close()


def cleaner_bytes_read(broker_url: str) -> float:
    with urllib.request.urlopen(f"{broker_url}/metrics", timeout=10) as answer:  # noqa: S310
        text = answer.read().decode()
    match = re.search(r"^conveyor_broker_cleaner_bytes_read_total (\S+)$", text, re.M)
    return float(match.group(1)) if match else 0.0


def produce_rate(url: str, topic: str, messages: int) -> float:
    value = b"x" * 100
    keys = [f"key-{i}" for i in range(1000)]
    with Producer(url, acks="1", linger_ms=5) as producer:
        producer.send(topic, value, key=keys[0]).result(timeout=60)  # metadata
        started = time.perf_counter()
        for n in range(messages):
            producer.send(topic, value, key=keys[n % 1000])
        producer.flush()
        return messages / (time.perf_counter() - started)


TOPICS = {
    "delete": {},  # the cleaner has nothing to do
    "compact-idle": {  # keys checked on produce (INVALID_RECORD), the cleaner rarely due
        "cleanup_policy": "compact",
        "segment_bytes": MIB,
        "min_cleanable_dirty_ratio": 0.99,
    },
    "compact-busy": {  # the cleaner's worker process cleans all along
        "cleanup_policy": "compact",
        "segment_bytes": MIB,
        "min_cleanable_dirty_ratio": 0.1,
    },
}


def produce_while_cleaning(runs: int, messages: int, throttle: int) -> dict[str, list[float]]:
    results: dict[str, list[float]] = {name: [] for name in TOPICS} | {"cleaned_mb": []}
    with tempfile.TemporaryDirectory(prefix="bench-compaction-cluster-") as root:
        args = ["--cleaner-backoff-ms", "100", "--cleaner-io-bytes-per-s", str(throttle)]
        cluster = Cluster(Path(root), broker_count=1, broker_args=args, kafka=False).start()
        try:
            broker_url = cluster.brokers[1].url
            with Admin(cluster.url) as admin:
                for run in range(runs):
                    for name, config in TOPICS.items():
                        admin.create_topic(
                            f"{name}-{run}", partitions=4, replication_factor=1, config=config
                        )
            for run in range(runs):  # alternating, so load changes hit every kind alike
                for name in TOPICS:
                    before = cleaner_bytes_read(broker_url)
                    results[name].append(produce_rate(cluster.url, f"{name}-{run}", messages))
                    if name == "compact-busy":
                        cleaned = cleaner_bytes_read(broker_url) - before
                        results["cleaned_mb"].append(cleaned / 1e6)
        finally:
            cluster.stop()
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--log-mib", type=int, default=128)
    parser.add_argument("--messages", type=int, default=200_000)
    parser.add_argument(
        "--cleaner-io-mib-per-s", type=int, default=0, help="the broker's throttle (0: none)"
    )
    parser.add_argument("--produce-only", action="store_true", help="skip the in-process part")
    args = parser.parse_args()
    print(f"load: {os.getloadavg()[0]:.1f} {os.getloadavg()[1]:.1f}")
    for codec in () if args.produce_only else (Codec.NONE, Codec.GZIP):
        rates = [cleaner_rate(args.log_mib, codec) for _ in range(args.runs)]
        mb_s = statistics.median(r[0] for r in rates)
        rec_s = statistics.median(r[1] for r in rates)
        print(
            f"cleaner {codec.name.lower():5}: {mb_s:6.1f} MB/s of log, {rec_s:9,.0f} records/s "
            f"read, {args.log_mib} MiB -> {rates[0][2] / MIB:.1f} MiB (medians of {args.runs})"
        )
    found = produce_while_cleaning(args.runs, args.messages, args.cleaner_io_mib_per_s * MIB)
    print(f"broker cleaner throttle: {args.cleaner_io_mib_per_s or 'none'} MiB/s")
    base = statistics.median(found["delete"])
    for name in TOPICS:
        rate = statistics.median(found[name])
        print(
            f"produce to a {name:13} topic: {rate:9,.0f} msg/s (ratio {rate / base:.2f}; "
            f"runs {[round(x) for x in found[name]]})"
        )
    cleaned = found["cleaned_mb"]
    print(
        f"cleaner read {statistics.median(cleaned):.0f} MB per compact-busy run "
        f"(runs {[round(x) for x in cleaned]})"
    )
    print(f"load: {os.getloadavg()[0]:.1f} {os.getloadavg()[1]:.1f}")


if __name__ == "__main__":
    main()
