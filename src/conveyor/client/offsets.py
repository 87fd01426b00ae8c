"""Partition offsets as a client asks for them: earliest, latest, by time (Kafka's
ListOffsets), and the record found at an offset.

How these questions travel over HTTP (the leader's ``GET .../offsets`` and a one-batch
fetch): the consumer's ``beginning_offsets``, ``end_offsets``, ``offsets_for_times`` and
``seek_to_*`` ask an :class:`OffsetsClient`, :class:`HttpOffsets` here or
``kafka_offsets.KafkaOffsets`` (ListOffsets) on the Kafka transport.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import NamedTuple, Protocol
from urllib.parse import quote

from conveyor.client.metadata import MetadataClient
from conveyor.client.types import TopicPartition
from conveyor.protocol.errors import ErrorCode, RetriableError
from conveyor.protocol.messages import BATCH_CONTENT_TYPE, PartitionOffsets
from conveyor.protocol.records import decode_batches
from conveyor.transport.client import AsyncHTTP
from conveyor.transport.waits import gather_all


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


def _path(tp: TopicPartition) -> str:
    return f"/v1/topics/{quote(tp.topic, safe='')}/partitions/{tp.partition}"


async def list_offsets(
    http: AsyncHTTP,
    metadata: MetadataClient,
    partitions: Iterable[TopicPartition],
    *,
    timeout_s: float,
    timestamp_ms: int | None = None,
) -> dict[TopicPartition, PartitionOffsets]:
    """Each partition's offsets from its leader, all partitions at once; with
    ``timestamp_ms`` also the first offset whose batch reaches that time."""
    wanted = list(dict.fromkeys(partitions))

    async def one(tp: TopicPartition) -> PartitionOffsets:
        query = "" if timestamp_ms is None else f"?timestamp_ms={timestamp_ms}"
        url = f"{await leader_url(metadata, tp)}{_path(tp)}/offsets{query}"
        return await http.call("GET", url, PartitionOffsets, timeout_s=timeout_s)

    answers = await gather_all(*(one(tp) for tp in wanted))
    return dict(zip(wanted, answers, strict=True))


async def record_timestamp(
    http: AsyncHTTP, metadata: MetadataClient, tp: TopicPartition, offset: int, timeout_s: float
) -> int | None:
    """The timestamp of the first record at or after ``offset`` (None: none visible)."""
    url = f"{await leader_url(metadata, tp)}{_path(tp)}/records?offset={offset}&max_bytes=1"
    _, _, body = await http.request("GET", url, accept=BATCH_CONTENT_TYPE, timeout_s=timeout_s)
    records = decode_batches(body, start_offset=offset)
    return records[0].timestamp_ms if records else None


async def offsets_for_times(
    http: AsyncHTTP,
    metadata: MetadataClient,
    times: dict[TopicPartition, int],
    *,
    timeout_s: float,
) -> dict[TopicPartition, OffsetAndTimestamp | None]:
    """Per partition, the first record whose timestamp is at or after the given one (None
    when there is none yet), as kafka-python's ``offsets_for_times``."""

    async def one(tp: TopicPartition, when_ms: int) -> OffsetAndTimestamp | None:
        found = await list_offsets(http, metadata, [tp], timeout_s=timeout_s, timestamp_ms=when_ms)
        offset = found[tp].offset_for_timestamp
        if offset is None:
            return None
        stamp = await record_timestamp(http, metadata, tp, offset, timeout_s)
        return None if stamp is None else OffsetAndTimestamp(offset, stamp)

    items = list(times.items())
    answers = await gather_all(*(one(tp, when) for tp, when in items))
    return {tp: answer for (tp, _), answer in zip(items, answers, strict=True)}


class OffsetsClient(Protocol):
    """The consumer's questions about partition offsets, whatever the transport."""

    async def earliest(self, partitions: Iterable[TopicPartition]) -> dict[TopicPartition, int]:
        """Each partition's log start offset."""
        ...

    async def latest(
        self, partitions: Iterable[TopicPartition], read_committed: bool
    ) -> dict[TopicPartition, int]:
        """Each partition's end: the high watermark, or the last stable offset."""
        ...

    async def for_times(
        self, times: Mapping[TopicPartition, int]
    ) -> dict[TopicPartition, OffsetAndTimestamp | None]:
        """Per partition, the first record at or after the time (None: none yet)."""
        ...


class HttpOffsets:
    """:class:`OffsetsClient` over the leaders' HTTP API."""

    def __init__(self, http: AsyncHTTP, metadata: MetadataClient, request_timeout_ms: int) -> None:
        self._http = http
        self._metadata = metadata
        self._timeout_s = request_timeout_ms / 1000

    async def earliest(self, partitions: Iterable[TopicPartition]) -> dict[TopicPartition, int]:
        found = await list_offsets(
            self._http, self._metadata, partitions, timeout_s=self._timeout_s
        )
        return {tp: answer.log_start_offset for tp, answer in found.items()}

    async def latest(
        self, partitions: Iterable[TopicPartition], read_committed: bool
    ) -> dict[TopicPartition, int]:
        found = await list_offsets(
            self._http, self._metadata, partitions, timeout_s=self._timeout_s
        )
        if read_committed:  # Kafka's end for it: the LSO
            return {
                tp: answer.high_watermark
                if answer.last_stable_offset is None
                else answer.last_stable_offset
                for tp, answer in found.items()
            }
        return {tp: answer.high_watermark for tp, answer in found.items()}

    async def for_times(
        self, times: Mapping[TopicPartition, int]
    ) -> dict[TopicPartition, OffsetAndTimestamp | None]:
        return await offsets_for_times(
            self._http, self._metadata, dict(times), timeout_s=self._timeout_s
        )
