"""What a broker hands its log-cleaner worker process and what it answers (JSON on the
worker's stdin and stdout; ``storage/cleaning.py``). Broker-internal: both sides are the
same version, but unknown fields are still ignored, as everywhere."""

from __future__ import annotations

import msgspec

from conveyor.protocol.messages import Wire


class SealedSegment(Wire):
    base_offset: int
    next_offset: int
    size_bytes: int
    max_timestamp_ms: int


class CleaningPlan(Wire):
    """One pass over one log: its sealed segments as the broker saw them, and the rules."""

    directory: str
    sealed: list[SealedSegment]
    active_base_offset: int
    cleaned_offset: int  # the first offset not cleaned yet
    now_ms: int
    index_interval_bytes: int
    segment_bytes_max: int
    delete_retention_ms: int
    producer_id_expiration_ms: int
    offset_map_entries: int
    io_bytes_per_s: int = 0


class CleanedGroup(Wire):
    bases: list[int]  # the segments it replaces
    path: str  # the written, fsynced .cleaned file
    size_bytes: int = -1  # its size as written (-1: not told); the broker checks it


class CleaningOutcome(Wire):
    map_end: int  # the pass cleaned everything below this offset
    groups: list[CleanedGroup] = msgspec.field(default_factory=list)
    bytes_read: int = 0
    bytes_written: int = 0
    records_read: int = 0
    records_removed: int = 0
    error: str | None = None  # the pass failed (bad data); nothing was swapped
    aborted: str | None = None  # given up (a segment disappeared): try again later
