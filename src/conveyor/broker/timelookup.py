"""Offsets by time, read from a leader's log: Kafka's ListOffsets by timestamp and
MAX_TIMESTAMP (KIP-734), which answer a *record*, not a batch.

The time index finds the first batch whose largest timestamp reaches the one asked for
(``PartitionLog.offset_for_timestamp``); that one batch is then decoded and its first
record at or after the timestamp answers. Records below the log start are skipped: when
records were deleted inside the batch holding the start (``advance_start``), that batch
may reach the timestamp only through deleted records, and the search goes on from the
next batch. Only what lies below ``upper_offset`` (the high watermark) is visible. A
batch this broker cannot decode (a codec it lacks) answers its base offset.
"""

from __future__ import annotations

import logging

from conveyor.protocol.batch import parse_header
from conveyor.protocol.errors import ConveyorError
from conveyor.protocol.records import decode_batches
from conveyor.storage import PartitionLog

log = logging.getLogger(__name__)


def first_record_at(
    partition_log: PartitionLog, timestamp_ms: int, upper_offset: int
) -> tuple[int, int] | None:
    """(offset, timestamp) of the first visible record at or after ``timestamp_ms``."""
    floor = 0
    while True:
        base = partition_log.offset_for_timestamp(timestamp_ms, floor)
        if base is None or base >= upper_offset:
            return None  # none, or not visible yet
        found, next_offset = _record_in_batch(partition_log, base, timestamp_ms, upper_offset)
        if found is not None or next_offset <= floor:
            return found  # found, or that batch is not visible yet
        floor = next_offset  # only deleted records of that batch reached the timestamp


def max_timestamp_record(partition_log: PartitionLog, upper_offset: int) -> tuple[int, int] | None:
    """(largest record timestamp visible, the offset of the first record that has it)."""
    found = partition_log.max_timestamp()
    if found is None or found[1] >= upper_offset:
        return None
    timestamp_ms, base_offset = found
    record, _ = _record_in_batch(partition_log, base_offset, timestamp_ms, upper_offset)
    return (timestamp_ms, base_offset) if record is None else (timestamp_ms, record[0])


def _record_in_batch(
    partition_log: PartitionLog, base_offset: int, timestamp_ms: int, upper_offset: int
) -> tuple[tuple[int, int] | None, int]:
    """The first record at or after ``timestamp_ms`` and the log start in the batch at
    ``base_offset`` (None when there is none), and the offset after that batch (-1 when
    it is not visible yet)."""
    first = max(base_offset, partition_log.log_start_offset)
    batch = partition_log.read(first, 1, upper_offset=upper_offset)  # one batch
    if not batch:
        return None, -1
    next_offset = parse_header(batch).next_offset
    try:
        records = decode_batches(batch, start_offset=first)
    except ConveyorError as exc:
        log.info("%s: batch at %d not decoded: %s", partition_log.directory, base_offset, exc)
        return (first, timestamp_ms), next_offset
    for record in records:
        if record.timestamp_ms >= timestamp_ms:
            return (record.offset, record.timestamp_ms), next_offset
    return None, next_offset
