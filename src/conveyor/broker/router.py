"""The topic-level routing endpoint: JSON records to any broker, each forwarded to its
partition's leader (or produced here when this broker leads it).

Narrow dependencies: the metadata cache (where leaders are), whether this broker leads a
partition now, the local JSON produce, and the HTTP client that forwards.
"""

from __future__ import annotations

import asyncio
import logging
import random
from collections.abc import Awaitable, Callable
from typing import Protocol

from conveyor.broker.metadata import MetadataCache
from conveyor.broker.routing import group_by_partition, partitions_for, unkeyed_count
from conveyor.protocol.backoff import BELOW, backoff_ms
from conveyor.protocol.errors import ConveyorError, ErrorCode, InvalidRequestError, RetriableError
from conveyor.protocol.messages import (
    Acks,
    BrokerId,
    ErrorBody,
    JsonProduceRequest,
    JsonRecord,
    ProduceResponse,
    RoutedProduceResponse,
    RoutedRecordResult,
)
from conveyor.protocol.replica import TopicPartition
from conveyor.protocol.topics import validate_topic_name
from conveyor.transport.client import AsyncHTTP
from conveyor.transport.clock import Clock
from conveyor.transport.waits import gather_all

log = logging.getLogger(__name__)

# Forwarded produces get this much longer than the produce's own timeout, so the leader's
# REQUEST_TIMED_OUT arrives before our connection gives up.
_FORWARD_MARGIN_S = 5.0
_ROUTE_ATTEMPTS_MAX = 8  # the routing endpoint's retries per partition (about 5 s)
_LEADER_MOVED = frozenset(
    (ErrorCode.NOT_LEADER, ErrorCode.LEADER_NOT_AVAILABLE, ErrorCode.NETWORK_ERROR)
)


class ProduceJson(Protocol):
    def __call__(
        self,
        topic: str,
        partition: int,
        request: JsonProduceRequest,
        *,
        acks: Acks = "all",
        timeout_ms: int = 30_000,
        leader_epoch: int | None = None,
    ) -> Awaitable[ProduceResponse]: ...


class Router:
    def __init__(
        self,
        *,
        broker_id: BrokerId,
        metadata: MetadataCache,
        http: AsyncHTTP,
        leads: Callable[[TopicPartition], bool],
        produce_json: ProduceJson,
        clock: Clock,
        rng: random.Random | None = None,
    ) -> None:
        self._broker_id = broker_id
        self.metadata = metadata
        self._http = http
        self._leads = leads
        self._produce_json = produce_json
        self._clock = clock
        self._round_robin: dict[str, int] = {}
        self._rng = rng or random.Random()  # backoff jitter only

    async def route(
        self,
        topic: str,
        request: JsonProduceRequest,
        *,
        acks: Acks = "all",
        timeout_ms: int = 30_000,
    ) -> RoutedProduceResponse:
        """Send each record to its partition's leader (here or forwarded), one batch per
        partition, all partitions at once; answer per record."""
        validate_topic_name(topic)
        records = request.records
        if not records:
            raise InvalidRequestError("a produce request needs at least one record")
        description = await self.metadata.topic(topic, auto_create=True)
        if description is None:
            raise InvalidRequestError(
                f"unknown topic {topic!r}", code=ErrorCode.UNKNOWN_TOPIC, topic=topic
            )
        start = self._round_robin.get(topic, 0)
        chosen = partitions_for(records, len(description.partitions), start)
        self._round_robin[topic] = start + unkeyed_count(records)
        groups = group_by_partition(chosen)
        answers = await gather_all(
            *(
                self._route_group(topic, p, [records[i] for i in indices], acks, timeout_ms)
                for p, indices in groups.items()
            )
        )
        results: list[RoutedRecordResult | None] = [None] * len(records)
        for (p, indices), answer in zip(groups.items(), answers, strict=True):
            for position, index in enumerate(indices):
                if isinstance(answer, ErrorBody):
                    results[index] = RoutedRecordResult(partition=p, error=answer)
                else:
                    offset = answer.base_offset + position
                    results[index] = RoutedRecordResult(partition=p, offset=offset)
        return RoutedProduceResponse(topic=topic, results=[r for r in results if r is not None])

    async def _route_group(
        self, topic: str, partition: int, records: list[JsonRecord], acks: Acks, timeout_ms: int
    ) -> ProduceResponse | ErrorBody:
        """Produce one partition's records. While its leader is moving or not yet serving
        (a topic just auto-created has no leader for up to a heartbeat), refresh the
        metadata and retry with backoff, within the request's timeout and a bounded count."""
        request = JsonProduceRequest(records=records)
        deadline_ms = self._clock.now_ms() + timeout_ms
        attempt = 0
        while True:
            try:
                return await self._produce_anywhere(topic, partition, request, acks, timeout_ms)
            except ConveyorError as exc:
                remaining_s = (deadline_ms - self._clock.now_ms()) / 1000
                if (
                    exc.code not in _LEADER_MOVED
                    or attempt >= _ROUTE_ATTEMPTS_MAX
                    or remaining_s <= 0
                ):
                    return ErrorBody(
                        code=exc.code.name,
                        message=exc.message,
                        retriable=exc.retriable,
                        details=exc.details or None,
                    )
            delay_ms = backoff_ms(
                attempt, base_ms=100, max_ms=1000, draw=self._rng.random(), jitter=BELOW
            )
            await asyncio.sleep(min(delay_ms / 1000, remaining_s))
            attempt += 1
            await self._refresh_quietly(topic)

    async def _produce_anywhere(
        self, topic: str, partition: int, request: JsonProduceRequest, acks: Acks, timeout_ms: int
    ) -> ProduceResponse:
        if self._leads(TopicPartition(topic, partition)):
            return await self._produce_json(
                topic, partition, request, acks=acks, timeout_ms=timeout_ms
            )
        description = self.metadata.cached(topic)
        info = None
        if description is not None:
            info = next((p for p in description.partitions if p.partition == partition), None)
        url = None if info is None else self.metadata.leader_url(info.leader, info.leader_url)
        if url is None or info is None or info.leader == self._broker_id:
            raise RetriableError(
                f"partition {topic}-{partition} has no leader serving yet",
                code=ErrorCode.LEADER_NOT_AVAILABLE,
            )
        target = (
            f"{url}/v1/topics/{topic}/partitions/{partition}/records"
            f"?acks={acks}&timeout_ms={timeout_ms}"
        )
        timeout_s = timeout_ms / 1000 + _FORWARD_MARGIN_S
        return await self._http.call(
            "POST", target, ProduceResponse, body=request, timeout_s=timeout_s
        )

    async def _refresh_quietly(self, topic: str) -> None:
        try:
            await self.metadata.topic(topic, force=True)
        except ConveyorError as exc:
            log.warning("topic %s: metadata refresh failed: %s", topic, exc)
