"""Child process of the compaction kill test: keyed writes to a compacted log while the
log cleaner runs as often as it can; acknowledges every durable batch.

    python compactor.py DIRECTORY SEED

For every append it waits for ``log.durable(last_offset)`` and then prints one line::

    base_offset key:version:kind key:version:kind ...   (kind: v a value, t a tombstone)

and, after an append during which the cleaner swapped cleaned segments in, one more::

    cleaned N            (N: segments swapped in since this process started)

Each record carries its version in a header ``v`` and its offset in a header ``o`` (the
only writer knows the offset the log will assign); a version of a key is a tombstone (null
value) one time in ten. Tombstones expire at once (``delete_retention_ms=0``), so a
cleaning may remove a deleted key entirely.
"""

from __future__ import annotations

import random
import sys

from conveyor.protocol.records import BatchBuilder
from conveyor.storage import LogConfig, PartitionLog
from conveyor.storage.cleaner import CleanerSettings, LogCleaner

SEGMENT_BYTES_MAX = 4096
KEYS = 20
CONFIG = LogConfig(
    segment_bytes_max=SEGMENT_BYTES_MAX,
    index_interval_bytes=256,
    cleanup_policy="compact",
    delete_retention_ms=0,
    min_cleanable_dirty_ratio=0.0,
)


def main(directory: str, seed: int, first_version: int) -> None:
    rng = random.Random(seed)
    log = PartitionLog.open(directory, CONFIG)
    cleaner = LogCleaner(CleanerSettings(backoff_ms=5, worker=True))  # as a broker runs it
    cleaner.add("log", log)
    cleaner.start()
    print("ready", log.log_end_offset, flush=True)
    version = first_version
    cleaned = 0
    while True:
        offset = log.log_end_offset  # the only writer: the log assigns these offsets
        builder = BatchBuilder()
        written = []
        for _ in range(rng.randint(1, 5)):
            key = f"k{rng.randrange(KEYS)}"
            value = None if rng.random() < 0.1 else f"{offset}:{key}".encode() + rng.randbytes(40)
            headers = (("v", str(version).encode()), ("o", str(offset).encode()))
            builder.append(value, key.encode(), headers, 0)
            written.append(f"{key}:{version}:{'t' if value is None else 'v'}")
            version += 1
            offset += 1
        result = log.append(builder.build())
        log.durable(result.last_offset).result(timeout=30)
        print(result.base_offset, *written, flush=True)
        if cleaner.totals.segments_cleaned > cleaned:
            cleaned = cleaner.totals.segments_cleaned
            print("cleaned", cleaned, flush=True)


if __name__ == "__main__":
    main(sys.argv[1], int(sys.argv[2]), int(sys.argv[3]))
