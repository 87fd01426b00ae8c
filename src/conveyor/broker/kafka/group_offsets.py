"""OffsetCommit, OffsetFetch (one group before v8, several from v8) and OffsetDelete over
the coordinator's one store of committed offsets, the store Conveyor's own consumers
read and write: a Kafka group's commits are a Conveyor consumer's starting point and the
other way round.

Permissions as Kafka's: the group's (``group``; ``describe`` suffices to fetch) and,
per topic, ``consume`` (Kafka's READ) to commit or delete, ``consume`` or ``describe`` to
fetch. Fencing (member, generation or KIP-848 epoch, static instance) is the
coordinator's, at the moment the commit is decided.
"""

from __future__ import annotations

from typing import Any, Protocol

from conveyor.broker.kafka.auth import Authorizer
from conveyor.broker.kafka.groups import GroupAccess, group_error, named_error
from conveyor.broker.kafka.registry import RequestContext
from conveyor.protocol.errors import ConveyorError
from conveyor.protocol.group_messages import (
    FetchedGroup,
    FetchedOffset,
    KafkaCommitRequest,
    KafkaCommitResponse,
    KafkaOffsetFetchRequest,
    KafkaOffsetFetchResponse,
    OffsetDeleteRequest,
    OffsetDeleteResponse,
    OffsetFetchGroup,
)
from conveyor.protocol.kafka.apis import SERVED, ApiKey
from conveyor.protocol.kafka.errors import KafkaError
from conveyor.protocol.messages import PartitionOffset

FetchedRow = tuple[FetchedOffset, KafkaError]  # a partition's committed offset, its error


class OffsetOps(Protocol):
    async def commit(self, group: str, request: KafkaCommitRequest) -> KafkaCommitResponse: ...
    async def fetch_offsets(self, request: KafkaOffsetFetchRequest) -> KafkaOffsetFetchResponse: ...
    async def delete_offsets(
        self, group: str, request: OffsetDeleteRequest
    ) -> OffsetDeleteResponse: ...


async def _topics_allowed(
    authorizer: Authorizer, ctx: RequestContext, names: set[str], operations: tuple[str, ...]
) -> set[str]:
    allowed = set()
    for name in names:
        for operation in operations:
            if await authorizer.allowed(ctx.principal, operation, "topic", name):
                allowed.add(name)
                break
    return allowed


async def consumable_offsets(
    authorizer: Authorizer,
    ctx: RequestContext,
    items: list[tuple[str, Any]],
    errors: dict[tuple[str, int], KafkaError],
) -> list[PartitionOffset]:
    """The offsets of an (Txn)OffsetCommit's ``items`` (topic, partition entry) on topics
    the principal may consume (Kafka's READ); the others get TOPIC_AUTHORIZATION_FAILED
    in ``errors``."""
    readable = await _topics_allowed(authorizer, ctx, {t for t, _ in items}, ("consume",))
    offsets = []
    for topic, p in items:
        if topic not in readable:
            errors[(topic, p.partition_index)] = KafkaError.TOPIC_AUTHORIZATION_FAILED
            continue
        offsets.append(
            PartitionOffset(
                topic=topic,
                partition=p.partition_index,
                offset=p.committed_offset,
                metadata=p.committed_metadata,
                # OffsetCommit v6+, TxnOffsetCommit v2+ (older versions decode it as -1)
                leader_epoch=p.committed_leader_epoch,
            )
        )
    return offsets


def topic_results(
    topic_cls: Any, partition_cls: Any, topics: Any, errors: dict[tuple[str, int], KafkaError]
) -> list[Any]:
    """A response's per-topic, per-partition error codes for the request's ``topics``, in
    their order (NONE where ``errors`` has none)."""
    return [
        topic_cls(
            name=t.name,
            partitions=[
                partition_cls(
                    partition_index=p.partition_index,
                    error_code=errors.get((t.name, p.partition_index), KafkaError.NONE),
                )
                for p in t.partitions
            ],
        )
        for t in topics
    ]


