"""Broker memory with many partitions and much data (issue 9: "RSS under 200 MiB with 1,000
partitions and 10 GiB of data").

Usage: .venv/bin/python scripts/bench_memory.py [--partitions 1000] [--gib 10] [--dir DIR]

One coordinator and one broker (real processes, durable defaults). A topic of
``--partitions`` partitions (RF 1) is filled with ``--gib`` GiB of 1 MiB record batches
(1,024 records of 1,000 bytes) spread evenly, by four writer threads; the broker's resident
set (``VmRSS``) and peak (``VmHWM``) are read from /proc after the fill, after a graceful
restart (recovery and reopening every partition) and after one 1 MiB fetch from every
partition. The raw write speed of the same bytes to a file in the same directory is printed
beside the fill rate, as the baseline of this machine's disk in this run.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
import tempfile
import threading
import time
from pathlib import Path

import urllib3

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from tests.integration.cluster import Cluster, Service, wait_for

from conveyor.protocol.messages import BATCH_CONTENT_TYPE
from conveyor.protocol.records import BatchBuilder

TOPIC = "memory"
WRITERS = 4
TARGET_MIB = 200


def proc_kib(service: Service, field: str) -> int:
    assert service.process is not None
    for line in Path(f"/proc/{service.process.pid}/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise LookupError(field)


def rss_line(service: Service, when: str) -> float:
    rss = proc_kib(service, "VmRSS") / 1024
    peak = proc_kib(service, "VmHWM") / 1024
    verdict = "PASS" if rss < TARGET_MIB else "FAIL"
    print(f"{when}: RSS {rss:,.1f} MiB, peak {peak:,.1f} MiB (target < {TARGET_MIB}: {verdict})")
    return rss


def one_batch() -> bytes:
    builder = BatchBuilder()
    for n in range(1024):
        builder.append(b"x" * 1000, key=f"{n}".encode())
    return builder.build()


def fill(broker_url: str, partitions: int, batches_each: int, batch: bytes) -> float:
    http = urllib3.PoolManager(maxsize=WRITERS)
    headers = {"Content-Type": BATCH_CONTENT_TYPE}
    errors: list[str] = []

    def writer(first: int) -> None:
        for p in range(first, partitions, WRITERS):
            url = f"{broker_url}/v1/topics/{TOPIC}/partitions/{p}/records?acks=1"
            for _ in range(batches_each):
                reply = http.request("POST", url, body=batch, headers=headers, timeout=120)
                if reply.status != 200:
                    errors.append(f"partition {p}: HTTP {reply.status} {reply.data[:200]!r}")
                    return

    started = time.perf_counter()
    threads = [threading.Thread(target=writer, args=(w,)) for w in range(WRITERS)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    if errors:
        raise RuntimeError(errors[0])
    return time.perf_counter() - started


def raw_write(directory: Path, total: int, chunk: bytes) -> float:
    """The same number of bytes written and fsynced to one file: the disk's speed now."""
    path = directory / "raw.bin"
    started = time.perf_counter()
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        written = 0
        while written < total:
            written += os.write(fd, chunk)
        os.fsync(fd)
    finally:
        os.close(fd)
        path.unlink()
    return time.perf_counter() - started


def read_all(broker_url: str, partitions: int) -> None:
    http = urllib3.PoolManager()
    for p in range(partitions):
        url = f"{broker_url}/v1/topics/{TOPIC}/partitions/{p}/records?offset=0&max_bytes=1048576"
        reply = http.request("GET", url, headers={"Accept": BATCH_CONTENT_TYPE}, timeout=60)
        if reply.status != 200 or not reply.data:
            raise RuntimeError(f"partition {p}: HTTP {reply.status}, {len(reply.data)} bytes")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--partitions", type=int, default=1000)
    parser.add_argument("--gib", type=float, default=10.0)
    parser.add_argument("--dir", type=Path, default=None, help="where the data goes")
    args = parser.parse_args()
    batch = one_batch()
    batches_each = max(1, math.ceil(args.gib * 2**30 / len(batch) / args.partitions))
    total = len(batch) * batches_each * args.partitions
    with tempfile.TemporaryDirectory(dir=args.dir) as root:
        cluster = Cluster(Path(root), broker_count=1).start()
        try:
            http = urllib3.PoolManager()
            topic = {"name": TOPIC, "partitions": args.partitions, "replication_factor": 1}
            body = json.dumps(topic)
            reply = http.request(
                "POST",
                f"{cluster.url}/v1/topics",
                body=body.encode(),
                headers={"Content-Type": "application/json"},
            )
            assert reply.status in (200, 201), reply.data
            broker = cluster.brokers[1]
            last = f"{broker.url}/v1/topics/{TOPIC}/partitions/{args.partitions - 1}/offsets"
            wait_for(lambda: http.request("GET", last).status == 200, 120, "partitions served")
            rss_line(broker, f"{args.partitions} empty partitions")
            seconds = fill(broker.url, args.partitions, batches_each, batch)
            raw_s = raw_write(Path(root), total, batch * 8)
            print(
                f"filled {total / 2**30:.2f} GiB in {seconds:.1f} s "
                f"({total / seconds / 2**20:,.0f} MiB/s; raw fsynced write "
                f"{total / raw_s / 2**20:,.0f} MiB/s, ratio {raw_s / seconds:.2f})"
            )
            after_fill = rss_line(broker, "after the fill")
            broker.stop(timeout_s=120)
            started = time.perf_counter()
            broker.start()
            broker.wait_ready(timeout_s=300)
            wait_for(lambda: http.request("GET", last).status == 200, 300, "partitions served")
            print(f"restart to every partition served: {time.perf_counter() - started:.1f} s")
            after_restart = rss_line(broker, "after a restart")
            read_all(broker.url, args.partitions)
            after_read = rss_line(broker, "after a 1 MiB fetch from every partition")
        finally:
            cluster.stop()
    worst = max(after_fill, after_restart, after_read)
    return 0 if worst < TARGET_MIB else 1


if __name__ == "__main__":
    sys.exit(main())
