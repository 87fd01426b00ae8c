"""What the consumer's offset questions share: the answer type of ``offsets_for_times``
and the partition's leader to ask. The questions themselves (``beginning_offsets``,
``end_offsets``, ``offsets_for_times``, ``seek_to_*``) are Kafka's ListOffsets, in
``kafka_offsets.py``.
"""

from __future__ import annotations

from typing import NamedTuple

from conveyor.client.metadata import MetadataClient
from conveyor.client.types import TopicPartition
from conveyor.protocol.errors import ErrorCode, RetriableError


class OffsetAndTimestamp(NamedTuple):
    """``offsets_for_times``' answer per partition (kafka-python's name): the first record
    at or after the asked time, and its own timestamp."""

    offset: int
    timestamp_ms: int


async def leader_url(metadata: MetadataClient, tp: TopicPartition) -> str:
    url = metadata.cache.leader_url(tp.topic, tp.partition)
    if url is None:
        await metadata.refresh([tp.topic])
        url = metadata.cache.leader_url(tp.topic, tp.partition)
    if url is None:
        raise RetriableError(
            f"{tp.topic}[{tp.partition}] has no leader (or does not exist)",
            code=ErrorCode.LEADER_NOT_AVAILABLE,
        )
    return url
