"""Child process of the kill test: append batches for ever and acknowledge the durable ones.

    python appender.py DIRECTORY SEED

Uses the default ``always`` flush policy. For every append it waits for
``log.durable(last_offset)`` and then prints one line, flushed at once::

    base_offset last_offset sha256-of-the-values

Record values are ``b"<offset>:<random bytes>"``, so a reader can check each one sits at
the offset it was written for. Some appends carry several batches in one request.
"""

from __future__ import annotations

import hashlib
import random
import sys

from conveyor.protocol.records import encode_batch
from conveyor.storage import LogConfig, PartitionLog

SEGMENT_BYTES_MAX = 16 * 1024
INDEX_INTERVAL_BYTES = 512


def values_digest(values: list[bytes]) -> str:
    digest = hashlib.sha256()
    for value in values:
        digest.update(len(value).to_bytes(4, "big"))
        digest.update(value)
    return digest.hexdigest()


def main(directory: str, seed: int) -> None:
    rng = random.Random(seed)
    config = LogConfig(
        segment_bytes_max=SEGMENT_BYTES_MAX, index_interval_bytes=INDEX_INTERVAL_BYTES
    )
    log = PartitionLog.open(directory, config)
    print("ready", log.log_end_offset, flush=True)
    while True:
        offset = log.log_end_offset  # the only writer: the log will assign these offsets
        bodies, values = [], []
        for _ in range(rng.choice((1, 1, 1, 2, 3))):
            batch_values = []
            for _ in range(rng.randint(1, 20)):
                batch_values.append(f"{offset}:".encode() + rng.randbytes(rng.randint(0, 300)))
                offset += 1
            bodies.append(encode_batch([(None, v) for v in batch_values]))
            values += batch_values
        result = log.append(b"".join(bodies))
        log.durable(result.last_offset).result(timeout=30)
        print(result.base_offset, result.last_offset, values_digest(values), flush=True)


if __name__ == "__main__":
    main(sys.argv[1], int(sys.argv[2]))
