"""CreateTopics, DeleteTopics and CreatePartitions over the coordinator's topic operations
(``broker/coordinator_admin.py``: the HTTP routes' operations, one implementation).

Each topic of a request is answered on its own, as in Kafka: one bad topic does not fail
the others, and a refused topic changes nothing (the coordinator validates before it
decides). What Kafka checks on the request itself is checked here first, with Kafka's
codes: a topic named twice is INVALID_REQUEST for both, a partition count or replication
factor below 1 (other than -1, "the cluster default") is INVALID_PARTITIONS or
INVALID_REPLICATION_FACTOR; manual replica assignments are validated by the coordinator
(one list of distinct live brokers per partition, else INVALID_REPLICA_ASSIGNMENT).
Permissions are HTTP's: ``create_topic`` and ``delete_topic`` on the topic; adding
partitions is an administrator's (the HTTP route's default). ``validate_only`` answers
without creating or changing anything.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections import Counter
from dataclasses import dataclass
from typing import Any, Protocol

from conveyor.broker.kafka.auth import Authorizer
from conveyor.broker.kafka.registry import RequestContext
from conveyor.protocol.errors import ConveyorError, ErrorCode
from conveyor.protocol.kafka import topic_configs
from conveyor.protocol.kafka.apis import SERVED, ApiKey
from conveyor.protocol.kafka.errors import KafkaError, kafka_error
from conveyor.protocol.messages import (
    AddPartitionsRequest,
    AlterTopicConfigRequest,
    ClusterStatus,
    CreateTopicRequest,
    TopicDescription,
)
from conveyor.transport.waits import gather_all


class TopicOps(Protocol):
    """The coordinator's topic operations (``broker/coordinator_admin.CoordinatorTopics``)."""

    async def create(self, request: CreateTopicRequest) -> TopicDescription: ...
    async def delete(self, name: str) -> None: ...
    async def describe(self, name: str) -> TopicDescription: ...
    async def add_partitions(
        self, name: str, request: AddPartitionsRequest
    ) -> TopicDescription: ...
    async def alter_config(
        self, name: str, request: AlterTopicConfigRequest
    ) -> TopicDescription: ...
    async def cluster(self) -> ClusterStatus: ...


@dataclass(frozen=True, slots=True)
class Outcome:
    error: KafkaError = KafkaError.NONE
    message: str | None = None
    described: TopicDescription | None = None


def failure(exc: ConveyorError, resource_type: str = "topic") -> Outcome:
    """A coordinator refusal in Kafka's terms (a too large replication factor is Kafka's
    INVALID_REPLICATION_FACTOR, which Conveyor's INVALID_CONFIG carries in its details)."""
    if exc.code is ErrorCode.INVALID_CONFIG and "replication_factor" in exc.details:
        return Outcome(KafkaError.INVALID_REPLICATION_FACTOR, exc.message)
    if exc.code is ErrorCode.INVALID_CONFIG and "assignments" in exc.details:
        return Outcome(KafkaError.INVALID_REPLICA_ASSIGNMENT, exc.message)
    return Outcome(kafka_error(exc.code, resource_type), exc.message)


_SERVED_POLL_S = 0.1
_SERVED_WAIT_S_MAX = 30.0


async def wait_served(topics: TopicOps, name: str, timeout_ms: int) -> TopicDescription | None:
    """Wait (at most ``timeout_ms``, the request's own timeout, capped at 30 s) until every
    partition of ``name`` has been reported by a replica, i.e. its leader serves it. Kafka's
    CreateTopics answers once the new partitions have leaders, and clients then trust the
    first Metadata they get (librdkafka's admin client keeps a leader of -1 it saw); the
    topic exists either way, so running out of time still answers success. Returns the
    last description, None when there was no time to look."""
    deadline = time.monotonic() + min(max(timeout_ms, 0) / 1000, _SERVED_WAIT_S_MAX)
    described = None
    while time.monotonic() < deadline:
        try:
            described = await topics.describe(name)
        except ConveyorError:
            return described
        if all(p.high_watermark is not None for p in described.partitions):
            return described
        await asyncio.sleep(_SERVED_POLL_S)
    return described


