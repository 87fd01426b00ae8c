"""ListGroups, DescribeGroups and DeleteGroups over the coordinator's one registry of
groups: Kafka classic groups, Conveyor's own groups (with Kafka consumers of the KIP-848
protocol among their members, described in the classic protocol's terms with the
"consumer" protocol's subscription and assignment bytes) and groups that only have
committed offsets ("Empty", like Kafka's simple groups). Each broker lists the groups
FindCoordinator gives it. Permissions as HTTP's: cluster
``describe`` lists every group, otherwise those the principal may describe; describing
needs ``describe`` (or ``group``), deleting ``group`` (what resetting offsets needs)."""

from __future__ import annotations

from typing import Any, Final, Protocol

from conveyor.broker.kafka.acl_mapping import Operation
from conveyor.broker.kafka.groups import GroupAccess, group_broker, group_error, named_error
from conveyor.broker.kafka.metadata import KnownBrokers, kafka_nodes
from conveyor.broker.kafka.registry import RequestContext
from conveyor.protocol.errors import ConveyorError
from conveyor.protocol.group_messages import (
    KafkaGroupDeletions,
    KafkaGroupDescription,
    KafkaGroupDescriptions,
    KafkaGroupList,
    KafkaListGroupsRequest,
)
from conveyor.protocol.kafka.apis import SERVED, ApiKey
from conveyor.protocol.kafka.errors import KafkaError

OPERATIONS_OMITTED: Final = None  # not asked for (kafka-python encodes Kafka's -2^31)
# DescribeGroups v6 (KIP-1043) answers GROUP_ID_NOT_FOUND for a group that does not
# exist; older versions "Dead" with no error
DESCRIBE_NOT_FOUND_VERSION: Final = 6


class GroupAdminOps(Protocol):
    async def listing(self, request: KafkaListGroupsRequest) -> KafkaGroupList: ...
    async def describe(self, groups: list[str]) -> KafkaGroupDescriptions: ...
    async def delete(self, groups: list[str]) -> KafkaGroupDeletions: ...


class ListGroupsHandler:
    """Lists the groups given to this broker (``groups.group_broker``): clients ask every
    broker and merge the answers, as Kafka's coordinators each list their own."""

    def __init__(
        self, groups: GroupAdminOps, access: GroupAccess, node_id: int, known: KnownBrokers
    ) -> None:
        self._groups = groups
        self._access = access
        self._node_id = node_id
        self._known = known

    async def __call__(self, ctx: RequestContext, request: Any) -> Any:
        version = ctx.api_version
        response = SERVED[ApiKey.LIST_GROUPS].response[version]
        asked = KafkaListGroupsRequest(
            states=list(request.states_filter or []) if version >= 4 else [],
            types=list(request.types_filter or []) if version >= 5 else [],
        )
        try:
            listed = await self._groups.listing(asked)
        except ConveyorError as exc:
            return response(throttle_time_ms=0, error_code=group_error(exc), groups=[])
        authorizer = self._access.authorizer
        everything = await authorizer.allowed(ctx.principal, "describe", "cluster", "cluster")
        nodes = kafka_nodes(list(self._known.brokers.values()))
        groups = []
        for g in listed.groups:
            owner = group_broker(g.group, nodes)
            if owner is not None and owner.node_id != self._node_id:
                continue
            if everything or await self._access.allowed(ctx, g.group, "describe"):
                groups.append(
                    response.ListedGroup(
                        group_id=g.group,
                        protocol_type=g.protocol_type,
                        group_state=g.state,
                        group_type=g.group_type,
                    )
                )
        return response(throttle_time_ms=0, error_code=KafkaError.NONE, groups=groups)


class DescribeGroupsHandler:
    def __init__(self, groups: GroupAdminOps, access: GroupAccess) -> None:
        self._groups = groups
        self._access = access

    async def __call__(self, ctx: RequestContext, request: Any) -> Any:
        version = ctx.api_version
        response = SERVED[ApiKey.DESCRIBE_GROUPS].response[version]
        refusals: dict[str, KafkaError] = {}
        for name in request.groups:
            refusal = await self._access.refusal(ctx, name, "describe")
            if refusal is not None:
                refusals[name] = refusal
        wanted = [n for n in request.groups if n not in refusals]
        described: dict[str, KafkaGroupDescription] = {}
        error = KafkaError.NONE
        if wanted:
            try:
                described = {d.group: d for d in (await self._groups.describe(wanted)).groups}
            except ConveyorError as exc:
                error = group_error(exc)
        include = version >= 3 and bool(request.include_authorized_operations)
        groups = []
        for name in request.groups:
            one = described.get(name)
            code = refusals.get(name, error)
            if one is not None and one.error is not None:
                code = named_error(one.error)
                if code is KafkaError.GROUP_ID_NOT_FOUND and version < DESCRIBE_NOT_FOUND_VERSION:
                    code = KafkaError.NONE  # "Dead", as Kafka answers older clients
                one = None
            if code is not KafkaError.NONE:
                one = None
            operations = await self._operations(ctx, name) if include else OPERATIONS_OMITTED
            groups.append(_described(response, name, one, code, operations))
        return response(throttle_time_ms=0, groups=groups)

    async def _operations(self, ctx: RequestContext, name: str) -> set[int]:
        chosen = set()
        if await self._access.allowed(ctx, name, "group"):
            chosen |= {int(Operation.READ), int(Operation.DELETE), int(Operation.DESCRIBE)}
        elif await self._access.allowed(ctx, name, "describe"):
            chosen.add(int(Operation.DESCRIBE))
        return chosen


def _described(
    response: Any,
    name: str,
    one: KafkaGroupDescription | None,
    error: KafkaError,
    operations: set[int] | None,
) -> Any:
    member_cls = response.DescribedGroup.DescribedGroupMember
    return response.DescribedGroup(
        error_code=error,
        error_message=None,
        group_id=name,
        group_state=one.state if one is not None else "Dead",
        protocol_type=one.protocol_type if one is not None else "",
        protocol_data=one.protocol_name if one is not None else "",
        members=[
            member_cls(
                member_id=m.member_id,
                group_instance_id=m.instance_id,
                client_id=m.client_id,
                client_host=m.client_host,
                member_metadata=m.metadata,
                member_assignment=m.assignment,
            )
            for m in (one.members if one is not None else [])
        ],
        authorized_operations=operations,
    )


class DeleteGroupsHandler:
    def __init__(self, groups: GroupAdminOps, access: GroupAccess) -> None:
        self._groups = groups
        self._access = access

    async def __call__(self, ctx: RequestContext, request: Any) -> Any:
        response = SERVED[ApiKey.DELETE_GROUPS].response[ctx.api_version]
        errors: dict[str, KafkaError] = {}
        for name in request.groups_names:
            refusal = await self._access.refusal(ctx, name, "group")
            if refusal is not None:
                errors[name] = refusal
        wanted = [n for n in request.groups_names if n not in errors]
        if wanted:
            try:
                for result in (await self._groups.delete(wanted)).groups:
                    errors[result.group] = named_error(result.error)
            except ConveyorError as exc:
                errors.update({n: group_error(exc) for n in wanted})
        return response(
            throttle_time_ms=0,
            results=[
                response.DeletableGroupResult(group_id=n, error_code=errors.get(n, KafkaError.NONE))
                for n in request.groups_names
            ],
        )
