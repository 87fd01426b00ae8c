"""Idempotent producers' state per partition: the last batches of each producer id.

The leader checks every batch that carries a producer id against it (``rules.dedup_decision``):
a retry of a batch it already has is answered with the original offsets, a gap is refused.
Followers record the same state from the batches they copy (the ids, epochs and sequences
are in the batch headers, written byte for byte), so a new leader deduplicates retries of
writes its predecessor took. After a restart the state is rebuilt from the headers of the
log's tail (the last ``REBUILD_BYTES``: a producer whose last write is older than that is
forgotten, as Kafka forgets producer ids whose batches retention removed).
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Final

from conveyor.broker.rules import SEQUENCE_MAX, ProducerBatch, ProducerEntry, record_producer_batch
from conveyor.protocol.batch import HEADER_SIZE, BatchHeader, parse_header, peek_length
from conveyor.storage import PartitionLog

REBUILD_BYTES: Final = 64 * 1024 * 1024
_MAGIC_V2: Final = 2

Producers = dict[int, ProducerEntry]


def last_sequence(header: BatchHeader) -> int:
    """Sequences wrap to 0 after int32 max, as Kafka's."""
    return (header.base_sequence + header.last_offset_delta) % (SEQUENCE_MAX + 1)


def idempotent_header(batches: bytes | memoryview) -> BatchHeader | None:
    """The header of a request's first batch when it carries a producer id, else None.
    Only a readable v2 header counts; the log validates everything else on append."""
    if len(batches) < HEADER_SIZE:
        return None
    header = parse_header(batches, 0)
    if header.magic != _MAGIC_V2 or header.producer_id < 0 or header.base_sequence < 0:
        return None
    return header


def observe(producers: Producers, header: BatchHeader, base_offset: int | None = None) -> None:
    """Record one stored batch; ``base_offset`` where the leader put it (a stored or
    replicated header carries it already)."""
    if header.producer_id < 0 or header.base_sequence < 0:
        return
    base = header.base_offset if base_offset is None else base_offset
    batch = ProducerBatch(
        first_sequence=header.base_sequence,
        last_sequence=last_sequence(header),
        base_offset=base,
        last_offset=base + header.last_offset_delta,
    )
    producers[header.producer_id] = record_producer_batch(
        producers.get(header.producer_id), producer_epoch=header.producer_epoch, batch=batch
    )


def observe_chunk(producers: Producers, data: bytes | memoryview) -> None:
    """Record every whole batch of replicated bytes (already validated by the log)."""
    position = 0
    while len(data) - position >= HEADER_SIZE:
        _, size = peek_length(data, position)
        observe(producers, parse_header(data, position))
        position += size


def rebuild(log: PartitionLog, tail_bytes: int = REBUILD_BYTES) -> Producers:
    """The state from the headers of the log's last ``tail_bytes`` (whole segments)."""
    start = log.log_start_offset
    total = 0
    for info in reversed(log.segment_infos()):
        start = info.base_offset
        total += info.size_bytes
        if total >= tail_bytes:
            break
    producers: Producers = {}
    if log.log_end_offset > log.log_start_offset:
        scan(producers, log.headers(max(start, log.log_start_offset)))
    return producers


def scan(producers: Producers, headers: Iterable[BatchHeader]) -> None:
    for header in headers:
        observe(producers, header)
