"""Deleting records up to an offset (PartitionLog.advance_start): the log start offset inside
a segment and inside a batch, its checkpoint across reopens and crashes, and how it meets
retention, truncation, compaction, the epoch cache and a follower's first append."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from conveyor.protocol.errors import OffsetOutOfRangeError
from conveyor.storage import PartitionLog, SegmentInfo, logstart
from conveyor.storage.cleaner import clean_log
from conveyor.storage.epochs import EpochCache, EpochEntry
from conveyor.storage.log import CLEAN_SHUTDOWN_FILE
from conveyor.storage.retention import segments_below_start
from tests.unit.storage.helpers import (
    TIMESTAMP_MS,
    LogFactory,
    ManualClock,
    batch_bounds,
    make_batch,
    read_all,
    records,
    values_of,
)

BIG = 1 << 20


def fill(make_log: LogFactory, batches: int = 30, **config: object) -> PartitionLog:
    """Batch i holds offsets 3i..3i+2; segments of about six batches."""
    config.setdefault("segment_bytes_max", 1024)
    log = make_log(index_interval_bytes=200, **config)
    for i in range(batches):
        log.append(make_batch(values_of(3, f"b{i}-", 20), timestamp_ms=TIMESTAMP_MS + i))
    return log


def offsets(log: PartitionLog) -> list[int]:
    return [o for chunk in read_all(log) for o, _, _ in records(chunk) if o >= log.log_start_offset]


def segment_files(directory: Path) -> list[int]:
    return sorted(int(p.stem) for p in directory.glob("*.log"))


def test_the_start_moves_inside_a_batch_and_reads_below_it_are_out_of_range(
    make_log: LogFactory, tmp_path: Path
) -> None:
    log = fill(make_log)
    infos = log.segment_infos()
    assert len(infos) >= 4
    target = infos[2].base_offset + 4  # inside a batch of the third segment
    assert log.advance_start(target) == target
    assert (log.log_start_offset, log.log_end_offset) == (target, 90)
    # the two segments wholly below the start are gone, files included
    assert segment_files(tmp_path / "log") == [i.base_offset for i in infos[2:]]
    with pytest.raises(OffsetOutOfRangeError) as caught:
        log.read(target - 1, BIG)
    assert (caught.value.log_start_offset, caught.value.log_end_offset) == (target, 90)
    # a read at the start returns the whole batch holding it (the client skips below)
    first = batch_bounds(log.read(target, BIG))[0]
    assert first == (target - target % 3, target - target % 3 + 2)
    assert offsets(log) == list(range(target, 90))


def test_the_start_never_moves_back_and_not_beyond_the_log_end(make_log: LogFactory) -> None:
    log = fill(make_log)
    log.advance_start(40)
    assert log.advance_start(10) == 40
    assert log.advance_start(40) == 40
    with pytest.raises(OffsetOutOfRangeError):
        log.advance_start(91)
    assert (log.log_start_offset, log.log_end_offset) == (40, 90)


def test_deleting_everything_leaves_one_empty_segment_at_the_end(
    make_log: LogFactory, tmp_path: Path
) -> None:
    log = fill(make_log)
    assert log.advance_start(90) == 90
    assert segment_files(tmp_path / "log") == [90]
    assert log.read(90, BIG) == b""
    assert log.append(make_batch(values_of(2))) == (90, 91)
    assert offsets(log) == [90, 91]


@pytest.mark.parametrize("crash", [False, True])
def test_the_start_survives_a_reopen_and_a_crash(
    make_log: LogFactory, tmp_path: Path, crash: bool
) -> None:
    log = fill(make_log)
    log.advance_start(47)
    directory = tmp_path / "log"
    if crash:  # the files as a killed process leaves them (no clean-shutdown marker)
        shutil.copytree(directory, tmp_path / "copy")
        log.close()
        directory = tmp_path / "copy"
        assert not (directory / CLEAN_SHUTDOWN_FILE).exists()
    else:
        log.close()
    reopened = make_log(directory, segment_bytes_max=1024, index_interval_bytes=200)
    assert (reopened.log_start_offset, reopened.log_end_offset) == (47, 90)
    assert offsets(reopened) == list(range(47, 90))
    with pytest.raises(OffsetOutOfRangeError):
        reopened.read(46, BIG)


def test_a_crash_after_the_checkpoint_deletes_the_segments_on_open(
    make_log: LogFactory, tmp_path: Path
) -> None:
    log = fill(make_log)
    infos = log.segment_infos()
    log.close()
    # the commit point was reached, the segments were not deleted yet
    logstart.write_checkpoint(tmp_path / "log", infos[3].base_offset + 1)
    reopened = make_log(segment_bytes_max=1024, index_interval_bytes=200)
    assert reopened.log_start_offset == infos[3].base_offset + 1
    assert segment_files(tmp_path / "log") == [i.base_offset for i in infos[3:]]


@pytest.mark.parametrize("clean", [True, False])
def test_a_crash_after_deleting_everything_rolls_an_empty_segment_on_open(
    make_log: LogFactory, tmp_path: Path, clean: bool
) -> None:
    """The checkpoint at the log end, every segment still there (a kill between the two,
    tests/crash/test_log_start_kill.py): the open drops them all behind a new empty
    segment, which needs the active segment's transactions loaded first."""
    log = fill(make_log)
    end = log.log_end_offset
    log.close()
    if not clean:
        (tmp_path / "log" / CLEAN_SHUTDOWN_FILE).unlink()
    logstart.write_checkpoint(tmp_path / "log", end)
    reopened = make_log(segment_bytes_max=1024, index_interval_bytes=200)
    assert (reopened.log_start_offset, reopened.log_end_offset) == (end, end)
    assert segment_files(tmp_path / "log") == [end]
    assert reopened.append(make_batch(values_of(1))) == (end, end)


