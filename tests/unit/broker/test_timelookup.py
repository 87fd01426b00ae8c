"""Offsets by time never answer a deleted record (broker/timelookup.py, on a real log)."""

from __future__ import annotations

from pathlib import Path

from conveyor.broker.timelookup import first_record_at, max_timestamp_record
from conveyor.protocol.records import BatchBuilder
from conveyor.storage import PartitionLog

T0 = 1_700_000_000_000


def batch(*timestamps: int) -> bytes:
    builder = BatchBuilder()
    for ts in timestamps:
        builder.append(b"v", timestamp_ms=ts)
    return builder.build()


def test_records_below_the_start_are_skipped(tmp_path: Path) -> None:
    with PartitionLog.open(tmp_path / "log") as log:
        log.append(batch(T0, T0 + 50, T0 + 10))  # offsets 0-2: the late record is at 1
        log.append(batch(T0 + 20, T0 + 60))  # offsets 3-4
        end = log.log_end_offset
        assert first_record_at(log, T0 + 40, end) == (1, T0 + 50)
        log.advance_start(2)  # offset 1 is deleted, its batch (0-2) stays on disk
        assert first_record_at(log, T0 + 40, end) == (4, T0 + 60)  # the next batch
        assert first_record_at(log, T0 + 5, end) == (2, T0 + 10)
        assert first_record_at(log, T0 + 61, end) is None
        assert first_record_at(log, T0 + 40, upper_offset=4) is None  # 4 not visible yet
        assert max_timestamp_record(log, end) == (T0 + 60, 4)
