"""Partition offsets over the Kafka protocol: ListOffsets to each partition's leader.

What ``offsets.py`` asks over HTTP, for the consumer on the Kafka transport: the earliest
offset (timestamp -2, the log start), the latest (-1: the high watermark, or with
``isolation_level`` 1 the last stable offset, as Kafka's read_committed consumers see
it) and the first offset at or after a time (with that record's own timestamp, which
ListOffsets v1+ answers, so no record needs fetching). Partitions are grouped by leader,
one request per leader, as Kafka's consumer sends them. The fetcher's reset position is
the same request (``kafka_fetcher.py``).
"""

from __future__ import annotations

import asyncio
import itertools
import random
import time
from collections.abc import Iterable, Mapping
from typing import Final

from conveyor.client.kafka_metadata import KafkaMetadataClient
from conveyor.client.offsets import OffsetAndTimestamp, leader_url
from conveyor.client.types import TopicPartition
from conveyor.protocol.backoff import backoff_ms
from conveyor.protocol.errors import ConveyorError, RetriableError
from conveyor.protocol.kafka.apis import SERVED, ApiKey
from conveyor.protocol.kafka.codec import new_request
from conveyor.protocol.kafka.errors import conveyor_error
from conveyor.transport.waits import gather_all

LIST_OFFSETS_VERSIONS: Final = (2, 7)  # v2: isolation level
EARLIEST: Final = -2  # ListOffsets' timestamps for the log start and the log end
LATEST: Final = -1
NOT_FOUND: Final = -1  # the offset answered when no record reaches the time asked
Answer = tuple[int, int]  # a partition's (offset, timestamp)


async def list_offsets(
    metadata: KafkaMetadataClient,
    timestamps: Mapping[TopicPartition, int],
    *,
    read_committed: bool,
    timeout_ms: int,
) -> dict[TopicPartition, Answer]:
    """Per partition, (offset, timestamp) for its timestamp (EARLIEST, LATEST or a time
    in ms), each leader asked once for all of its partitions; a partition's error raises
    its typed error."""
    by_leader: dict[str, dict[TopicPartition, int]] = {}
    for tp, when in timestamps.items():
        by_leader.setdefault(await leader_url(metadata, tp), {})[tp] = when

    found: dict[TopicPartition, Answer] = {}
    for answers in await gather_all(
        *(
            _ask_leader(metadata, url, asked, read_committed, timeout_ms)
            for url, asked in by_leader.items()
        )
    ):
        found.update(answers)
    return found


async def _ask_leader(
    metadata: KafkaMetadataClient,
    leader: str,
    asked: dict[TopicPartition, int],
    read_committed: bool,
    timeout_ms: int,
) -> dict[TopicPartition, Answer]:
    connection = await metadata.connections.get(leader)
    version = connection.version(ApiKey.LIST_OFFSETS, *LIST_OFFSETS_VERSIONS)
    topic_cls = SERVED[ApiKey.LIST_OFFSETS].request[version].ListOffsetsTopic
    by_topic: dict[str, list[TopicPartition]] = {}
    for tp in asked:
        by_topic.setdefault(tp.topic, []).append(tp)
    request = new_request(
        ApiKey.LIST_OFFSETS,
        version,
        replica_id=-1,
        isolation_level=1 if read_committed else 0,
        topics=[
            topic_cls(
                name=topic,
                partitions=[
                    topic_cls.ListOffsetsPartition(
                        partition_index=tp.partition, current_leader_epoch=-1, timestamp=asked[tp]
                    )
                    for tp in tps
                ],
            )
            for topic, tps in by_topic.items()
        ],
    )
    reply = await connection.call(ApiKey.LIST_OFFSETS, version, request, timeout_ms=timeout_ms)
    found: dict[TopicPartition, Answer] = {}
    for answer_topic in reply.topics:
        for answer in answer_topic.partitions:
            tp = TopicPartition(answer_topic.name, answer.partition_index)
            if tp not in asked:
                continue
            if answer.error_code:
                error = conveyor_error(answer.error_code, f"ListOffsets of {tp}")
                metadata.on_routing_error(tp.topic, tp.partition, error)
                raise error
            found[tp] = (int(answer.offset), int(answer.timestamp))
    missing = [tp for tp in asked if tp not in found]
    if missing:
        raise ConveyorError(f"ListOffsets answer of {leader} without {missing}")
    return found


class KafkaOffsets:
    """The consumer's offset questions (``beginning_offsets``, ``end_offsets``,
    ``offsets_for_times``) as Kafka's ListOffsets."""

    def __init__(self, metadata: KafkaMetadataClient, request_timeout_ms: int) -> None:
        self._metadata = metadata
        self._timeout_ms = request_timeout_ms

    async def _list(
        self, timestamps: Mapping[TopicPartition, int], read_committed: bool = False
    ) -> dict[TopicPartition, Answer]:
        """:func:`list_offsets`, asked again after a retriable error (a leader moving or
        not elected yet) with fresh metadata, until ``request_timeout_ms`` has passed, as
        Kafka's consumer retries ListOffsets within its API timeout."""
        deadline_s = time.monotonic() + self._timeout_ms / 1000
        for attempt in itertools.count():
            try:
                if attempt:
                    await self._metadata.refresh({tp.topic for tp in timestamps})
                return await list_offsets(
                    self._metadata,
                    timestamps,
                    read_committed=read_committed,
                    timeout_ms=self._timeout_ms,
                )
            except RetriableError:
                delay_ms = backoff_ms(attempt, base_ms=50, max_ms=1_000, draw=random.random())
                if time.monotonic() + delay_ms / 1000 >= deadline_s:
                    raise
                await asyncio.sleep(delay_ms / 1000)
        raise AssertionError("unreachable")

    async def earliest(self, partitions: Iterable[TopicPartition]) -> dict[TopicPartition, int]:
        found = await self._list(dict.fromkeys(partitions, EARLIEST))
        return {tp: offset for tp, (offset, _) in found.items()}

    async def latest(
        self, partitions: Iterable[TopicPartition], read_committed: bool
    ) -> dict[TopicPartition, int]:
        found = await self._list(dict.fromkeys(partitions, LATEST), read_committed)
        return {tp: offset for tp, (offset, _) in found.items()}

    async def for_times(
        self, times: Mapping[TopicPartition, int]
    ) -> dict[TopicPartition, OffsetAndTimestamp | None]:
        if any(when < 0 for when in times.values()):
            raise ValueError("offsets_for_times takes times in ms since the epoch (>= 0)")
        found = await self._list(times)
        return {
            tp: None if offset == NOT_FOUND else OffsetAndTimestamp(offset, stamp)
            for tp, (offset, stamp) in found.items()
        }
