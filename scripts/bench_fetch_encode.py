"""CPU per Fetch answer: kafka-python's generic encoder (the broker's path before issue 19's
broker work) against the hand-written one (protocol/kafka/fetch_response.py), and the
batch walk of a log read (storage/segment.py) per MiB. CPU time of this process
(``time.process_time``), so that the shared machine's load distorts it less than wall time.

Usage: .venv/bin/python scripts/bench_fetch_encode.py [--partitions 16] [--kib 64] [--runs 3]
"""

from __future__ import annotations

import argparse
import functools
import os
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from conveyor.protocol.kafka.apis import SERVED, ApiKey
from conveyor.protocol.kafka.codec import encode_response
from conveyor.protocol.records import BatchBuilder
from conveyor.storage import PartitionLog


def cpu_us(action: Callable[[], object], repeat: int) -> float:
    started = time.process_time()
    for _ in range(repeat):
        action()
    return (time.process_time() - started) / repeat * 1e6


def generic(version: int, partitions: int, records: bytes) -> bytes | bytearray:
    response = SERVED[ApiKey.FETCH].response[version]
    topic = response.FetchableTopicResponse
    partition = topic.PartitionData
    body = response(
        throttle_time_ms=0,
        error_code=0,
        session_id=0,
        responses=[
            topic(
                topic="bench",
                partitions=[
                    partition(
                        partition_index=i,
                        error_code=0,
                        high_watermark=10,
                        last_stable_offset=10,
                        log_start_offset=0,
                        aborted_transactions=None,
                        preferred_read_replica=-1,
                        records=records,
                    )
                    for i in range(partitions)
                ],
            )
        ],
    )
    return encode_response(ApiKey.FETCH, version, 1, body)  # type: ignore[return-value]


def by_hand(version: int, partitions: int, records: bytes) -> object:
    from conveyor.protocol.kafka.fetch_response import FetchedPartition, encode_fetch_response

    answers = [FetchedPartition(i, 0, 10, 10, 0, None, records) for i in range(partitions)]
    return encode_response(
        ApiKey.FETCH, version, 1, encode_fetch_response(version, [("bench", answers)])
    )


def log_read_us_per_mib(directory: Path, records_per_batch: int) -> float:
    """A 16 MiB log of 100-byte records, read back 1 MiB at a time (whole batches, CRCs)."""
    with PartitionLog.open(directory) as log:
        builder = BatchBuilder()
        for _ in range(records_per_batch):
            builder.append(b"x" * 100, key=b"k")
        batch = builder.build(base_offset=0)
        while log.size_bytes < 16 << 20:
            log.append(batch)
        started = time.process_time()
        offset, reads = 0, 0
        while offset < log.log_end_offset:
            data = log.read(offset, 1 << 20)
            offset += (len(data) // len(batch)) * records_per_batch
            reads += 1
        return (time.process_time() - started) / reads * 1e6


def _has_fetch_encoder() -> bool:
    """False on a tree from before it (run with PYTHONPATH=<old tree>/src for the log read's
    before and after)."""
    try:
        import conveyor.protocol.kafka.fetch_response  # noqa: F401
    except ImportError:
        return False
    return True


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--partitions", type=int, default=16)
    parser.add_argument("--kib", type=int, default=64, help="record bytes per partition")
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args()
    records = os.urandom(args.kib * 1024)
    print(f"load {os.getloadavg()[0]:.1f}; {args.partitions} partitions x {args.kib} KiB")
    for version in (11, 12) if _has_fetch_encoder() else ():
        timings = []
        for encode in (generic, by_hand):
            action = functools.partial(encode, version, args.partitions, records)
            timings.append(statistics.median(cpu_us(action, 50) for _ in range(args.runs)))
        old, new = timings
        print(f"Fetch v{version} answer: kafka-python {old:.0f} us, by hand {new:.0f} us CPU")
    for per_batch in (50, 1000):
        with tempfile.TemporaryDirectory() as tmp:
            spent = log_read_us_per_mib(Path(tmp), per_batch)
        print(f"log read, {per_batch} records per batch: {spent:.0f} us CPU per MiB")


if __name__ == "__main__":
    main()
