"""The cleaner's pure decisions: which log, which segments together, which records stay."""

from __future__ import annotations

import pytest

from conveyor.storage.compaction import (
    GROUP_OFFSET_SPAN_MAX,
    CleanableLog,
    OffsetMap,
    SegmentSpan,
    choose_log,
    dirty_split,
    group_segments,
    keep_emptied_batch,
    keep_record,
)

MIB = 1 << 20


def test_the_dirtiest_due_log_is_chosen_as_in_the_docstring() -> None:
    a = CleanableLog("A", clean_bytes=10 * MIB, dirty_bytes=30 * MIB, min_cleanable_dirty_ratio=0.5)
    b = CleanableLog("B", clean_bytes=0, dirty_bytes=4 * MIB, min_cleanable_dirty_ratio=0.5)
    c = CleanableLog("C", clean_bytes=50 * MIB, dirty_bytes=10 * MIB, min_cleanable_dirty_ratio=0.5)
    assert choose_log([a, b, c]) == b
    assert choose_log([a, c]) == a
    assert choose_log([c]) is None
    assert choose_log([CleanableLog("D", 5, 0, 0.0)]) is None  # nothing dirty at all


def test_ties_go_to_the_first_name() -> None:
    logs = [CleanableLog(name, 0, 10, 0.5) for name in ("t-2", "t-10", "t-1")]
    assert choose_log(logs) == logs[2]  # "t-1" sorts first


@pytest.mark.parametrize(
    ("cleaned_offset", "expected"),
    [(0, (0, 600)), (100, (100, 500)), (150, (100, 500)), (300, (600, 0)), (10**9, (600, 0))],
)
def test_dirty_split_counts_a_partly_dirty_segment_as_dirty(
    cleaned_offset: int, expected: tuple[int, int]
) -> None:
    segments = [
        SegmentSpan(0, 100, 100, 1),
        SegmentSpan(100, 200, 200, 2),
        SegmentSpan(200, 300, 300, 3),
    ]
    assert dirty_split(segments, cleaned_offset) == expected


def test_groups_stay_within_one_segment_size() -> None:
    segments = [
        SegmentSpan(i * 10, i * 10 + 10, size, 0)
        for i, size in enumerate([40, 50, 20, 90, 0, 0, 100])
    ]
    groups = group_segments(segments, end_offset=70, segment_bytes_max=100)
    assert [[s.base_offset for s in g] for g in groups] == [[0, 10], [20], [30, 40, 50], [60]]


def test_a_group_never_spans_more_offsets_than_an_index_holds() -> None:
    span = GROUP_OFFSET_SPAN_MAX // 2 + 1
    segments = [SegmentSpan(i * span, i * span + 1, 1, 0) for i in range(3)]
    groups = group_segments(segments, end_offset=3 * span, segment_bytes_max=10**9)
    assert [len(g) for g in groups] == [1, 1, 1]
    assert group_segments([], end_offset=0, segment_bytes_max=1) == []


NOW_MS = 10_000_000


@pytest.mark.parametrize(
    ("key", "tombstone", "latest", "timestamp", "kept"),
    [
        (b"k", False, None, 0, True),  # not seen in the dirty part: keep
        (b"k", False, 50, 0, True),  # this is the latest
        (b"k", False, 51, 0, False),  # a later record of the key exists
        (None, False, None, 0, False),  # no key: removed
        (b"k", True, 50, NOW_MS - 1000, True),  # a fresh tombstone stays
        (b"k", True, 50, NOW_MS - 1001, False),  # an expired one goes
        (b"k", True, 51, NOW_MS, False),  # a superseded tombstone goes at once
    ],
)
def test_keep_record(
    key: bytes | None, tombstone: bool, latest: int | None, timestamp: int, kept: bool
) -> None:
    assert (
        keep_record(
            offset=50,
            key=key,
            is_tombstone=tombstone,
            latest_offset=latest,
            batch_timestamp_ms=timestamp,
            now_ms=NOW_MS,
            delete_retention_ms=1000,
        )
        is kept
    )


@pytest.mark.parametrize(
    ("producer_id", "last", "timestamp", "kept"),
    [
        (-1, True, NOW_MS, False),
        (7, False, NOW_MS, False),
        (7, True, NOW_MS, True),
        (7, True, 0, False),
    ],
)
def test_an_emptied_batch_stays_only_for_a_live_producer(
    producer_id: int, last: bool, timestamp: int, kept: bool
) -> None:
    assert (
        keep_emptied_batch(
            producer_id=producer_id,
            is_producers_last_batch=last,
            batch_timestamp_ms=timestamp,
            now_ms=NOW_MS,
            producer_id_expiration_ms=1000,
        )
        is kept
    )


def test_offset_map_holds_long_keys_by_digest_and_counts_entries() -> None:
    offsets = OffsetMap(entries_max=3)
    long_a, long_b = b"x" * 40, b"x" * 39 + b"y"
    offsets.put(long_a, 1)
    offsets.put(long_b, 2)
    offsets.put(b"short", 3)
    offsets.put(long_a, 4)
    assert (offsets.latest(long_a), offsets.latest(long_b), offsets.latest(b"short")) == (4, 2, 3)
    assert offsets.latest(b"other") is None
    assert len(offsets) == 3 and offsets.full
    # a 17-byte digest slot never equals a short key held as it is
    assert len(OffsetMap.slot(long_a)) == 17 and OffsetMap.slot(b"k" * 16) == b"k" * 16
    with pytest.raises(ValueError, match="at least one"):
        OffsetMap(0)
