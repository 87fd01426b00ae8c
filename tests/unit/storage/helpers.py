"""Shared pieces of the storage tests: real batches and their offsets, opening logs.

The manual clock is ``tests.clock.ManualClock``; waiting is ``tests.waiting.wait_for``."""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path

from conveyor.chaos import diskfault
from conveyor.protocol.batch import (
    CRC_START,
    crc32c,
    parse_header,
)
from conveyor.protocol.records import decode_batches, encode_batch
from conveyor.storage import LogConfig, PartitionLog
from tests.clock import TIMESTAMP_MS, ManualClock

__all__ = ["TIMESTAMP_MS", "LogFactory", "ManualClock"]


LogFactory = Callable[..., PartitionLog]  # the make_log fixture: open_log with cleanup


def make_batch(
    values: Sequence[bytes], *, timestamp_ms: int = TIMESTAMP_MS, key: bytes | None = None
) -> bytes:
    return encode_batch([(key, value) for value in values], timestamp_ms=timestamp_ms)


def values_of(count: int, tag: str = "v", size_bytes: int = 8) -> list[bytes]:
    return [f"{tag}{i}:".encode().ljust(size_bytes, b".") for i in range(count)]


def records(data: bytes) -> list[tuple[int, bytes | None, bytes | None]]:
    """(offset, key, value) of every record, checking every CRC."""
    return [(r.offset, r.key, r.value) for r in decode_batches(data, verify_crc=True)]


def batch_bounds(data: bytes) -> list[tuple[int, int]]:
    """(base_offset, last_offset) of each whole batch in ``data``."""
    out, position = [], 0
    while position < len(data):
        header = parse_header(data, position)
        out.append((header.base_offset, header.last_offset))
        position += header.size_bytes
    return out


def with_crc(data: bytes | bytearray) -> bytes:
    """The batch with its CRC recomputed (to test checks that come before the CRC)."""
    out = bytearray(data)
    out[CRC_START - 4 : CRC_START] = crc32c(memoryview(out)[CRC_START:]).to_bytes(4, "big")
    return bytes(out)


def open_log(
    directory: Path,
    clock: Callable[[], int] | None = None,
    *,
    initial_offset: int = 0,
    **config: object,
) -> PartitionLog:
    return PartitionLog.open(
        directory,
        LogConfig(**config),  # type: ignore[arg-type]
        clock_ms=clock,
        initial_offset=initial_offset,
    )


def read_all(log: PartitionLog, max_bytes: int = 1 << 20) -> Iterator[bytes]:
    """Every batch chunk from the log start to the log end, in order."""
    offset = log.log_start_offset
    while offset < log.log_end_offset:
        data = log.read(offset, max_bytes)
        assert data, f"empty read at {offset} below log end {log.log_end_offset}"
        yield data
        offset = batch_bounds(data)[-1][1] + 1


def file_sizes(directory: Path) -> dict[str, int]:
    return {p.name: p.stat().st_size for p in sorted(directory.iterdir()) if p.is_file()}


def data_end(fd: int) -> int:
    """Where the whole batches at the start of a ``.log`` file end: its size but for the
    active segment's preallocated tail of zeros (segment.PREALLOCATE_BYTES)."""
    return diskfault.data_end(os.pread(fd, os.fstat(fd).st_size, 0))


def path_data_end(path: Path) -> int:
    fd = os.open(path, os.O_RDONLY)
    try:
        return data_end(fd)
    finally:
        os.close(fd)
