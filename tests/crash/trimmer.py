"""Child process of the log-start kill test: appends batches and deletes records up to a
random offset now and then; acknowledges both once durable.

    python trimmer.py DIRECTORY SEED

Prints, flushed at once::

    a base_offset last_offset     an append, once ``log.durable(last_offset)`` resolved
    s offset                      ``advance_start(offset)`` returned (the start is durable)

Record values are ``b"<offset>:<random bytes>"``, so a reader can check each one sits at
the offset it was written for. Starts land anywhere, inside batches and segments.
"""

from __future__ import annotations

import random
import sys

from conveyor.protocol.records import encode_batch
from conveyor.storage import LogConfig, PartitionLog

CONFIG = LogConfig(segment_bytes_max=4096, index_interval_bytes=512)


def main(directory: str, seed: int) -> None:
    rng = random.Random(seed)
    log = PartitionLog.open(directory, CONFIG)
    print("ready", log.log_start_offset, log.log_end_offset, flush=True)
    while True:
        if rng.random() < 0.2 and log.log_end_offset > log.log_start_offset:
            offset = rng.randint(log.log_start_offset, log.log_end_offset)
            print("s", log.advance_start(offset), flush=True)
            continue
        offset = log.log_end_offset  # the only writer: the log will assign these offsets
        values = [
            f"{offset + i}:".encode() + rng.randbytes(rng.randint(0, 200))
            for i in range(rng.randint(1, 12))
        ]
        result = log.append(encode_batch([(None, v) for v in values]))
        log.durable(result.last_offset).result(timeout=30)
        print("a", result.base_offset, result.last_offset, flush=True)


if __name__ == "__main__":
    main(sys.argv[1], int(sys.argv[2]))
