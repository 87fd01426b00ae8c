"""The consumer's fetch path over the Kafka protocol (``transport="kafka"``).

The :class:`Fetcher` (assignment, one task per partition, positions, the bounded buffer,
retries and resets) is unchanged; two requests leave the process differently:

- a partition's long poll is a Fetch (v4-12, the highest the leader serves) of that one
  partition, ``max_wait_ms``/``min_bytes=1``/``partition_max_bytes`` from the consumer's
  settings, ``isolation_level`` 1 for read_committed (the aborted transactions come in
  the answer and are dropped as over HTTP, ``protocol/txn.without_aborted``);
- the reset position is a ListOffsets (v2-7, ``kafka_offsets.py``) for the earliest (-2)
  or latest (-1) offset; with read_committed the latest is the last stable offset, as
  over HTTP.

Each partition fetches on its own connection to its leader (a lane of
:class:`KafkaConnections`): a broker answers one connection's requests in order, so
partitions sharing one would wait behind each other's long polls. Kafka's own clients
send one Fetch per broker naming every partition; that, with fetch sessions (KIP-227),
is the next step for this path. Metadata comes over Kafka too (``kafka_metadata.py``),
and so do group membership and committed offsets (``kafka_group.py``).
"""

from __future__ import annotations

from typing import Any, Final

from conveyor.client.fetcher import Fetcher
from conveyor.client.kafka_metadata import KafkaMetadataClient
from conveyor.client.kafka_offsets import EARLIEST, LATEST, list_offsets
from conveyor.client.types import TopicPartition
from conveyor.protocol.errors import ConveyorError
from conveyor.protocol.kafka.apis import SERVED, ApiKey
from conveyor.protocol.kafka.codec import new_request
from conveyor.protocol.kafka.errors import KafkaError, conveyor_error
from conveyor.protocol.txn import without_aborted

FETCH_VERSIONS: Final = (4, 12)  # v4: isolation level, aborted transactions; v12: top


class KafkaFetcher(Fetcher):
    """A :class:`Fetcher` whose Fetch and ListOffsets requests go over Kafka."""

    def __init__(self, *, metadata: KafkaMetadataClient, **rest: Any) -> None:
        super().__init__(metadata=metadata, **rest)
        self._kafka_metadata = metadata
        self._connections = metadata.connections

    async def _fetch_bytes(
        self, leader_url: str, tp: TopicPartition, offset: int
    ) -> tuple[bytes, bytes, int | None]:
        settings = self._settings
        connection = await self._connections.get(leader_url, lane=f"{tp.topic}/{tp.partition}")
        version = connection.version(ApiKey.FETCH, *FETCH_VERSIONS)
        request = fetch_request(
            version,
            tp,
            offset,
            max_wait_ms=settings.fetch_max_wait_ms,
            max_bytes=settings.fetch_max_bytes,
            read_committed=settings.read_committed,
        )
        reply = await connection.call(
            ApiKey.FETCH,
            version,
            request,
            timeout_ms=settings.fetch_max_wait_ms + settings.request_timeout_ms,
        )
        return fetch_result(reply, tp, read_committed=settings.read_committed)

    async def _reset_offset(self, tp: TopicPartition) -> int:
        settings = self._settings
        timestamp = EARLIEST if settings.auto_offset_reset == "earliest" else LATEST
        found = await list_offsets(
            self._kafka_metadata,
            {tp: timestamp},
            read_committed=settings.read_committed,
            timeout_ms=settings.request_timeout_ms,
        )
        return found[tp][0]

    async def close_transport(self) -> None:
        await self._connections.close()


def fetch_request(
    version: int,
    tp: TopicPartition,
    offset: int,
    *,
    max_wait_ms: int,
    max_bytes: int,
    read_committed: bool,
) -> Any:
    """A one-partition, sessionless Fetch from ``offset``."""
    fetch_topic = SERVED[ApiKey.FETCH].request[version].FetchTopic
    return new_request(
        ApiKey.FETCH,
        version,
        replica_id=-1,
        max_wait_ms=max_wait_ms,
        min_bytes=1,
        max_bytes=max_bytes,
        isolation_level=1 if read_committed else 0,
        session_id=0,
        session_epoch=-1,  # no fetch session: every request names its partition
        topics=[
            fetch_topic(
                topic=tp.topic,
                partitions=[
                    fetch_topic.FetchPartition(
                        partition=tp.partition,
                        current_leader_epoch=-1,
                        fetch_offset=offset,
                        last_fetched_epoch=-1,
                        log_start_offset=-1,
                        partition_max_bytes=max_bytes,
                    )
                ],
            )
        ],
        forgotten_topics_data=[],
        rack_id="",
    )


def fetch_result(
    reply: Any, tp: TopicPartition, *, read_committed: bool
) -> tuple[bytes, bytes, int | None]:
    """(the batches answered, those a reader may see, the end it may read to: the high
    watermark, or the last stable offset with read_committed, as Kafka's consumer counts
    lag) of a one-partition Fetch answer, or its typed error."""
    if reply.error_code:
        raise conveyor_error(reply.error_code, f"Fetch of {tp.topic}[{tp.partition}]")
    for answer_topic in reply.responses:
        for answer in answer_topic.partitions:
            if answer_topic.topic != tp.topic or answer.partition_index != tp.partition:
                continue
            if answer.error_code != KafkaError.NONE:
                raise conveyor_error(answer.error_code, f"Fetch of {tp.topic}[{tp.partition}]")
            body = bytes(answer.records or b"")
            visible, end = body, int(answer.high_watermark)
            if read_committed:
                if answer.aborted_transactions:
                    aborted = [(a.producer_id, a.first_offset) for a in answer.aborted_transactions]
                    visible = without_aborted(body, aborted)
                if answer.last_stable_offset >= 0:  # as far as read_committed may read
                    end = int(answer.last_stable_offset)
            return body, visible, end
    raise ConveyorError(f"Fetch answer without {tp.topic}[{tp.partition}]")
