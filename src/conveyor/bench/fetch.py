"""A manually assigned partition reader for the benchmark's competing consumers.

The same request the client's ``Fetcher`` makes (a long-poll ``GET .../records`` to the
partition's leader, binary batches back), the same decoding (the consumer's record codec, with CRC
checks, then ``messages_from_records``), without the group and the prefetch buffer: a
benchmark consumer owns a fixed set of partitions (see ``workers.py``).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterable
from typing import Final

from conveyor.client.metadata import MetadataClient
from conveyor.client.recordcodec import configured_codec
from conveyor.client.types import Message, messages_from_records
from conveyor.protocol.batch import LOG_OVERHEAD, parse_header, peek_length
from conveyor.protocol.errors import ErrorCode, RetriableError
from conveyor.protocol.messages import BATCH_CONTENT_TYPE, PartitionOffsets
from conveyor.transport.client import AsyncHTTP

REQUEST_TIMEOUT_S: Final = 30.0
LEADER_WAIT_S: Final = 30.0


class PartitionReader:
    """Reads one partition from ``offset`` on; ``end_offset`` is the high watermark seen
    when it was opened."""

    def __init__(
        self,
        http: AsyncHTTP,
        topic: str,
        partition: int,
        leader_url: str,
        *,
        offset: int,
        end_offset: int,
        fetch_max_bytes: int,
        fetch_max_wait_ms: int,
    ) -> None:
        self.topic = topic
        self.partition = partition
        self.offset = offset
        self.end_offset = end_offset
        self._http = http
        self._decode = configured_codec().decode  # the consumer's codec
        self._base = f"{leader_url}/v1/topics/{topic}/partitions/{partition}"
        self._query = f"&max_bytes={fetch_max_bytes}&max_wait_ms={fetch_max_wait_ms}"
        self._timeout_s = fetch_max_wait_ms / 1000 + REQUEST_TIMEOUT_S

    async def fetch(self) -> list[Message]:
        """The next messages (empty when none arrived within the long-poll wait)."""
        offset = self.offset
        _, _, body = await self._http.request(
            "GET",
            f"{self._base}/records?offset={offset}{self._query}",
            accept=BATCH_CONTENT_TYPE,
            timeout_s=self._timeout_s,
        )
        records = self._decode(body, start_offset=offset)
        messages = messages_from_records(self.topic, self.partition, records)
        self.offset = max(offset, next_offset(body), messages[-1].offset + 1 if messages else 0)
        return messages

    async def high_watermark(self) -> int:
        offsets = await self._http.call(
            "GET", f"{self._base}/offsets", PartitionOffsets, timeout_s=REQUEST_TIMEOUT_S
        )
        return offsets.high_watermark


def next_offset(body: bytes) -> int:
    """The offset after the last whole batch of a fetch response (0 when there is none)."""
    position = 0
    found = 0
    while len(body) - position >= LOG_OVERHEAD:
        _, size_bytes = peek_length(body, position)
        if position + size_bytes > len(body):
            break
        found = parse_header(body, position).next_offset
        position += size_bytes
    return found


async def _offsets_when_served(http: AsyncHTTP, topic_url: str, partition: int) -> PartitionOffsets:
    """The partition's offsets, retrying while its new leader is not serving yet (right
    after the topic was created)."""
    deadline = time.monotonic() + LEADER_WAIT_S
    while True:
        try:
            return await http.call(
                "GET",
                f"{topic_url}/partitions/{partition}/offsets",
                PartitionOffsets,
                timeout_s=REQUEST_TIMEOUT_S,
            )
        except RetriableError:
            if time.monotonic() > deadline:
                raise
            await asyncio.sleep(0.05)


async def open_readers(
    url: str,
    topic: str,
    partitions: tuple[int, ...],
    *,
    from_end: bool,
    fetch_max_bytes: int,
    fetch_max_wait_ms: int,
) -> tuple[AsyncHTTP, list[PartitionReader]]:
    """Readers for ``partitions`` of ``topic``, at the log start or (``from_end``) the high
    watermark; returns the HTTP session too, for the caller to close."""
    http = AsyncHTTP(timeout_s=fetch_max_wait_ms / 1000 + REQUEST_TIMEOUT_S)
    metadata = MetadataClient(http, url, auto_create=False)
    deadline = time.monotonic() + LEADER_WAIT_S
    await metadata.refresh([topic])
    while any(metadata.cache.leader_url(topic, p) is None for p in partitions):
        if time.monotonic() > deadline:
            await http.close()
            raise RetriableError(
                f"{topic}: a partition has no leader", code=ErrorCode.LEADER_NOT_AVAILABLE
            )
        await asyncio.sleep(0.05)
        await metadata.refresh([topic])
    readers = []
    for partition in partitions:
        leader_url = metadata.cache.leader_url(topic, partition)
        assert leader_url is not None  # checked above
        offsets = await _offsets_when_served(http, f"{leader_url}/v1/topics/{topic}", partition)
        start = offsets.high_watermark if from_end else offsets.log_start_offset
        readers.append(
            PartitionReader(
                http,
                topic,
                partition,
                leader_url,
                offset=start,
                end_offset=offsets.high_watermark,
                fetch_max_bytes=fetch_max_bytes,
                fetch_max_wait_ms=fetch_max_wait_ms,
            )
        )
    return http, readers


async def wait_until_served(url: str, topic: str, partitions: Iterable[int]) -> None:
    """Return once every one of ``partitions`` has a leader answering for it."""
    http, _ = await open_readers(
        url, topic, tuple(partitions), from_end=True, fetch_max_bytes=1, fetch_max_wait_ms=0
    )
    await http.close()
