"""Idempotent producers' state per partition: the last batches of each producer id. Pure.

The leader checks every batch that carries a producer id against it (``rules.dedup_decision``,
through ``replica.check_produce``): a retry of a batch it already has is answered with the
original offsets, a gap is refused. Followers record the same state from the batches they
copy (the ids, epochs and sequences are in the batch headers, written byte for byte), so a
new leader deduplicates retries of writes its predecessor took. After a restart the state
is rebuilt from the headers of the log's tail (the last ``REBUILD_BYTES``, see
:func:`tail_start`: a producer whose last write is older than that is forgotten, as Kafka
forgets producer ids whose batches retention removed); the shell reads those headers.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Final

from conveyor.broker.rules import SEQUENCE_MAX, record_producer_batch
from conveyor.protocol.batch import HEADER_SIZE, BatchHeader, parse_header, peek_length
from conveyor.protocol.messages import Offset
from conveyor.protocol.replica import ProducerBatch, ProducerEntry, Producers, ProducerWrite

REBUILD_BYTES: Final = 64 * 1024 * 1024
_MAGIC_V2: Final = 2

__all__ = [
    "REBUILD_BYTES",
    "Producers",
    "idempotent_write",
    "last_sequence",
    "observed",
    "rebuilt",
    "tail_start",
]


def last_sequence(header: BatchHeader) -> int:
    """Sequences wrap to 0 after int32 max, as Kafka's."""
    return (header.base_sequence + header.last_offset_delta) % (SEQUENCE_MAX + 1)


def _write_of(header: BatchHeader) -> ProducerWrite:
    return ProducerWrite(
        producer_id=header.producer_id,
        producer_epoch=header.producer_epoch,
        first_sequence=header.base_sequence,
        last_sequence=last_sequence(header),
    )


def idempotent_write(batches: bytes | memoryview) -> tuple[ProducerWrite, int] | None:
    """The producer fields of a request's first batch when it carries a producer id, with
    that batch's size; None otherwise. Only a readable v2 header counts; the log validates
    everything else on append."""
    if len(batches) < HEADER_SIZE:
        return None
    header = parse_header(batches, 0)
    if header.magic != _MAGIC_V2 or header.producer_id < 0:
        return None
    if header.base_sequence < 0:  # only a transaction marker counts without a sequence
        return (_marker_write(header), header.size_bytes) if header.is_control else None
    return _write_of(header), header.size_bytes


def _marker_write(header: BatchHeader) -> ProducerWrite:
    return ProducerWrite(
        producer_id=header.producer_id,
        producer_epoch=header.producer_epoch,
        first_sequence=-1,
        last_sequence=-1,
    )


def _record(producers: dict[int, ProducerEntry], header: BatchHeader) -> None:
    if header.producer_id < 0 or (header.base_sequence < 0 and not header.is_control):
        return
    write = _marker_write(header) if header.base_sequence < 0 else _write_of(header)
    batch = ProducerBatch(
        write.first_sequence,
        write.last_sequence,
        Offset(header.base_offset),
        Offset(header.base_offset + header.last_offset_delta),
    )
    producers[header.producer_id] = record_producer_batch(
        producers.get(header.producer_id),
        producer_epoch=write.producer_epoch,
        batch=batch,
    )


def observed(producers: Producers, data: bytes | memoryview) -> Producers:
    """The state after the whole batches of replicated bytes (already validated by the
    log). Copies the mapping only when a batch carries a producer id."""
    position = 0
    copy: dict[int, ProducerEntry] | None = None
    while len(data) - position >= HEADER_SIZE:
        _, size = peek_length(data, position)
        header = parse_header(data, position)
        if header.producer_id >= 0 and (header.base_sequence >= 0 or header.is_control):
            if copy is None:
                copy = dict(producers)
            _record(copy, header)
        position += size
    return producers if copy is None else copy


def rebuilt(headers: Iterable[BatchHeader]) -> Producers:
    """The state from a log's batch headers, oldest first."""
    producers: dict[int, ProducerEntry] = {}
    for header in headers:
        _record(producers, header)
    return producers


def tail_start(segments: Sequence[tuple[int, int]], log_start: int, tail_bytes: int) -> int:
    """Where to start reading headers: the first offset of the last whole segments
    (``(base_offset, size_bytes)``, oldest first) that hold ``tail_bytes``."""
    start = log_start
    total = 0
    for base, size in reversed(segments):
        start = base
        total += size
        if total >= tail_bytes:
            break
    return max(start, log_start)
