"""Compaction benchmark (issue 22): the log cleaner's throughput, and what a running
cleaner costs produce throughput.

Usage: nice .venv/bin/python scripts/bench_compaction.py [--runs 3] [--log-mib 128]
       [--messages 200000]

1. **Cleaner throughput** (in process, the storage engine alone): a compacted log of
   ``--log-mib`` MiB in 8 MiB segments, 100-byte values over 10,000 keys in batches of 50
   (uncompressed, then gzip), cleaned once unthrottled; MB/s is the sealed bytes the pass
   covered over its wall time. Medians of ``--runs``.
2. **Produce while cleaning** (a real coordinator and broker): one Python producer sends
   ``--messages`` 100-byte messages over 1,000 keys, acks=1, to a topic with
   ``cleanup_policy=delete`` (the cleaner idle) and to one with ``compact`` (1 MiB
   segments, min dirty ratio 0.1, cleaner backoff 100 ms: it cleans all along),
   alternating, then once more with the cleaner throttled (``--cleaner-io-bytes-per-s``
   8 MiB/s); the cleaner's bytes read during each run come from the broker's metrics.
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


def produce_while_cleaning(runs: int, messages: int, throttle: int) -> dict[str, list[float]]:
    results: dict[str, list[float]] = {"delete": [], "compact": [], "cleaned_mb": []}
    with tempfile.TemporaryDirectory(prefix="bench-compaction-cluster-") as root:
        args = ["--cleaner-backoff-ms", "100", "--cleaner-io-bytes-per-s", str(throttle)]
        cluster = Cluster(Path(root), broker_count=1, broker_args=args, kafka=False).start()
        try:
            broker_url = cluster.brokers[1].url
            with Admin(cluster.url) as admin:
                for run in range(runs):
                    admin.create_topic(f"plain-{run}", partitions=4, replication_factor=1)
                    admin.create_topic(
                        f"facts-{run}",
                        partitions=4,
                        replication_factor=1,
                        config={
                            "cleanup_policy": "compact",
                            "segment_bytes": MIB,
                            "min_cleanable_dirty_ratio": 0.1,
                        },
                    )
            for run in range(runs):
                results["delete"].append(produce_rate(cluster.url, f"plain-{run}", messages))
                before = cleaner_bytes_read(broker_url)
                results["compact"].append(produce_rate(cluster.url, f"facts-{run}", messages))
                results["cleaned_mb"].append((cleaner_bytes_read(broker_url) - before) / 1e6)
        finally:
            cluster.stop()
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--log-mib", type=int, default=128)
    parser.add_argument("--messages", type=int, default=200_000)
    args = parser.parse_args()
    print(f"load: {os.getloadavg()[0]:.1f} {os.getloadavg()[1]:.1f}")
    for codec in (Codec.NONE, Codec.GZIP):
        rates = [cleaner_rate(args.log_mib, codec) for _ in range(args.runs)]
        mb_s = statistics.median(r[0] for r in rates)
        rec_s = statistics.median(r[1] for r in rates)
        print(
            f"cleaner {codec.name.lower():5}: {mb_s:6.1f} MB/s of log, {rec_s:9,.0f} records/s "
            f"read, {args.log_mib} MiB -> {rates[0][2] / MIB:.1f} MiB (medians of {args.runs})"
        )
    for label, throttle in (("unthrottled", 0), ("throttled 8 MiB/s", 8 * MIB)):
        found = produce_while_cleaning(args.runs, args.messages, throttle)
        plain, compact = statistics.median(found["delete"]), statistics.median(found["compact"])
        print(
            f"produce, cleaner {label}: delete topic {plain:,.0f} msg/s, compacted topic "
            f"{compact:,.0f} msg/s (ratio {compact / plain:.2f}), cleaner read "
            f"{statistics.median(found['cleaned_mb']):.0f} MB per compacted run "
            f"(runs: {[round(x) for x in found['delete']]} vs "
            f"{[round(x) for x in found['compact']]})"
        )
    print(f"load: {os.getloadavg()[0]:.1f} {os.getloadavg()[1]:.1f}")


if __name__ == "__main__":
    main()
