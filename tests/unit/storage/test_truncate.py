"""PartitionLog.truncate_to: inside a segment, at a segment boundary, below the log start."""

from __future__ import annotations

from pathlib import Path

import pytest

from conveyor.storage import PartitionLog
from tests.unit.storage.helpers import (
    LogFactory,
    batch_bounds,
    file_sizes,
    make_batch,
    read_all,
    records,
    values_of,
)

BIG = 1 << 20


def fill(make_log: LogFactory, batches: int = 30) -> PartitionLog:
    """Batch i holds offsets 3i..3i+2; segments of about six batches."""
    log = make_log(segment_bytes_max=1024, index_interval_bytes=200)
    for i in range(batches):
        log.append(make_batch(values_of(3, f"b{i}-", 20)))
    assert log.segment_count >= 4
    return log


def offsets(log: PartitionLog) -> list[int]:
    return [o for chunk in read_all(log) for o, _, _ in records(chunk)]


def log_files(directory: Path) -> list[str]:
    return sorted(p.name for p in directory.glob("*.log"))


def test_truncate_inside_a_segment_at_a_batch_boundary(
    make_log: LogFactory, tmp_path: Path
) -> None:
    log = fill(make_log)
    infos = log.segment_infos()
    target = infos[1].base_offset + 6  # the third batch of the second segment
    assert target < infos[2].base_offset
    log.truncate_to(target)
    assert (log.log_start_offset, log.log_end_offset) == (0, target)
    assert log.segment_count == 2
    assert log_files(tmp_path / "log") == [f"{i.base_offset:020d}.log" for i in infos[:2]]
    assert offsets(log) == list(range(target))
    assert log.append(make_batch(values_of(2, "new"))) == (target, target + 1)
    assert records(log.read(target, BIG))[0] == (target, None, values_of(2, "new")[0])


@pytest.mark.parametrize("inside", [1, 2])
def test_truncate_inside_a_batch_removes_the_whole_batch(make_log: LogFactory, inside: int) -> None:
    log = fill(make_log)
    log.truncate_to(30 + inside)  # inside the batch 30..32
    assert log.log_end_offset == 30
    assert offsets(log) == list(range(30))


def test_truncate_at_a_segment_boundary_deletes_later_segments(
    make_log: LogFactory, tmp_path: Path
) -> None:
    log = fill(make_log)
    infos = log.segment_infos()
    boundary = infos[2].base_offset
    log.truncate_to(boundary)
    assert log.log_end_offset == boundary
    assert [i.base_offset for i in log.segment_infos()] == [i.base_offset for i in infos[:2]]
    assert log.segment_infos()[-1].size_bytes == infos[1].size_bytes
    assert log_files(tmp_path / "log") == [f"{i.base_offset:020d}.log" for i in infos[:2]]
    assert offsets(log) == list(range(boundary))
    # the second segment is active again: appends go on into it
    log.append(make_batch(values_of(1)))
    assert log.segment_count in (2, 3)
    assert offsets(log) == list(range(boundary + 1))


def test_truncate_at_or_beyond_the_end_changes_nothing(
    make_log: LogFactory, tmp_path: Path
) -> None:
    log = fill(make_log)
    before = file_sizes(tmp_path / "log")
    log.truncate_to(log.log_end_offset)
    log.truncate_to(log.log_end_offset + 100)
    assert file_sizes(tmp_path / "log") == before


@pytest.mark.parametrize("below", [0, 1, 50])
def test_truncate_at_or_below_log_start_restarts_the_log_there(
    make_log: LogFactory, tmp_path: Path, below: int
) -> None:
    log = make_log(segment_bytes_max=1024, retention_bytes=1000, retention_ms=-1)
    for i in range(30):
        log.append(make_batch(values_of(3, f"b{i}-", 20)))
    log.apply_retention()
    start = log.log_start_offset
    assert start > 50
    target = start - below
    log.truncate_to(target)
    assert (log.log_start_offset, log.log_end_offset) == (target, target)
    assert log.segment_count == 1
    assert log_files(tmp_path / "log") == [f"{target:020d}.log"]
    assert log.read(target, BIG) == b""
    assert log.append(make_batch(values_of(2))) == (target, target + 1)
    log.close()
    reopened = make_log(segment_bytes_max=1024)
    assert (reopened.log_start_offset, reopened.log_end_offset) == (target, target + 2)
    assert batch_bounds(reopened.read(target, BIG)) == [(target, target + 1)]


def test_truncate_to_zero_empties_the_log(make_log: LogFactory, tmp_path: Path) -> None:
    log = fill(make_log)
    log.truncate_to(0)
    assert (log.log_start_offset, log.log_end_offset) == (0, 0)
    assert file_sizes(tmp_path / "log") == {
        "00000000000000000000.index": 0,
        "00000000000000000000.log": 0,
        "00000000000000000000.timeindex": 0,
        "00000000000000000000.txnindex": 16,  # its header: nothing open, no entry
        "leader-epoch-checkpoint": 0,  # no epoch left either
    }


def test_truncation_survives_reopen(make_log: LogFactory) -> None:
    log = fill(make_log)
    log.truncate_to(40)  # inside batch 39..41
    log.append(make_batch(values_of(4, "after")))
    expected = list(read_all(log))
    log.close()
    reopened = make_log(segment_bytes_max=1024, index_interval_bytes=200)
    assert reopened.log_end_offset == 43
    assert list(read_all(reopened)) == expected
    assert [v for o, _, v in records(b"".join(expected)) if o >= 39] == values_of(4, "after")


def test_truncated_time_index_answers_for_what_remains(make_log: LogFactory) -> None:
    log = make_log(segment_bytes_max=1024, index_interval_bytes=100)
    for i in range(30):
        log.append(make_batch(values_of(3, f"t{i}-", 20), timestamp_ms=1000 + i))
    log.truncate_to(45)  # batches 0..14 remain
    assert log.offset_for_timestamp(1014) == 42
    assert log.offset_for_timestamp(1015) is None
    log.append(make_batch(values_of(3), timestamp_ms=1010))
    assert log.offset_for_timestamp(1015) is None
    assert log.offset_for_timestamp(1014) == 42
    log.append(make_batch(values_of(3), timestamp_ms=1020))
    assert log.offset_for_timestamp(1015) == 48
