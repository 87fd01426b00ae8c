"""Which partition each record of the topic-level JSON endpoint goes to. Pure.

Kafka's default partitioner: a keyed record goes to ``murmur2(key) & 0x7fffffff % count``
(the key's bytes after UTF-8 or base64 decoding, so keys map as Java clients map them);
a record naming its ``partition`` goes there; the rest go round-robin from a counter the
caller keeps per topic.
"""

from __future__ import annotations

from collections.abc import Sequence

from conveyor.broker.jsonrecords import record_key
from conveyor.protocol.errors import ErrorCode, InvalidRequestError
from conveyor.protocol.messages import JsonRecord
from conveyor.protocol.partitioner import partition_for_key


def partitions_for(
    records: Sequence[JsonRecord], partition_count: int, round_robin_start: int
) -> list[int]:
    """The partition of each record, in order. Raises UNKNOWN_PARTITION for a named
    partition outside the topic and INVALID_REQUEST for a key that does not decode."""
    if partition_count < 1:
        raise InvalidRequestError("the topic has no partitions", code=ErrorCode.UNKNOWN_PARTITION)
    out: list[int] = []
    unkeyed = 0
    for index, record in enumerate(records):
        if record.partition is not None:
            if not 0 <= record.partition < partition_count:
                raise InvalidRequestError(
                    f"records[{index}].partition {record.partition} is not in "
                    f"[0, {partition_count})",
                    code=ErrorCode.UNKNOWN_PARTITION,
                    partition=record.partition,
                    partition_count=partition_count,
                )
            out.append(record.partition)
            continue
        key = record_key(record)
        if key is None:
            out.append((round_robin_start + unkeyed) % partition_count)
            unkeyed += 1
        else:
            out.append(partition_for_key(key, partition_count))
    return out


def group_by_partition(partitions: Sequence[int]) -> dict[int, list[int]]:
    """partition -> indices of its records, in request order (so per-key order holds)."""
    groups: dict[int, list[int]] = {}
    for index, partition in enumerate(partitions):
        groups.setdefault(partition, []).append(index)
    return groups


def unkeyed_count(records: Sequence[JsonRecord]) -> int:
    """How far the round-robin counter moves for this request."""
    return sum(1 for r in records if r.partition is None and r.key is None)
