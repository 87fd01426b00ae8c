"""Retention: the pure decision as a table, then PartitionLog.apply_retention on real files."""

from __future__ import annotations

from pathlib import Path

import pytest

from conveyor.protocol.errors import OffsetOutOfRangeError
from conveyor.storage import SegmentInfo, segments_to_delete
from tests.unit.storage.helpers import (
    LogFactory,
    ManualClock,
    batch_bounds,
    make_batch,
    read_all,
    records,
    values_of,
)

S = SegmentInfo
THREE = [S(0, 100, 10), S(10, 100, 20), S(20, 100, 30)]  # the docstring's worked example

RETENTION_TABLE = [
    # (segments, retention_bytes, retention_ms, now_ms, deleted)
    pytest.param(THREE, 150, -1, 40, 1, id="docstring-by-size"),
    pytest.param(THREE, -1, 15, 40, 2, id="docstring-by-age"),
    pytest.param(THREE, 150, 15, 40, 2, id="docstring-both-take-the-larger"),
    pytest.param(THREE, -1, -1, 10**9, 0, id="unlimited"),
    pytest.param(THREE, 300, -1, 0, 0, id="exactly-at-the-size-limit"),
    pytest.param(THREE, 299, -1, 0, 0, id="one-byte-over-keeps-what-is-needed"),
    pytest.param(THREE, 200, -1, 0, 1, id="size-leaves-exactly-the-limit"),
    pytest.param(THREE, 0, -1, 0, 3, id="zero-bytes-deletes-everything"),
    pytest.param(THREE, -1, 0, 30, 2, id="timestamp-equal-to-cutoff-is-kept"),
    pytest.param(THREE, -1, 0, 31, 3, id="all-expired"),
    pytest.param(THREE, -1, 100, 40, 0, id="nothing-old-enough"),
    pytest.param([], 0, 0, 100, 0, id="no-segments"),
    pytest.param([S(0, 100, 50), S(10, 100, 10)], -1, 10, 45, 0, id="age-stops-early"),
    pytest.param([S(0, 100, 10), S(10, 0, -1)], -1, 5, 100, 1, id="empty-active-never-expires"),
    pytest.param([S(0, 100, 10), S(10, 0, -1)], 0, -1, 100, 1, id="empty-active-not-by-size"),
    pytest.param([S(0, 50, 1), S(5, 500, 2), S(9, 10, 3)], 400, -1, 0, 1, id="size-big-middle"),
]  # fmt: skip


@pytest.mark.parametrize(
    ("segments", "retention_bytes", "retention_ms", "now_ms", "deleted"), RETENTION_TABLE
)
def test_segments_to_delete(
    segments: list[SegmentInfo], retention_bytes: int, retention_ms: int, now_ms: int, deleted: int
) -> None:
    assert (
        segments_to_delete(
            segments, retention_bytes=retention_bytes, retention_ms=retention_ms, now_ms=now_ms
        )
        == deleted
    )


# ---- apply_retention on a real log ------------------------------------------------------


def test_retention_by_size_moves_log_start(make_log: LogFactory, tmp_path: Path) -> None:
    log = make_log(segment_bytes_max=1024, retention_bytes=2000, retention_ms=-1)
    for i in range(30):
        log.append(make_batch(values_of(2, f"r{i}-", 40), timestamp_ms=1000 + i))
    infos = log.segment_infos()
    expected = segments_to_delete(infos, retention_bytes=2000, retention_ms=-1, now_ms=0)
    assert 0 < expected < len(infos) - 1
    end = log.log_end_offset
    assert log.apply_retention() == expected
    assert log.log_start_offset == infos[expected].base_offset
    assert log.log_end_offset == end
    assert log.size_bytes >= 2000
    assert log.size_bytes - log.segment_infos()[0].size_bytes < 2000
    remaining = sorted(p.name for p in (tmp_path / "log").glob("*.log"))
    assert remaining == [f"{i.base_offset:020d}.log" for i in infos[expected:]]
    with pytest.raises(OffsetOutOfRangeError) as caught:
        log.read(log.log_start_offset - 1, 1 << 20)
    assert caught.value.log_start_offset == log.log_start_offset
    offsets = [o for chunk in read_all(log) for o, _, _ in records(chunk)]
    assert offsets == list(range(log.log_start_offset, end))
    assert log.apply_retention() == 0


def test_retention_by_age(make_log: LogFactory, clock: ManualClock) -> None:
    log = make_log(segment_bytes_max=1024, retention_ms=100)
    for i in range(30):  # batch i stamped 1000 + i
        log.append(make_batch(values_of(2, f"a{i}-", 40), timestamp_ms=1000 + i))
    infos = log.segment_infos()
    assert len(infos) >= 4
    # at now = second segment's max timestamp + 100, only the first has expired
    now = infos[1].max_timestamp_ms + 100
    assert log.apply_retention(now) == 1
    assert log.log_start_offset == infos[1].base_offset
    clock.now = infos[2].max_timestamp_ms + 101  # the injected clock is the default now
    assert log.apply_retention() == 2
    assert log.log_start_offset == infos[3].base_offset


def test_everything_expired_rolls_the_active_segment(make_log: LogFactory, tmp_path: Path) -> None:
    log = make_log(segment_bytes_max=1024, retention_ms=100)
    for i in range(30):
        log.append(make_batch(values_of(2, f"e{i}-", 40), timestamp_ms=1000 + i))
    count = log.segment_count
    end = log.log_end_offset
    assert log.apply_retention(10**6) == count
    assert (log.log_start_offset, log.log_end_offset) == (end, end)
    assert log.segment_count == 1
    assert sorted(p.name for p in (tmp_path / "log").glob("*.log")) == [f"{end:020d}.log"]
    assert log.read(end, 1 << 20) == b""
    with pytest.raises(OffsetOutOfRangeError):
        log.read(end - 1, 1 << 20)
    assert log.append(make_batch(values_of(3))) == (end, end + 2)
    log.close()
    reopened = make_log(segment_bytes_max=1024, retention_ms=100)
    assert (reopened.log_start_offset, reopened.log_end_offset) == (end, end + 3)
    assert batch_bounds(reopened.read(end, 1 << 20)) == [(end, end + 2)]


def test_retention_survives_reopen(make_log: LogFactory) -> None:
    log = make_log(segment_bytes_max=1024, retention_bytes=1500, retention_ms=-1)
    for i in range(30):
        log.append(make_batch(values_of(2, f"s{i}-", 40)))
    log.apply_retention()
    start, end = log.log_start_offset, log.log_end_offset
    assert start > 0
    log.close()
    reopened = make_log(segment_bytes_max=1024, retention_bytes=1500, retention_ms=-1)
    assert (reopened.log_start_offset, reopened.log_end_offset) == (start, end)
    assert reopened.apply_retention() == 0
    offsets = [o for chunk in read_all(reopened) for o, _, _ in records(chunk)]
    assert offsets == list(range(start, end))