async def _served(topics: TopicOps, outcomes: list[Outcome], timeout_ms: int) -> list[Outcome]:
    """``wait_served`` for every topic created or grown, concurrently."""

    async def one(outcome: Outcome) -> Outcome:
        if outcome.described is None:
            return outcome
        name = outcome.described.name
        return Outcome(described=await wait_served(topics, name, timeout_ms) or outcome.described)

    return list(await gather_all(*(one(o) for o in outcomes)))


def duplicates(names: list[str]) -> set[str]:
    return {name for name, count in Counter(names).items() if count > 1}


class CreateTopicsHandler:
    def __init__(self, topics: TopicOps, authorizer: Authorizer) -> None:
        self._topics = topics
        self._authorizer = authorizer

    async def __call__(self, ctx: RequestContext, request: Any) -> Any:
        twice = duplicates([t.name for t in request.topics])
        outcomes = []
        for topic in request.topics:
            if topic.name in twice:
                outcomes.append(Outcome(KafkaError.INVALID_REQUEST, "topic named twice"))
            else:
                outcomes.append(await self._one(ctx, topic, bool(request.validate_only)))
        if not request.validate_only:  # wait for every created topic at once
            outcomes = await _served(self._topics, outcomes, request.timeout_ms)
        return self._response(ctx.api_version, request.topics, outcomes)

    async def _one(self, ctx: RequestContext, topic: Any, validate_only: bool) -> Outcome:
        if not await self._authorizer.allowed(ctx.principal, "create_topic", "topic", topic.name):
            return Outcome(KafkaError.TOPIC_AUTHORIZATION_FAILED, "create_topic not allowed")
        refusal = _creation_refusal(topic)
        if refusal is not None:
            return refusal
        try:
            config = topic_configs.creation({c.name: c.value for c in topic.configs})
        except ConveyorError as exc:
            return failure(exc)
        fields: dict[str, Any] = {}
        if topic.assignments:
            ordered = sorted(topic.assignments, key=lambda a: a.partition_index)
            fields["assignments"] = [list(a.broker_ids) for a in ordered]
            fields["partitions"] = len(ordered)
            fields["replication_factor"] = len(ordered[0].broker_ids)
        if topic.num_partitions != -1:
            fields["partitions"] = topic.num_partitions
        if topic.replication_factor != -1:
            fields["replication_factor"] = topic.replication_factor
        create = CreateTopicRequest(
            name=topic.name, config=config, validate_only=validate_only, **fields
        )
        try:
            return Outcome(described=await self._topics.create(create))
        except ConveyorError as exc:
            return failure(exc)

    def _response(self, version: int, topics: list[Any], outcomes: list[Outcome]) -> Any:
        response = SERVED[ApiKey.CREATE_TOPICS].response[version]
        result_cls = response.CreatableTopicResult
        results = []
        for topic, outcome in zip(topics, outcomes, strict=True):
            described = outcome.described
            fields: dict[str, Any] = {}
            if version >= 5:
                fields = _created_details(result_cls, described)
            if version >= 7:
                topic_id = described.topic_id if described is not None else None
                fields["topic_id"] = uuid.UUID(topic_id) if topic_id else uuid.UUID(int=0)
            results.append(
                result_cls(
                    name=topic.name,
                    error_code=outcome.error,
                    error_message=outcome.message,
                    **fields,
                )
            )
        return response(throttle_time_ms=0, topics=results)


def _creation_refusal(topic: Any) -> Outcome | None:
    """What Kafka refuses in a CreateTopics entry before asking its controller."""
    if topic.num_partitions != -1 and topic.num_partitions < 1:
        return Outcome(KafkaError.INVALID_PARTITIONS, "partitions must be >= 1")
    if topic.replication_factor != -1 and topic.replication_factor < 1:
        return Outcome(KafkaError.INVALID_REPLICATION_FACTOR, "replication factor must be >= 1")
    if topic.assignments:
        if topic.num_partitions != -1 or topic.replication_factor != -1:
            return Outcome(
                KafkaError.INVALID_REQUEST,
                "with replica assignments, partitions and replication factor must be -1",
            )
        indexes = sorted(a.partition_index for a in topic.assignments)
        if indexes != list(range(len(indexes))):
            return Outcome(KafkaError.INVALID_REPLICA_ASSIGNMENT, "partitions must be 0..N-1")
    return None