class OffsetCommitHandler:
    def __init__(self, offsets: OffsetOps, access: GroupAccess) -> None:
        self._offsets = offsets
        self._access = access

    async def __call__(self, ctx: RequestContext, request: Any) -> Any:
        version = ctx.api_version
        items = [(t.name, p) for t in request.topics for p in t.partitions]
        refusal = await self._access.refusal(ctx, request.group_id, "group")
        errors: dict[tuple[str, int], KafkaError] = {}
        if refusal is not None:
            errors = {(t, p.partition_index): refusal for t, p in items}
            return self._response(version, request, errors)
        offsets = await consumable_offsets(self._access.authorizer, ctx, items, errors)
        if offsets:
            forwarded = KafkaCommitRequest(
                offsets=offsets,
                member_id=request.member_id or "",
                instance_id=request.group_instance_id if version >= 7 else None,
                generation=request.generation_id_or_member_epoch,
                api_version=version,
            )
            try:
                answer = await self._offsets.commit(request.group_id, forwarded)
                for result in answer.partitions:
                    errors[(result.topic, result.partition)] = named_error(result.error)
            except ConveyorError as exc:
                error = group_error(exc)
                errors.update({(o.topic, o.partition): error for o in offsets})
        return self._response(version, request, errors)

    @staticmethod
    def _response(version: int, request: Any, errors: dict[tuple[str, int], KafkaError]) -> Any:
        response = SERVED[ApiKey.OFFSET_COMMIT].response[version]
        topic_cls = response.OffsetCommitResponseTopic
        partition_cls = topic_cls.OffsetCommitResponsePartition
        topics = topic_results(topic_cls, partition_cls, request.topics, errors)
        return response(throttle_time_ms=0, topics=topics)


class OffsetFetchHandler:
    def __init__(self, offsets: OffsetOps, access: GroupAccess) -> None:
        self._offsets = offsets
        self._access = access

    async def __call__(self, ctx: RequestContext, request: Any) -> Any:
        version = ctx.api_version
        if version >= 8:
            asked = [
                (g.group_id, g.topics, g.member_id if version >= 9 else None, g.member_epoch)
                for g in request.groups
            ]
        else:
            asked = [(request.group_id, request.topics, None, -1)]
        stable = bool(getattr(request, "require_stable", False)) if version >= 7 else False
        answers = [await self._one(ctx, *one, stable) for one in asked]
        return _fetch_response(version, answers)

    async def _one(  # noqa: PLR0917 -- one asked group's fields, in their order
        self,
        ctx: RequestContext,
        group: str,
        topics: Any,
        member_id: str | None,
        epoch: int,
        require_stable: bool = False,
    ) -> tuple[str, KafkaError, list[FetchedRow]]:
        refusal = await self._access.refusal(ctx, group, "describe")
        if refusal is not None:
            return group, refusal, []
        wanted = (
            None if topics is None else [(t.name, p) for t in topics for p in t.partition_indexes]
        )
        names = {t for t, _ in wanted} if wanted is not None else None
        asked = OffsetFetchGroup(
            group=group,
            partitions=None
            if wanted is None
            else [PartitionOffset(topic=t, partition=p, offset=-1) for t, p in wanted],
            member_id=member_id or None,
            member_epoch=epoch,
        )
        try:
            answer = await self._offsets.fetch_offsets(
                KafkaOffsetFetchRequest(groups=[asked], require_stable=require_stable)
            )
        except ConveyorError as exc:
            return group, group_error(exc), []
        fetched: FetchedGroup = answer.groups[0]
        if fetched.error is not None:
            return group, named_error(fetched.error), []
        names = names if names is not None else {p.topic for p in fetched.partitions}
        readable = await _topics_allowed(
            self._access.authorizer, ctx, names, ("consume", "describe")
        )
        rows = []
        for p in fetched.partitions:
            if p.topic in readable:
                rows.append((p, named_error(p.error)))
            elif wanted is not None:  # asked by name: say why; listing all: leave it out
                hidden = FetchedOffset(topic=p.topic, partition=p.partition)
                rows.append((hidden, KafkaError.TOPIC_AUTHORIZATION_FAILED))
        return group, KafkaError.NONE, rows


