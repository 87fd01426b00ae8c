"""Retention: which whole segments to delete. A pure decision, no files, no clock.

Rules, as Kafka applies them (``kafka.log.UnifiedLog.deleteOldSegments``):

* by age: delete segments from the oldest while their largest timestamp is older than
  ``now_ms - retention_ms``; stop at the first one that is not;
* by size: delete segments from the oldest while what remains is still at least
  ``retention_bytes`` (so the log keeps at least ``retention_bytes``, at most one segment
  more);
* the active (last) segment counts too: when it would be deleted, the caller rolls a new
  empty segment first, so the log end offset never moves backwards.

* below the log start (``segments_below_start``): a segment whose every offset is below
  the log start offset (moved by deleting records, Kafka's DeleteRecords) is deleted
  whatever its age, as Kafka's ``deleteLogStartOffsetBreachedSegments``.

Worked example: segments of 100, 100, 100 bytes with max timestamps 10, 20, 30;
``retention_bytes=150`` deletes the first (200 left >= 150) but not the second (100 < 150);
``retention_ms=15, now_ms=40`` deletes the first two (10 < 25 and 20 < 25) but not the third.
With base offsets 0, 50, 90 and log end 120, a log start of 60 deletes the first (the next
starts at 50 <= 60) but not the second (it holds 60); a log start of 120 deletes all three
(the log end is reached: the caller rolls an empty segment at 120 first).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class SegmentInfo:
    base_offset: int
    size_bytes: int
    max_timestamp_ms: int  # -1 for an empty segment


def segments_to_delete(
    segments: Sequence[SegmentInfo], *, retention_bytes: int, retention_ms: int, now_ms: int
) -> int:
    """How many of the oldest segments to delete (0..len(segments))."""
    by_age = 0
    if retention_ms >= 0:
        cutoff_ms = now_ms - retention_ms
        for segment in segments:
            if segment.size_bytes == 0 or segment.max_timestamp_ms >= cutoff_ms:
                break
            by_age += 1
    by_size = 0
    if retention_bytes >= 0:
        excess = sum(s.size_bytes for s in segments) - retention_bytes
        for segment in segments:
            if segment.size_bytes == 0 or excess - segment.size_bytes < 0:
                break
            excess -= segment.size_bytes
            by_size += 1
    return max(by_age, by_size)


def segments_below_start(
    segments: Sequence[SegmentInfo], *, log_start_offset: int, log_end_offset: int
) -> int:
    """How many of the oldest segments hold only offsets below ``log_start_offset``: each
    whose successor starts at or below it, and the last one too (with everything before
    it) once the start reached the log end and it holds bytes."""
    count = 0
    for successor in segments[1:]:
        if successor.base_offset > log_start_offset:
            return count
        count += 1
    if segments and log_start_offset >= log_end_offset and segments[-1].size_bytes > 0:
        return len(segments)
    return count
