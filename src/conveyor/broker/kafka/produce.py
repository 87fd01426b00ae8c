"""Produce: each partition's record batches go to ``BrokerService.produce_appended`` as
received (the HTTP route's operation: validation, idempotence, append, acks), never
decoded here: the request comes read by hand (``protocol/kafka/produce_request.py``), its
record sets views of the frame, uncopied.

acks 0, 1 and -1 are Conveyor's "0", "1" and "all". With acks=0 nothing is answered, and
a failed partition closes the connection (Kafka's way of telling such a producer to
refresh its metadata). A request's partitions are appended in its order, and after the
connection's previous Produce has appended or refused all of its own, then acknowledged
concurrently: a producer's batches for one partition are appended in the order sent,
whether its requests carry one partition or many, and even when a produce has to wait
before its append (an ACL catch-up, a transaction's verification, a partition led
elsewhere). Kafka's brokers get this by handling a connection's requests one at a time;
here the next request's handler starts at once and waits only if the previous one's
appends are still under way (``ConnectionState.appending``, a lock per connection).
From v10 a
partition answered NOT_LEADER_OR_FOLLOWER carries the current leader and its endpoint
(KIP-951).

With auth on, a request holding transactional batches needs ``produce`` on its
transactional id (Kafka's WRITE on the TRANSACTIONAL_ID; a request naming none is refused),
else every partition is TRANSACTIONAL_ID_AUTHORIZATION_FAILED, as Kafka answers.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from typing import Any, Final

from conveyor.broker.kafka.auth import Authorizer, transactional_refusal
from conveyor.broker.kafka.metadata import KnownBrokers, kafka_nodes
from conveyor.broker.kafka.registry import RequestContext
from conveyor.protocol.batch import LOG_OVERHEAD, TRANSACTIONAL_BIT
from conveyor.protocol.errors import ConveyorError, ErrorCode
from conveyor.protocol.kafka.errors import KafkaError, kafka_error
from conveyor.protocol.kafka.produce_request import ProduceData, Records
from conveyor.protocol.kafka.produce_response import (
    Encoded,
    Endpoint,
    PartitionAnswer,
    encode_produce_response,
)
from conveyor.protocol.messages import Acks, ProduceResponse
from conveyor.transport.kafka_server import CloseConnection
from conveyor.transport.waits import gather_all

log = logging.getLogger(__name__)

ACKS: Final[dict[int, Acks]] = {0: "0", 1: "1", -1: "all"}

# BrokerService.produce_appended: the produce up to its append, then the wait for its acks
Produce = Callable[..., Awaitable[Awaitable[ProduceResponse]]]
Jobs = tuple[tuple[str, int, Records | None], ...]  # (topic, partition, records)

# Each record_errors entry's message (as Kafka's LogValidator words it per record)
_RECORD_ERROR: Final = "a compacted topic takes only records with a key"


class ProduceHandler:
    def __init__(self, produce: Produce, known: KnownBrokers, authorizer: Authorizer) -> None:
        self._produce = produce
        self._known = known
        self._authorizer = authorizer

    async def __call__(self, ctx: RequestContext, request: ProduceData) -> Any:
        acks = ACKS.get(request.acks)
        refusal = _refusal(request, acks)
        jobs = request.partitions
        timeout_ms = request.timeout_ms
        # This request's append phase follows the previous Produce's on the connection:
        # the listener starts requests in order, an uncontended acquire does not suspend,
        # and the lock's waiters are served first in, first out.
        async with ctx.connection.appending:
            if refusal is None and self._authorizer.enabled:
                refusal = await self._transactional_refusal(ctx, request, jobs)
            # Each partition's produce runs up to its append here, in the request's order
            # (BrokerService.produce_appended: without suspending, in the common case).
            # Then the acknowledgements are awaited together.
            waits = [
                await self._appended(ctx, *job, refusal=refusal, acks=acks, timeout_ms=timeout_ms)
                for job in jobs
            ]
        # (one partition, the common case: no task per partition)
        results = [await waits[0]] if len(waits) == 1 else list(await gather_all(*waits))
        if acks == "0":
            failed = [r for r in results if r.error_code]
            if failed:
                raise CloseConnection(f"produce with acks=0 failed: {failed[0].error_message}")
            return None
        return self._response(ctx.api_version, jobs, results)

    async def _appended(
        self,
        ctx: RequestContext,
        topic: str,
        partition: int,
        records: Records | None,
        *,
        refusal: tuple[KafkaError, str] | None,
        acks: Acks | None,
        timeout_ms: int,
    ) -> Awaitable[PartitionAnswer]:
        """The partition's produce up to its append; returns the wait for its answer."""
        if refusal is not None:
            return _ready(PartitionAnswer(partition, refusal[0], error_message=refusal[1]))
        assert acks is not None
        if not await self._authorizer.allowed(ctx.principal, "produce", "topic", topic):
            return _ready(
                PartitionAnswer(
                    partition,
                    KafkaError.TOPIC_AUTHORIZATION_FAILED,
                    error_message=f"{ctx.principal} may not produce to {topic!r}",
                )
            )
        try:
            acknowledged = await self._produce(
                topic, partition, records or b"", acks=acks, timeout_ms=timeout_ms
            )
        except ConveyorError as exc:
            return _ready(_error_answer(partition, exc))
        return _answer(partition, acknowledged)

    async def _transactional_refusal(
        self, ctx: RequestContext, request: ProduceData, jobs: Jobs
    ) -> tuple[KafkaError, str] | None:
        transactional_id = request.transactional_id
        if transactional_id is None and not any(_transactional(r) for _, _, r in jobs):
            return None
        refusal = await transactional_refusal(
            self._authorizer, ctx.principal, transactional_id or "", "produce"
        )
        if refusal is None:
            return None
        return refusal, f"{ctx.principal} may not use transactional id {transactional_id!r}"

    def _response(self, version: int, jobs: Jobs, results: list[PartitionAnswer]) -> Encoded:
        """Encoded by hand (protocol/kafka/produce_response.py: the hot path's answer)."""
        by_topic: dict[str, list[PartitionAnswer]] = {}
        leaders: set[int] = set()
        for (topic, _, _), result in zip(jobs, results, strict=True):
            if result.leader is not None:
                leaders.add(result.leader[0])
            by_topic.setdefault(topic, []).append(result)
        endpoints = (
            [
                Endpoint(n.node_id, n.host, n.port)
                for n in kafka_nodes(list(self._known.brokers.values()))
                if n.node_id in leaders
            ]
            if leaders  # only a NOT_LEADER answer names endpoints: not on the hot path
            else []
        )
        return encode_produce_response(version, list(by_topic.items()), endpoints)