def test_a_checkpoint_beyond_the_log_end_empties_the_log_there(
    make_log: LogFactory, tmp_path: Path
) -> None:
    log = fill(make_log)
    log.close()
    logstart.write_checkpoint(tmp_path / "log", 120)  # more than the log holds
    reopened = make_log(segment_bytes_max=1024, index_interval_bytes=200)
    assert (reopened.log_start_offset, reopened.log_end_offset) == (120, 120)
    assert reopened.latest_epoch == -1
    assert reopened.append(make_batch(values_of(1))) == (120, 120)


def test_retention_keeps_a_start_inside_a_segment_and_moves_past_it(
    make_log: LogFactory, clock: ManualClock
) -> None:
    log = fill(make_log, retention_bytes=2000)
    log.advance_start(4)
    assert log.log_start_offset == 4
    assert log.apply_retention() > 0  # by size: whole segments
    assert log.log_start_offset == log.segment_infos()[0].base_offset > 4


def test_the_epoch_cache_follows_the_start(make_log: LogFactory) -> None:
    log = make_log(segment_bytes_max=1024)
    for epoch in (1, 2, 3):
        for _ in range(10):
            log.append(make_batch(values_of(3)), leader_epoch=epoch)
    log.advance_start(70)  # inside epoch 3 (from 60)
    assert log.epochs.entries == [EpochEntry(3, 70)]
    assert log.end_offset_for_epoch(2) == (-1, -1)  # nothing of epoch 2 is left
    assert log.end_offset_for_epoch(3) == (3, 90)


def test_offset_for_timestamp_never_answers_below_the_start(make_log: LogFactory) -> None:
    log = fill(make_log)
    log.advance_start(31)  # inside batch 10 (30..32, timestamp +10)
    assert log.offset_for_timestamp(TIMESTAMP_MS) == 30  # its batch: records >= 31 count
    assert log.offset_for_timestamp(TIMESTAMP_MS, min_offset=33) == 33
    assert log.offset_for_timestamp(TIMESTAMP_MS + 20) == 60


def test_truncating_below_the_start_lowers_it_durably(make_log: LogFactory, tmp_path: Path) -> None:
    log = fill(make_log)
    log.advance_start(50)
    log.truncate_to(40)
    assert (log.log_start_offset, log.log_end_offset) == (40, 40)
    log.close()
    assert logstart.read_checkpoint(tmp_path / "log") == 40
    reopened = make_log(segment_bytes_max=1024, index_interval_bytes=200)
    assert (reopened.log_start_offset, reopened.log_end_offset) == (40, 40)


def test_truncating_inside_the_batch_holding_the_start_restarts_at_the_start(
    make_log: LogFactory,
) -> None:
    log = fill(make_log)
    log.advance_start(49)  # batch 48..50
    log.truncate_to(50)  # the cut would fall at 48, below the start
    assert (log.log_start_offset, log.log_end_offset) == (49, 49)


