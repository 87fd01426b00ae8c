"""Record codec throughput: the pure-Python codec against the compiled one, in one run.

1,000,000 records of 100 B over 8 keys, in batches of BATCH_RECORDS (a producer's 1 MiB
batch.size holds ~7,000 of them), encoded with each builder and decoded with each decoder;
medians of 3 runs, with the load average printed alongside (docs/benchmarks.md).

    nice -n 10 .venv/bin/python scripts/bench_codec.py [--records N]
"""

from __future__ import annotations

import argparse
import os
import statistics
import time
from collections.abc import Callable

from conveyor.protocol.fastrecords import COMPILED, PYTHON, RecordCodec, compiled_available
from conveyor.protocol.records import Codec

BATCH_RECORDS = 7_000
VALUE = b"x" * 100
KEYS = [f"key-{n}".encode() for n in range(8)]
RUNS = 3


def encode(codec: RecordCodec, records: int) -> list[bytes]:
    batches = []
    timestamp_ms = int(time.time() * 1000)
    for start in range(0, records, BATCH_RECORDS):
        builder = codec.new_builder(Codec.NONE)
        append = builder.append
        for n in range(start, min(start + BATCH_RECORDS, records)):
            append(VALUE, KEYS[n & 7], (), timestamp_ms)
        batches.append(builder.build())
    return batches


def decode(codec: RecordCodec, batches: list[bytes]) -> int:
    return sum(len(codec.decode(batch)) for batch in batches)


def median_rate(run: Callable[[], object], records: int) -> float:
    rates = []
    for _ in range(RUNS):
        began = time.perf_counter()
        run()
        rates.append(records / (time.perf_counter() - began))
    return statistics.median(rates)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--records", type=int, default=1_000_000)
    records = parser.parse_args().records
    if not compiled_available():
        raise SystemExit("aiokafka's compiled extension is not installed")
    print(f"load before: {os.getloadavg()[0]:.2f}")
    batches = encode(PYTHON, records)
    assert encode(COMPILED, records)[0][:8] == batches[0][:8]
    rows = {}
    for codec in (PYTHON, COMPILED):
        rows[codec.name] = (
            median_rate(lambda c=codec: encode(c, records), records),
            median_rate(lambda c=codec: decode(c, batches), records),
        )
    for name, (encode_rate, decode_rate) in rows.items():
        print(f"{name:9} encode {encode_rate:>12,.0f} rec/s   decode {decode_rate:>12,.0f} rec/s")
    python_encode, python_decode = rows["python"]
    compiled_encode, compiled_decode = rows["compiled"]
    print(
        f"compiled/python: encode {compiled_encode / python_encode:.2f}x, "
        f"decode {compiled_decode / python_decode:.2f}x"
    )
    print(f"load after: {os.getloadavg()[0]:.2f}")


if __name__ == "__main__":
    main()