_ATTRIBUTES_LOW_AT: Final = 22  # the low byte of a batch header's attributes (batch.py)


def _transactional(records: Records | None) -> bool:
    """Does any batch of a partition's records have the transactional bit? (Only the
    headers are read; a malformed tail is the produce path's to refuse.)"""
    if not records:
        return False
    view = memoryview(records)
    position = 0
    while position + _ATTRIBUTES_LOW_AT < len(view):
        if view[position + _ATTRIBUTES_LOW_AT] & TRANSACTIONAL_BIT:
            return True
        length = int.from_bytes(view[position + 8 : position + 12], "big", signed=True)
        if length <= 0:
            return False
        position += LOG_OVERHEAD + length
    return False


async def _ready(answer: PartitionAnswer) -> PartitionAnswer:
    return answer


async def _answer(partition: int, acknowledged: Awaitable[ProduceResponse]) -> PartitionAnswer:
    try:
        answer = await acknowledged
    except ConveyorError as exc:
        return _error_answer(partition, exc)
    return PartitionAnswer(partition, 0, answer.base_offset, answer.log_start_offset)


def _error_answer(partition: int, exc: ConveyorError) -> PartitionAnswer:
    leader = None
    if exc.code is ErrorCode.NOT_LEADER and isinstance(exc.details.get("leader"), int):
        leader = (int(exc.details["leader"]), int(exc.details.get("leader_epoch", -1)))
    # INVALID_RECORD: the records at fault (v8+ record_errors; the others of the batch
    # get librdkafka's _INVALID_DIFFERENT_RECORD)
    indexes = exc.details.get("record_indexes")
    return PartitionAnswer(
        partition,
        kafka_error(exc.code),
        error_message=exc.message,
        leader=leader,
        record_errors=tuple(
            (i, _RECORD_ERROR) for i in (indexes if isinstance(indexes, list) else ())
        ),
    )


def _refusal(request: ProduceData, acks: Acks | None) -> tuple[KafkaError, str] | None:
    """A reason to refuse every partition of the request before producing anything."""
    if acks is None:
        return KafkaError.INVALID_REQUIRED_ACKS, f"acks must be 0, 1 or -1, not {request.acks}"
    return None
