"""The dead-letter batch of a share-partition: pure (records in, batch bytes out).

Each dead-lettered record keeps its key, value, timestamp and headers, and gains headers
naming where it came from and why (``protocol.share.DLQ_HEADER_*``). The batch carries the
share-partition's idempotent producer identity and the batch's sequence, both persisted
with the operation that started the dead-lettering, so a new leader that writes the same
batch again after a failover is answered as a duplicate (stored once: exact accounting).
A record the log no longer holds (retention) is written with a null value, so the batch
still has one record per sequence number.
"""

from __future__ import annotations

from collections.abc import Mapping

from conveyor.protocol.records import BatchBuilder, Record
from conveyor.protocol.share import (
    DLQ_HEADER_DELIVERY_COUNT,
    DLQ_HEADER_ERROR,
    DLQ_HEADER_GROUP,
    DLQ_HEADER_OFFSET,
    DLQ_HEADER_PARTITION,
    DLQ_HEADER_TOPIC,
    DLQ_HEADERS,
    DeadLetterEntry,
    OpProducer,
)


def dead_letter_batch(
    *,
    group: str,
    topic: str,
    partition: int,
    sequence: int,
    entries: list[DeadLetterEntry],
    records: Mapping[int, Record],
    producer: OpProducer,
    now_ms: int,
) -> bytes:
    builder = BatchBuilder(
        producer_id=producer.producer_id,
        producer_epoch=producer.producer_epoch,
        base_sequence=sequence,
    )
    for entry in entries:
        record = records.get(entry.offset)
        own = [(n, v) for n, v in record.headers if n not in DLQ_HEADERS] if record else []
        headers = [
            *own,
            (DLQ_HEADER_GROUP, group.encode()),
            (DLQ_HEADER_TOPIC, topic.encode()),
            (DLQ_HEADER_PARTITION, str(partition).encode()),
            (DLQ_HEADER_OFFSET, str(entry.offset).encode()),
            (DLQ_HEADER_DELIVERY_COUNT, str(entry.delivery_count).encode()),
            (DLQ_HEADER_ERROR, entry.reason.encode("utf-8", "replace")),
        ]
        builder.append(
            record.value if record else None,
            record.key if record else None,
            headers,
            record.timestamp_ms if record else now_ms,
        )
    return builder.build()