def test_a_follower_restarted_inside_a_batch_takes_that_batch_whole(
    make_log: LogFactory, tmp_path: Path
) -> None:
    leader = fill(make_log, segment_bytes_max=1 << 20)
    leader.advance_start(31)
    follower = make_log(tmp_path / "follower", segment_bytes_max=1 << 20)
    follower.reset_to(leader.log_start_offset)  # as a follower whose fetch was out of range
    data = leader.read(31, BIG)
    assert batch_bounds(data)[0] == (30, 32)
    follower.append_replicated(data)
    assert (follower.log_start_offset, follower.log_end_offset) == (31, 90)
    assert follower.read(31, BIG) == leader.read(31, BIG)
    with pytest.raises(OffsetOutOfRangeError):
        follower.read(30, BIG)
    follower.close()
    reopened = make_log(tmp_path / "follower", segment_bytes_max=1 << 20)
    assert (reopened.log_start_offset, reopened.log_end_offset) == (31, 90)


def test_compaction_after_deleting_records_keeps_them_deleted(
    make_log: LogFactory, tmp_path: Path
) -> None:
    log = make_log(cleanup_policy="compact", segment_bytes_max=1024, index_interval_bytes=100)
    for r in range(20):
        for k in range(4):
            log.append(make_batch([f"r{r}".encode() * 10], key=f"k{k}".encode()))
    log.advance_start(41)
    stats = clean_log(log, now_ms=TIMESTAMP_MS)
    assert stats.bytes_read > 0
    assert log.log_start_offset == 41
    with pytest.raises(OffsetOutOfRangeError):
        log.read(40, BIG)
    seen = offsets(log)
    assert seen and min(seen) >= 41
    assert seen[-4:] == [76, 77, 78, 79]  # every key's latest value survives


# ---- the pure rules ------------------------------------------------------------------------


def infos(*bases_and_sizes: tuple[int, int]) -> list[SegmentInfo]:
    return [SegmentInfo(base, size, 0) for base, size in bases_and_sizes]


@pytest.mark.parametrize(
    ("start", "end", "expected"),
    [
        (0, 120, 0),
        (49, 120, 0),  # the second segment starts at 50: the first still holds 49
        (50, 120, 1),
        (60, 120, 1),  # the worked example
        (90, 120, 2),
        (119, 120, 2),
        (120, 120, 3),  # the log end: every segment (the caller rolls an empty one first)
    ],
)
def test_segments_below_start(start: int, end: int, expected: int) -> None:
    segments = infos((0, 100), (50, 100), (90, 100))
    assert segments_below_start(segments, log_start_offset=start, log_end_offset=end) == expected


def test_an_empty_last_segment_at_the_start_stays() -> None:
    segments = infos((0, 100), (120, 0))
    assert segments_below_start(segments, log_start_offset=120, log_end_offset=120) == 1


@pytest.mark.parametrize(
    ("offset", "expected"),
    [
        (0, [(0, 0), (2, 120), (5, 300)]),
        (100, [(0, 100), (2, 120), (5, 300)]),
        (120, [(2, 120), (5, 300)]),
        (150, [(2, 150), (5, 300)]),  # the docstring's example
        (400, [(5, 400)]),
    ],
)
def test_epoch_cache_truncate_from_start(
    tmp_path: Path, offset: int, expected: list[tuple[int, int]]
) -> None:
    cache = EpochCache(tmp_path, [EpochEntry(0, 0), EpochEntry(2, 120), EpochEntry(5, 300)])
    changed = cache.truncate_from_start(offset)
    assert cache.entries == [EpochEntry(*e) for e in expected]
    assert changed == (offset != 0)


def test_checkpoint_files_tolerate_garbage(tmp_path: Path) -> None:
    assert logstart.read_checkpoint(tmp_path) == 0
    (tmp_path / logstart.CHECKPOINT_FILE).write_text("not a number\n")
    assert logstart.read_checkpoint(tmp_path) == 0
    logstart.write_checkpoint(tmp_path, 42)
    assert logstart.read_checkpoint(tmp_path) == 42
    assert logstart.effective_start(42, 10) == 42
    assert logstart.effective_start(42, 50) == 50