def _fetch_response(version: int, answers: list[tuple[str, KafkaError, list[FetchedRow]]]) -> Any:
    response = SERVED[ApiKey.OFFSET_FETCH].response[version]
    if version < 8:
        topic_cls = response.OffsetFetchResponseTopic
        partition_cls = topic_cls.OffsetFetchResponsePartition
        _, error, rows = answers[0]
        return response(
            throttle_time_ms=0,
            topics=_topics(topic_cls, partition_cls, rows),
            error_code=error,
        )
    group_cls = response.OffsetFetchResponseGroup
    topic_cls = group_cls.OffsetFetchResponseTopics
    partition_cls = topic_cls.OffsetFetchResponsePartitions
    return response(
        throttle_time_ms=0,
        groups=[
            group_cls(
                group_id=group, topics=_topics(topic_cls, partition_cls, rows), error_code=error
            )
            for group, error, rows in answers
        ],
    )


def _topics(topic_cls: Any, partition_cls: Any, rows: list[FetchedRow]) -> list[Any]:
    by_topic: dict[str, list[Any]] = {}
    for row, error in rows:
        by_topic.setdefault(row.topic, []).append(
            partition_cls(
                partition_index=row.partition,
                committed_offset=row.offset,
                committed_leader_epoch=row.leader_epoch,  # answered from v5
                metadata=row.metadata,
                error_code=error,
            )
        )
    return [topic_cls(name=t, partitions=p) for t, p in by_topic.items()]


class OffsetDeleteHandler:
    def __init__(self, offsets: OffsetOps, access: GroupAccess) -> None:
        self._offsets = offsets
        self._access = access

    async def __call__(self, ctx: RequestContext, request: Any) -> Any:
        response = SERVED[ApiKey.OFFSET_DELETE].response[ctx.api_version]
        items = [(t.name, p.partition_index) for t in request.topics for p in t.partitions]
        errors: dict[tuple[str, int], KafkaError] = {}
        top = await self._access.refusal(ctx, request.group_id, "group")
        if top is None:
            readable = await _topics_allowed(
                self._access.authorizer, ctx, {t for t, _ in items}, ("consume",)
            )
            errors = {
                (t, p): KafkaError.TOPIC_AUTHORIZATION_FAILED for t, p in items if t not in readable
            }
            forwarded = OffsetDeleteRequest(
                partitions=[
                    PartitionOffset(topic=t, partition=p, offset=-1)
                    for t, p in items
                    if t in readable
                ]
            )
            top = await self._forward(request.group_id, forwarded, errors)
        if top is not KafkaError.NONE:
            return response(error_code=top, throttle_time_ms=0, topics=[])
        topic_cls = response.OffsetDeleteResponseTopic
        partition_cls = topic_cls.OffsetDeleteResponsePartition
        return response(
            error_code=KafkaError.NONE,
            throttle_time_ms=0,
            topics=topic_results(topic_cls, partition_cls, request.topics, errors),
        )

    async def _forward(
        self, group: str, request: OffsetDeleteRequest, errors: dict[tuple[str, int], KafkaError]
    ) -> KafkaError:
        try:
            answer = await self._offsets.delete_offsets(group, request)
        except ConveyorError as exc:
            return group_error(exc)
        if answer.error is not None:
            return named_error(answer.error)
        for result in answer.partitions:
            errors[(result.topic, result.partition)] = named_error(result.error)
        return KafkaError.NONE


__all__ = ["OffsetCommitHandler", "OffsetDeleteHandler", "OffsetFetchHandler"]
