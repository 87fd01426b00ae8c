"""What the Kafka decoder's null check (protocol/kafka/codec.py ``null_field``) costs per
request, beside the whole ``decode_request``: a one-partition Produce v9 (16 KiB batch)
and Fetch v12 of 1 and 100 partitions (librdkafka asks for every partition a broker leads
in one Fetch). Medians of 5 rounds, microseconds per request.
Run: ``.venv/bin/python scripts/bench_null_check.py``.
"""

from __future__ import annotations

import os
import statistics
import time
from collections.abc import Callable
from functools import partial

from conveyor.client.kafka_fetcher import fetch_request
from conveyor.client.kafka_sender import produce_request
from conveyor.client.types import TopicPartition
from conveyor.protocol.kafka.apis import ApiKey
from conveyor.protocol.kafka.codec import decode_request, encode_request, null_field


def _time_us(fn: Callable[[], object], loops: int) -> float:
    samples = []
    for _ in range(5):
        start = time.perf_counter()
        for _ in range(loops):
            fn()
        samples.append((time.perf_counter() - start) / loops * 1e6)
    return statistics.median(samples)


def _fetch(partitions: int) -> bytes:
    request = fetch_request(
        12, TopicPartition("t", 0), 0, max_wait_ms=500, max_bytes=1 << 20, read_committed=True
    )
    topic = request.topics[0]
    first = topic.partitions[0]
    topic.partitions = [
        type(first)(
            partition=p,
            current_leader_epoch=-1,
            fetch_offset=0,
            last_fetched_epoch=-1,
            log_start_offset=-1,
            partition_max_bytes=1 << 20,
        )
        for p in range(partitions)
    ]
    return encode_request(ApiKey.FETCH, 12, 1, "bench", request)[4:]


def main() -> None:
    produce = produce_request(9, "t", 0, os.urandom(16 * 1024), -1, 30_000)
    shapes = {
        "produce v9, 1 partition": encode_request(ApiKey.PRODUCE, 9, 1, "bench", produce)[4:],
        "fetch v12, 1 partition": _fetch(1),
        "fetch v12, 100 partitions": _fetch(100),
    }
    for name, frame in shapes.items():
        decoded = decode_request(frame)
        body, version = decoded.body, decoded.api_version
        whole = _time_us(partial(decode_request, frame), 4000)
        check = _time_us(partial(null_field, body._struct, body, version), 4000)
        print(f"{name:28} decode_request {whole:7.1f} us, of which the null check {check:6.1f} us")


if __name__ == "__main__":
    main()
