"""Child process of the transaction kill test: transactional batches, COMMIT and ABORT
markers and plain batches for ever, each acknowledged once durable.

    python txn_appender.py DIRECTORY SEED

Prints one line per durable append, flushed at once::

    base_offset kind producer_id

with kind ``data``, ``plain``, ``commit`` or ``abort``.
"""

from __future__ import annotations

import random
import sys

from conveyor.protocol.records import BatchBuilder, encode_batch
from conveyor.protocol.txn import marker_batch
from conveyor.storage import LogConfig, PartitionLog

SEGMENT_BYTES_MAX = 4096
PRODUCERS = 4


def txn_batch(producer_id: int, count: int) -> bytes:
    builder = BatchBuilder()
    builder.set_producer(producer_id, 0, 0, transactional=True)
    for i in range(count):
        builder.append(b"v%d" % i, timestamp_ms=1)
    return builder.build()


def main(directory: str, seed: int) -> None:
    rng = random.Random(seed)
    log = PartitionLog.open(directory, LogConfig(segment_bytes_max=SEGMENT_BYTES_MAX))
    print("ready", log.log_end_offset, flush=True)
    while True:
        kind = rng.choice(("data", "data", "plain", "commit", "abort", "abort"))
        pid = rng.randrange(PRODUCERS)
        if kind == "data":
            result = log.append(txn_batch(pid, rng.randint(1, 4)))
        elif kind == "plain":
            result = log.append(encode_batch([(None, rng.randbytes(rng.randint(0, 300)))]))
        else:
            marker = marker_batch(pid, 0, kind == "commit", 0, 1)
            result = log.append(marker, allow_control=True)
        log.durable(result.last_offset).result(timeout=30)
        print(result.base_offset, kind, pid, flush=True)


if __name__ == "__main__":
    main(sys.argv[1], int(sys.argv[2]))
