"""Encode/decode cost of the Kafka wire types: kio 0.6.5 against kafka-python 3.0.

A Produce request (v9, flexible) and a Fetch response (v12, flexible) of 8 partitions x
16 KiB record batches, the shapes the broker decodes and encodes most. Prints microseconds
per message (median of 5 rounds). Run: ``.venv/bin/python scripts/bench_kafka_codec.py``.
"""

from __future__ import annotations

import datetime
import io
import statistics
import time
from collections.abc import Callable

PARTITIONS = 8
BATCH = bytes(16 * 1024)
SHAPES = ((8, 16 * 1024), (1, 100))  # (partitions, batch bytes): typical load, W3


def _time_us(fn: Callable[[], object], rounds: int = 5, loops: int = 2000) -> float:
    samples = []
    for _ in range(rounds):
        start = time.perf_counter()
        for _ in range(loops):
            fn()
        samples.append((time.perf_counter() - start) / loops * 1e6)
    return statistics.median(samples)


def bench_kio(PARTITIONS: int, BATCH: bytes) -> dict[str, float]:
    from kio.schema.fetch.v12 import response as fres
    from kio.schema.produce.v9 import request as preq
    from kio.serial import entity_reader, entity_writer
    from kio.schema.errors import ErrorCode
    from kio.static.primitive import i16, i32, i32Timedelta, i64

    produce = preq.ProduceRequest(
        transactional_id=None,
        acks=i16(-1),
        timeout=i32Timedelta.parse(datetime.timedelta(seconds=30)),
        topic_data=(
            preq.TopicProduceData(
                name="bench",  # type: ignore[arg-type]
                partition_data=tuple(
                    preq.PartitionProduceData(index=i32(p), records=BATCH)  # type: ignore[arg-type]
                    for p in range(PARTITIONS)
                ),
            ),
        ),
    )
    fetch = fres.FetchResponse(
        throttle_time=i32Timedelta.parse(datetime.timedelta(0)),
        error_code=ErrorCode.none,
        session_id=i32(0),
        responses=(
            fres.FetchableTopicResponse(
                topic="bench",  # type: ignore[arg-type]
                partitions=tuple(
                    fres.PartitionData(
                        partition_index=i32(p),
                        error_code=ErrorCode.none,
                        high_watermark=i64(1000),
                        last_stable_offset=i64(1000),
                        log_start_offset=i64(0),
                        aborted_transactions=(),
                        preferred_read_replica=i32(-1),  # type: ignore[arg-type]
                        records=BATCH,  # type: ignore[arg-type]
                    )
                    for p in range(PARTITIONS)
                ),
            ),
        ),
    )
    write_p, read_p = entity_writer(preq.ProduceRequest), entity_reader(preq.ProduceRequest)
    write_f, read_f = entity_writer(fres.FetchResponse), entity_reader(fres.FetchResponse)

    def encode(writer: Callable[[io.BytesIO, object], None], value: object) -> bytes:
        buffer = io.BytesIO()
        writer(buffer, value)
        return buffer.getvalue()

    produce_bytes = encode(write_p, produce)  # type: ignore[arg-type]
    fetch_bytes = encode(write_f, fetch)  # type: ignore[arg-type]
    return {
        "produce decode": _time_us(lambda: read_p(produce_bytes, 0)),
        "produce encode": _time_us(lambda: encode(write_p, produce)),  # type: ignore[arg-type]
        "fetch decode": _time_us(lambda: read_f(fetch_bytes, 0)),
        "fetch encode": _time_us(lambda: encode(write_f, fetch)),  # type: ignore[arg-type]
    }


def bench_kafka_python(PARTITIONS: int, BATCH: bytes) -> dict[str, float]:
    from kafka.protocol.consumer import FetchResponse
    from kafka.protocol.producer import ProduceRequest

    produce_cls = ProduceRequest[9]
    fetch_cls = FetchResponse[12]
    produce = produce_cls(
        transactional_id=None,
        acks=-1,
        timeout_ms=30000,
        topic_data=[
            produce_cls.TopicProduceData(
                name="bench",
                partition_data=[
                    produce_cls.TopicProduceData.PartitionProduceData(index=p, records=BATCH)
                    for p in range(PARTITIONS)
                ],
            )
        ],
    )
    partition_cls = fetch_cls.FetchableTopicResponse.PartitionData
    fetch = fetch_cls(
        throttle_time_ms=0,
        error_code=0,
        session_id=0,
        responses=[
            fetch_cls.FetchableTopicResponse(
                topic="bench",
                partitions=[
                    partition_cls(
                        partition_index=p,
                        error_code=0,
                        high_watermark=1000,
                        last_stable_offset=1000,
                        log_start_offset=0,
                        aborted_transactions=[],
                        preferred_read_replica=-1,
                        records=BATCH,
                    )
                    for p in range(PARTITIONS)
                ],
            )
        ],
    )
    produce_bytes = produce.encode(version=9)
    fetch_bytes = fetch.encode(version=12)
    return {
        "produce decode": _time_us(lambda: produce_cls.decode(produce_bytes, version=9)),
        "produce encode": _time_us(lambda: produce.encode(version=9)),
        "fetch decode": _time_us(lambda: fetch_cls.decode(fetch_bytes, version=12)),
        "fetch encode": _time_us(lambda: fetch.encode(version=12)),
    }


_KIO_HOSTILE = """
from kio.index import load_request_schema
from kio.serial import entity_reader
entity_reader(load_request_schema(3, 12))(bytes([0xFF, 0xFF, 0xFF, 0xFF, 0x0F]), 0)
"""


def hostile_input_check() -> str:
    """A 5-byte Metadata v12 body whose topic array claims 2**32 - 2 entries: what does
    each decoder do? (A broker decodes untrusted bytes.)"""
    import subprocess
    import sys

    from kafka.protocol.metadata import MetadataRequest

    kio = subprocess.run([sys.executable, "-c", _KIO_HOSTILE], capture_output=True, check=False)
    try:
        MetadataRequest[12].decode(memoryview(bytes([0xFF, 0xFF, 0xFF, 0xFF, 0x0F])), version=12)
        kafka_python = "decoded"
    except Exception as exc:
        kafka_python = f"raised {type(exc).__name__}"
    return f"kio: exit status {kio.returncode} (negative: killed by signal); kafka-python: {kafka_python}"


def main() -> None:
    print(hostile_input_check())
    for partitions, size in SHAPES:
        batch = bytes(size)
        results = {
            "kio 0.6.5": bench_kio(partitions, batch),
            "kafka-python 3.0": bench_kafka_python(partitions, batch),
        }
        print(f"{partitions} partition(s) x {size} B batches, us per message")
        for key in next(iter(results.values())):
            print(f"  {key:<18}" + "".join(f"{r[key]:>12.1f} {n}" for n, r in results.items()))


if __name__ == "__main__":
    main()