def _created_details(result_cls: Any, described: TopicDescription | None) -> dict[str, Any]:
    """v5+: the new topic's partition count, replication factor and configs."""
    if described is None:
        return {"num_partitions": -1, "replication_factor": -1, "configs": None}
    config_cls = result_cls.CreatableTopicConfigs
    entries = topic_configs.describe_topic(described.config, described.replication_factor)
    return {
        "num_partitions": len(described.partitions),
        "replication_factor": described.replication_factor,
        "topic_config_error_code": 0,
        "configs": [
            config_cls(
                name=e.name,
                value=e.value,
                read_only=e.read_only,
                config_source=int(e.source),
                is_sensitive=False,
            )
            for e in entries
        ],
    }


class DeleteTopicsHandler:
    def __init__(self, topics: TopicOps, authorizer: Authorizer) -> None:
        self._topics = topics
        self._authorizer = authorizer

    async def __call__(self, ctx: RequestContext, request: Any) -> Any:
        version = ctx.api_version
        by_id = version >= 6
        names = [t.name for t in request.topics] if by_id else list(request.topic_names)
        twice = duplicates([n for n in names if n is not None])
        outcomes = []
        for name in names:
            if name is None:  # v6 by topic id only: Conveyor finds topics by name
                outcomes.append(
                    Outcome(KafkaError.UNKNOWN_TOPIC_ID, "delete by topic id is not supported")
                )
            elif name in twice:
                outcomes.append(Outcome(KafkaError.INVALID_REQUEST, "topic named twice"))
            elif not await self._authorizer.allowed(ctx.principal, "delete_topic", "topic", name):
                outcomes.append(
                    Outcome(KafkaError.TOPIC_AUTHORIZATION_FAILED, "delete_topic not allowed")
                )
            else:
                outcomes.append(await self._delete(name))
        return self._response(version, request, names, outcomes)

    async def _delete(self, name: str) -> Outcome:
        try:
            await self._topics.delete(name)
        except ConveyorError as exc:
            return failure(exc)
        return Outcome()

    def _response(
        self, version: int, request: Any, names: list[str | None], outcomes: list[Outcome]
    ) -> Any:
        response = SERVED[ApiKey.DELETE_TOPICS].response[version]
        result_cls = response.DeletableTopicResult
        results = []
        for index, (name, outcome) in enumerate(zip(names, outcomes, strict=True)):
            fields: dict[str, Any] = {}
            if version >= 5:
                fields["error_message"] = outcome.message
            if version >= 6:
                fields["topic_id"] = request.topics[index].topic_id
            results.append(result_cls(name=name, error_code=outcome.error, **fields))
        return response(throttle_time_ms=0, responses=results)


class CreatePartitionsHandler:
    def __init__(self, topics: TopicOps, authorizer: Authorizer) -> None:
        self._topics = topics
        self._authorizer = authorizer

    async def __call__(self, ctx: RequestContext, request: Any) -> Any:
        twice = duplicates([t.name for t in request.topics])
        admin = await self._authorizer.allowed(ctx.principal, "admin", "cluster", "cluster")
        outcomes = []
        for topic in request.topics:
            if topic.name in twice:
                outcomes.append(Outcome(KafkaError.INVALID_REQUEST, "topic named twice"))
            elif not admin:
                outcomes.append(
                    Outcome(KafkaError.TOPIC_AUTHORIZATION_FAILED, "adding partitions needs admin")
                )
            else:
                assignments = None
                if topic.assignments is not None:
                    assignments = [list(a.broker_ids) for a in topic.assignments]
                grow = AddPartitionsRequest(
                    partitions=topic.count,
                    validate_only=bool(request.validate_only),
                    assignments=assignments,
                )
                outcomes.append(await self._grow(topic.name, grow))
        if not request.validate_only:
            outcomes = await _served(self._topics, outcomes, request.timeout_ms)
        return self._response(ctx.api_version, request.topics, outcomes)

    async def _grow(self, name: str, grow: AddPartitionsRequest) -> Outcome:
        try:
            return Outcome(described=await self._topics.add_partitions(name, grow))
        except ConveyorError as exc:
            return failure(exc)

    def _response(self, version: int, topics: list[Any], outcomes: list[Outcome]) -> Any:
        response = SERVED[ApiKey.CREATE_PARTITIONS].response[version]
        result_cls = response.CreatePartitionsTopicResult
        results = [
            result_cls(name=t.name, error_code=o.error, error_message=o.message)
            for t, o in zip(topics, outcomes, strict=True)
        ]
        return response(throttle_time_ms=0, results=results)
