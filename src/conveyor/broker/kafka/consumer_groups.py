"""ConsumerGroupHeartbeat and ConsumerGroupDescribe (KIP-848, ``group.protocol=consumer``):
forwarded to the coordinator, where a Kafka member joins Conveyor's own groups
(``coordinator/consumer_groups.py``). Wire types: ``protocol/kafka/kip848.py``
(kafka-python has none for these APIs)."""

from __future__ import annotations

import uuid
from typing import Any, Final, Protocol

from conveyor.broker.kafka.groups import GroupAccess, client_host, group_error, named_error
from conveyor.broker.kafka.registry import RequestContext
from conveyor.protocol.errors import ConveyorError
from conveyor.protocol.group_messages import (
    ConsumerGroupDescriptions,
    ConsumerHeartbeatRequest,
    ConsumerHeartbeatResponse,
    TopicIdPartitions,
)
from conveyor.protocol.kafka.apis import SERVED, ApiKey
from conveyor.protocol.kafka.errors import KafkaError

# Kafka's "not asked for" (-2^31). This API's schema (protocol/kafka/schemas) types the
# field int32, which encodes no None: the None kafka-python's DescribeGroups takes for it
# made every ConsumerGroupDescribe answer fail to encode, and the connection close.
OPERATIONS_OMITTED: Final = -(2**31)


class ConsumerGroupOps(Protocol):
    async def consumer_heartbeat(
        self, group: str, request: ConsumerHeartbeatRequest
    ) -> ConsumerHeartbeatResponse: ...
    async def consumer_describe(self, groups: list[str]) -> ConsumerGroupDescriptions: ...


class ConsumerGroupHeartbeatHandler:
    def __init__(self, groups: ConsumerGroupOps, access: GroupAccess) -> None:
        self._groups = groups
        self._access = access

    async def __call__(self, ctx: RequestContext, request: Any) -> Any:
        version = ctx.api_version
        response = SERVED[ApiKey.CONSUMER_GROUP_HEARTBEAT].response[version]
        refusal = await self._access.refusal(ctx, request.group_id, "group")
        if refusal is not None:
            return _answer(response, request, refusal, None)
        owned = request.topic_partitions
        forwarded = ConsumerHeartbeatRequest(
            member_id=request.member_id,
            member_epoch=request.member_epoch,
            instance_id=request.instance_id,
            rack_id=request.rack_id,
            rebalance_timeout_ms=request.rebalance_timeout_ms,
            subscribed_topic_names=request.subscribed_topic_names,
            subscribed_topic_regex=request.subscribed_topic_regex if version >= 1 else None,
            server_assignor=request.server_assignor,
            owned=None
            if owned is None
            else [
                TopicIdPartitions(topic_id=str(t.topic_id), partitions=list(t.partitions))
                for t in owned
            ],
            client_id=ctx.header.client_id or "",
            client_host=client_host(ctx),
        )
        try:
            answer = await self._groups.consumer_heartbeat(request.group_id, forwarded)
        except ConveyorError as exc:
            return _answer(response, request, group_error(exc), None)
        return _answer(response, request, named_error(answer.error), answer)


def _answer(
    response: Any, request: Any, error: KafkaError, answer: ConsumerHeartbeatResponse | None
) -> Any:
    assignment = None
    if answer is not None and answer.assignment is not None:
        partitions_cls = response.Assignment.TopicPartitions
        assignment = response.Assignment(
            topic_partitions=[
                partitions_cls(topic_id=uuid.UUID(t.topic_id), partitions=t.partitions)
                for t in answer.assignment
            ]
        )
    return response(
        throttle_time_ms=0,
        error_code=error,
        error_message=answer.message if answer is not None else None,
        member_id=answer.member_id if answer is not None else None,
        member_epoch=answer.member_epoch if answer is not None else request.member_epoch,
        heartbeat_interval_ms=answer.heartbeat_interval_ms if answer is not None else 5000,
        assignment=assignment,
    )


class ConsumerGroupDescribeHandler:
    def __init__(self, groups: ConsumerGroupOps, access: GroupAccess) -> None:
        self._groups = groups
        self._access = access

    async def __call__(self, ctx: RequestContext, request: Any) -> Any:
        response = SERVED[ApiKey.CONSUMER_GROUP_DESCRIBE].response[ctx.api_version]
        group_cls = response.DescribedGroup
        refusals = {}
        for name in request.group_ids:
            refusal = await self._access.refusal(ctx, name, "describe")
            if refusal is not None:
                refusals[name] = refusal
        wanted = [n for n in request.group_ids if n not in refusals]
        described = {}
        error = KafkaError.NONE
        if wanted:
            try:
                described = {
                    d.group: d for d in (await self._groups.consumer_describe(wanted)).groups
                }
            except ConveyorError as exc:
                error = group_error(exc)
        groups = []
        for name in request.group_ids:
            one = described.get(name)
            code = refusals.get(name, error)
            if one is not None and one.error is not None:
                code = named_error(one.error)
            if one is None or code is not KafkaError.NONE:
                groups.append(
                    group_cls(
                        error_code=code,
                        error_message=None,
                        group_id=name,
                        group_state="Dead",
                        group_epoch=-1,
                        assignment_epoch=-1,
                        assignor_name="",
                        members=[],
                        authorized_operations=OPERATIONS_OMITTED,
                    )
                )
                continue
            groups.append(
                group_cls(
                    error_code=KafkaError.NONE,
                    error_message=None,
                    group_id=name,
                    group_state=one.state,
                    group_epoch=one.group_epoch,
                    assignment_epoch=one.assignment_epoch,
                    assignor_name=one.assignor_name,
                    members=[_member(group_cls, m) for m in one.members],
                    authorized_operations=OPERATIONS_OMITTED,
                )
            )
        return response(throttle_time_ms=0, groups=groups)


def _member(group_cls: Any, member: Any) -> Any:
    member_cls = group_cls.Member
    assignment_cls = member_cls.Assignment
    partitions_cls = assignment_cls.TopicPartitions

    def assignment(rows: list[TopicIdPartitions]) -> Any:
        return assignment_cls(
            topic_partitions=[
                partitions_cls(
                    topic_id=uuid.UUID(r.topic_id), topic_name=r.topic, partitions=r.partitions
                )
                for r in rows
            ]
        )

    return member_cls(
        member_id=member.member_id,
        instance_id=member.instance_id,
        rack_id=member.rack_id,
        member_epoch=member.member_epoch,
        client_id=member.client_id,
        client_host=member.client_host,
        subscribed_topic_names=member.subscribed_topic_names,
        subscribed_topic_regex=member.subscribed_topic_regex,
        assignment=assignment(member.assignment),
        target_assignment=assignment(member.target_assignment),
    )
