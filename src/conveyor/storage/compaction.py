"""Log compaction: the decisions, pure (no files, no clock, no threads).

A compacted log keeps, for every key, at least its latest record (Kafka's
``cleanup.policy=compact``). The log cleaner (``cleaner.py``) asks three questions here:

* **which log** (:func:`choose_log`): the one with the largest *dirty ratio* among those
  whose ratio reached their ``min_cleanable_dirty_ratio``. The *dirty* part of a log is
  what was appended since its last cleaning (from its cleaned offset up to the active
  segment, which is never cleaned); the *clean* part is what came before. Ratio =
  dirty bytes / (clean + dirty bytes), as Kafka's ``LogCleanerManager``.
* **which segments go together** (:func:`group_segments`): consecutive sealed segments
  whose sizes add up to at most one segment (``segment_bytes_max``) and whose offsets fit
  a segment's 31-bit relative offsets; each group becomes one cleaned segment.
* **which records stay** (:func:`keep_record`, :func:`keep_emptied_batch`).

Worked example (min ratio 0.5): log A has 10 MiB clean and 30 MiB dirty (ratio 0.75),
log B 0 clean and 4 MiB dirty (ratio 1.0), log C 50 clean and 10 dirty (0.17): B is
cleaned first, then A; C waits until half of it is dirty.

Record rule, for a record at offset ``o`` with key ``k``, given the offset map (the
latest offset of each key in the dirty part, :class:`OffsetMap`):

* no key: removed (a compacted topic is made of keyed records; Kafka drops them too);
* a later record of ``k`` exists (``map[k] > o``): removed;
* a tombstone (null value) that is the latest of its key: kept while its batch's
  timestamp is within ``delete_retention_ms`` of now, so consumers that are reading have
  that long to see the delete; removed after;
* anything else: kept.

A batch that loses every record disappears (its offsets become a gap), except the last
batch of each idempotent producer id in the cleaned range, kept as an empty header so the
producer's last sequence survives (Kafka does the same), until
``producer_id_expiration_ms`` after its timestamp (Kafka's ``producer.id.expiration.ms``).
Control batches are kept as they are.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Final

# A cleaned segment's relative offsets (offset - base offset) must fit the index's 32 bits
# with the margin the log's own roll keeps.
GROUP_OFFSET_SPAN_MAX: Final = 2**31 - 2**20
# Keys longer than this are held in the offset map by a 16-byte digest (17 bytes with its
# marker, so it never equals a short key held as it is).
_RAW_KEY_BYTES_MAX: Final = 16
# What one entry of the offset map costs in memory, roughly: the key (a bytes object of up
# to 17 bytes: ~50), the offset (an int: ~32) and the dict slot (~50).
OFFSET_MAP_ENTRY_BYTES: Final = 128


@dataclass(frozen=True, slots=True)
class SegmentSpan:
    """A sealed segment as the cleaner sees it."""

    base_offset: int
    next_offset: int  # after its last batch (== base_offset when empty)
    size_bytes: int
    max_timestamp_ms: int


@dataclass(frozen=True, slots=True)
class CleanableLog:
    """One compacted log's state, for :func:`choose_log`."""

    name: str
    clean_bytes: int
    dirty_bytes: int
    min_cleanable_dirty_ratio: float

    @property
    def dirty_ratio(self) -> float:
        total = self.clean_bytes + self.dirty_bytes
        return self.dirty_bytes / total if total else 0.0


def dirty_split(segments: Sequence[SegmentSpan], cleaned_offset: int) -> tuple[int, int]:
    """(clean bytes, dirty bytes) of the sealed ``segments`` given the first offset not
    cleaned yet; a segment holding any offset from ``cleaned_offset`` on counts as dirty."""
    clean = sum(s.size_bytes for s in segments if s.next_offset <= cleaned_offset)
    dirty = sum(s.size_bytes for s in segments if s.next_offset > cleaned_offset)
    return clean, dirty


def choose_log(logs: Iterable[CleanableLog]) -> CleanableLog | None:
    """The dirtiest log that is due (ratio >= its minimum, something dirty), else None.
    Ties go to the name that sorts first, so the choice is deterministic."""
    due = [
        log
        for log in logs
        if log.dirty_bytes > 0 and log.dirty_ratio >= log.min_cleanable_dirty_ratio
    ]
    if not due:
        return None
    return min(due, key=lambda log: (-log.dirty_ratio, log.name))


def group_segments(
    segments: Sequence[SegmentSpan], end_offset: int, segment_bytes_max: int
) -> list[list[SegmentSpan]]:
    """Consecutive groups of the sealed ``segments``, each cleaned into one segment.

    A group adds segments while their total size stays within ``segment_bytes_max`` and
    the offsets they may hold (up to the next segment's base offset, or ``end_offset``
    after the last one) span at most ``GROUP_OFFSET_SPAN_MAX``. A segment larger than the
    limit forms a group alone (cleaning never makes it bigger)."""
    groups: list[list[SegmentSpan]] = []
    current: list[SegmentSpan] = []
    size = 0
    for index, segment in enumerate(segments):
        following = segments[index + 1].base_offset if index + 1 < len(segments) else end_offset
        if current and (
            size + segment.size_bytes > segment_bytes_max
            or following - current[0].base_offset > GROUP_OFFSET_SPAN_MAX
        ):
            groups.append(current)
            current, size = [], 0
        current.append(segment)
        size += segment.size_bytes
    if current:
        groups.append(current)
    return groups


class OffsetMap:
    """The latest offset of each key seen in the dirty part of a log, bounded in entries.

    Keys up to 16 bytes are held as they are; longer ones by a BLAKE2b 16-byte digest
    (a collision, which would drop a record, has a probability of about n^2 / 2^129)."""

    def __init__(self, entries_max: int) -> None:
        if entries_max < 1:
            raise ValueError("an offset map needs room for at least one key")
        self.entries_max = entries_max
        self._latest: dict[bytes, int] = {}

    @staticmethod
    def slot(key: bytes) -> bytes:
        if len(key) <= _RAW_KEY_BYTES_MAX:
            return key
        return b"\x00" + hashlib.blake2b(key, digest_size=16).digest()

    def put(self, key: bytes, offset: int) -> None:
        self._latest[self.slot(key)] = offset

    def latest(self, key: bytes) -> int | None:
        return self._latest.get(self.slot(key))

    @property
    def full(self) -> bool:
        return len(self._latest) >= self.entries_max

    def __len__(self) -> int:
        return len(self._latest)


def keep_record(
    *,
    offset: int,
    key: bytes | None,
    is_tombstone: bool,
    latest_offset: int | None,
    batch_timestamp_ms: int,
    now_ms: int,
    delete_retention_ms: int,
) -> bool:
    """Whether a record survives a cleaning (rules in the module docstring).
    ``latest_offset``: the offset map's entry for ``key`` (None: not in the dirty part)."""
    if key is None:
        return False
    if latest_offset is not None and latest_offset > offset:
        return False
    if is_tombstone:
        return batch_timestamp_ms >= now_ms - delete_retention_ms
    return True


def keep_emptied_batch(
    *,
    producer_id: int,
    is_producers_last_batch: bool,
    batch_timestamp_ms: int,
    now_ms: int,
    producer_id_expiration_ms: int,
) -> bool:
    """Whether a batch whose records were all removed stays as an empty header: only the
    last batch of an idempotent producer, while that producer may still retry."""
    if producer_id < 0 or not is_producers_last_batch:
        return False
    return batch_timestamp_ms >= now_ms - producer_id_expiration_ms
