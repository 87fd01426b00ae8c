"""FindCoordinator, JoinGroup, SyncGroup, Heartbeat and LeaveGroup: Kafka's classic group
protocol, decided by the coordinator (``coordinator/classic.py``) and forwarded there by
whichever broker the client talks to (``broker/coordinator_groups.py``).

* **FindCoordinator**: every broker forwards group requests to the one coordinator, so
  any broker is a correct "group coordinator" for Kafka clients; each group is still
  given one (:func:`group_broker`: a hash of the group id over the live brokers with a
  Kafka listener, as Kafka hashes it onto ``__consumer_offsets``), so a group's members
  share a connection target and ListGroups, which clients send to every broker and
  merge, lists each group once (on its broker). v4+ answers each key on its own. A
  transactional id (key type 1) is answered with the broker asked, which forwards the
  transaction APIs to the coordinator (``transactions.py``), to a principal that may
  ``describe`` the id (Kafka's DESCRIBE on the TRANSACTIONAL_ID), else
  TRANSACTIONAL_ID_AUTHORIZATION_FAILED.
* Each handler checks the Kafka principal's ACLs as HTTP would (``group`` on the group:
  Kafka's READ; ``describe``, or ``group``, for FindCoordinator: Kafka's DESCRIBE) and
  answers GROUP_AUTHORIZATION_FAILED otherwise; a group id Conveyor cannot store is
  INVALID_GROUP_ID; a coordinator that cannot be reached (or is electing) is
  COORDINATOR_NOT_AVAILABLE, so the client finds the coordinator again and retries.
"""

from __future__ import annotations

import logging
import zlib
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Final, Protocol

from conveyor.broker.kafka.auth import Authorizer, transactional_refusal
from conveyor.broker.kafka.metadata import KafkaNode, KnownBrokers, kafka_nodes
from conveyor.broker.kafka.registry import RequestContext
from conveyor.protocol.errors import ConveyorError, ErrorCode
from conveyor.protocol.group_messages import (
    ClassicAssignment,
    ClassicHeartbeatRequest,
    ClassicJoinRequest,
    ClassicJoinResponse,
    ClassicLeaveRequest,
    ClassicLeaveResponse,
    ClassicLeaving,
    ClassicProtocol,
    ClassicSyncRequest,
    ClassicSyncResponse,
    GroupResult,
)
from conveyor.protocol.kafka.apis import SERVED, ApiKey
from conveyor.protocol.kafka.errors import KafkaError, kafka_error
from conveyor.protocol.topics import check_group_name

log = logging.getLogger(__name__)

GROUP_KEY: Final = 0
TRANSACTION_KEY: Final = 1
_UNREACHABLE: Final = frozenset(
    {
        ErrorCode.NETWORK_ERROR,
        ErrorCode.REQUEST_TIMED_OUT,
        ErrorCode.NOT_COORDINATOR,
        ErrorCode.NOT_READY,
    }
)


class ClassicOps(Protocol):
    """The coordinator's classic-group operations (``broker/coordinator_groups.py``)."""

    async def join(self, group: str, request: ClassicJoinRequest) -> ClassicJoinResponse: ...
    async def sync(
        self, group: str, request: ClassicSyncRequest, rebalance_timeout_ms: int
    ) -> ClassicSyncResponse: ...
    async def heartbeat(self, group: str, request: ClassicHeartbeatRequest) -> GroupResult: ...
    async def leave(self, group: str, request: ClassicLeaveRequest) -> ClassicLeaveResponse: ...


def group_error(exc: ConveyorError) -> KafkaError:
    """A failed call to the coordinator in a group API's terms."""
    if exc.code in _UNREACHABLE:
        return KafkaError.COORDINATOR_NOT_AVAILABLE
    return kafka_error(exc.code, "group")


def named_error(name: str | None) -> KafkaError:
    """An ``ErrorCode`` name from the coordinator's answer as Kafka's code."""
    if name is None:
        return KafkaError.NONE
    try:
        code = ErrorCode[name]
    except KeyError:  # a newer coordinator's code
        return KafkaError.UNKNOWN_SERVER_ERROR
    if code in _UNREACHABLE:
        return KafkaError.COORDINATOR_NOT_AVAILABLE
    return kafka_error(code, "group")


def invalid_group(group: str | None) -> bool:
    try:
        check_group_name(group or "", ErrorCode.INVALID_REQUEST)
    except ConveyorError:
        return True
    return False


@dataclass(frozen=True, slots=True)
class GroupAccess:
    """The checks every group handler makes first; None: go on."""

    authorizer: Authorizer

    async def refusal(
        self, ctx: RequestContext, group: str | None, operation: str
    ) -> KafkaError | None:
        if invalid_group(group):
            return KafkaError.INVALID_GROUP_ID
        assert group is not None
        if await self.allowed(ctx, group, operation):
            return None
        return KafkaError.GROUP_AUTHORIZATION_FAILED

    async def allowed(self, ctx: RequestContext, group: str, operation: str) -> bool:
        allowed = await self.authorizer.allowed(ctx.principal, operation, "group", group)
        if not allowed and operation == "describe":  # Kafka's READ implies DESCRIBE
            allowed = await self.authorizer.allowed(ctx.principal, "group", "group", group)
        return allowed


def client_host(ctx: RequestContext) -> str:
    return "/" + ctx.connection.info.address


def group_broker(group: str, nodes: Sequence[KafkaNode]) -> KafkaNode | None:
    """The broker a group is given (None: no live broker known). Stable while the set of
    live brokers is: CRC-32 of the group id over the nodes sorted by id."""
    if not nodes:
        return None
    ordered = sorted(nodes, key=lambda n: n.node_id)
    return ordered[zlib.crc32(group.encode()) % len(ordered)]


def _response(key: ApiKey, version: int) -> Any:
    return SERVED[key].response[version]


class FindCoordinatorHandler:
    def __init__(self, this: KafkaNode, known: KnownBrokers, access: GroupAccess) -> None:
        self._this = this
        self._known = known
        self._access = access

    def _node(self, key: str, key_type: int) -> KafkaNode:
        if key_type == TRANSACTION_KEY:  # every broker forwards to the one coordinator
            return self._this
        return group_broker(key, kafka_nodes(list(self._known.brokers.values()))) or self._this

    async def __call__(self, ctx: RequestContext, request: Any) -> Any:
        version = ctx.api_version
        response = _response(ApiKey.FIND_COORDINATOR, version)
        key_type = request.key_type if version >= 1 else GROUP_KEY
        keys = [request.key] if version < 4 else list(request.coordinator_keys)
        found = []
        for key in keys:
            error, message = await self._check(ctx, key, key_type)
            node = self._node(key, key_type) if error is KafkaError.NONE else None
            found.append((key, node, error, message))
        if version < 4:
            _, node, error, message = found[0]
            return response(
                throttle_time_ms=0,
                error_code=error,
                error_message=message,
                node_id=node.node_id if node else -1,
                host=node.host if node else "",
                port=node.port if node else -1,
            )
        coordinators = [
            response.Coordinator(
                key=key,
                node_id=node.node_id if node else -1,
                host=node.host if node else "",
                port=node.port if node else -1,
                error_code=error,
                error_message=message,
            )
            for key, node, error, message in found
        ]
        return response(throttle_time_ms=0, coordinators=coordinators)

    async def _check(
        self, ctx: RequestContext, key: str, key_type: int
    ) -> tuple[KafkaError, str | None]:
        if key_type == TRANSACTION_KEY:
            refusal = await transactional_refusal(
                self._access.authorizer, ctx.principal, key, "describe"
            )
            return (KafkaError.NONE, None) if refusal is None else (refusal, "not allowed")
        if key_type != GROUP_KEY:
            return KafkaError.INVALID_REQUEST, f"key type {key_type} is not served"
        refusal = await self._access.refusal(ctx, key, "describe")
        if refusal is KafkaError.GROUP_AUTHORIZATION_FAILED:
            return refusal, "not allowed"
        if refusal is not None:
            return refusal, "invalid group id"
        return KafkaError.NONE, None


class JoinGroupHandler:
    def __init__(self, groups: ClassicOps, access: GroupAccess) -> None:
        self._groups = groups
        self._access = access

    async def __call__(self, ctx: RequestContext, request: Any) -> Any:
        version = ctx.api_version
        refusal = await self._access.refusal(ctx, request.group_id, "group")
        if refusal is not None:
            return self._error(version, refusal, request.member_id)
        rebalance_timeout_ms = request.rebalance_timeout_ms if version >= 1 else -1
        if rebalance_timeout_ms < 0:  # v0: the session timeout is the rebalance timeout
            rebalance_timeout_ms = request.session_timeout_ms
        forwarded = ClassicJoinRequest(
            protocol_type=request.protocol_type,
            protocols=[
                ClassicProtocol(name=p.name, metadata=p.metadata) for p in request.protocols
            ],
            session_timeout_ms=request.session_timeout_ms,
            rebalance_timeout_ms=rebalance_timeout_ms,
            member_id=request.member_id or "",
            instance_id=request.group_instance_id if version >= 5 else None,
            client_id=ctx.header.client_id or "",
            client_host=client_host(ctx),
            require_member_id=version >= 4,
        )
        try:
            answer = await self._groups.join(request.group_id, forwarded)
        except ConveyorError as exc:
            return self._error(version, group_error(exc), request.member_id)
        response = _response(ApiKey.JOIN_GROUP, version)
        member_cls = response.JoinGroupResponseMember
        return response(
            throttle_time_ms=0,
            error_code=named_error(answer.error),
            generation_id=answer.generation,
            protocol_type=answer.protocol_type,
            protocol_name=answer.protocol_name or ("" if version < 7 else None),
            leader=answer.leader_id,
            skip_assignment=answer.skip_assignment,
            member_id=answer.member_id,
            members=[
                member_cls(
                    member_id=m.member_id, group_instance_id=m.instance_id, metadata=m.metadata
                )
                for m in answer.members
            ],
        )

    @staticmethod
    def _error(version: int, error: KafkaError, member_id: str | None) -> Any:
        response = _response(ApiKey.JOIN_GROUP, version)
        return response(
            throttle_time_ms=0,
            error_code=error,
            generation_id=-1,
            protocol_type=None,
            protocol_name="" if version < 7 else None,
            leader="",
            skip_assignment=False,
            member_id=member_id or "",
            members=[],
        )


class SyncGroupHandler:
    def __init__(self, groups: ClassicOps, access: GroupAccess) -> None:
        self._groups = groups
        self._access = access

    async def __call__(self, ctx: RequestContext, request: Any) -> Any:
        version = ctx.api_version
        response = _response(ApiKey.SYNC_GROUP, version)
        refusal = await self._access.refusal(ctx, request.group_id, "group")
        if refusal is not None:
            return response(throttle_time_ms=0, error_code=refusal, assignment=b"")
        forwarded = ClassicSyncRequest(
            member_id=request.member_id,
            generation=request.generation_id,
            instance_id=request.group_instance_id if version >= 3 else None,
            protocol_type=request.protocol_type if version >= 5 else None,
            protocol_name=request.protocol_name if version >= 5 else None,
            assignments=[
                ClassicAssignment(member_id=a.member_id, assignment=a.assignment)
                for a in request.assignments
            ],
        )
        try:
            answer = await self._groups.sync(request.group_id, forwarded, 300_000)
        except ConveyorError as exc:
            return response(throttle_time_ms=0, error_code=group_error(exc), assignment=b"")
        return response(
            throttle_time_ms=0,
            error_code=named_error(answer.error),
            protocol_type=answer.protocol_type,
            protocol_name=answer.protocol_name,
            assignment=answer.assignment,
        )


class HeartbeatHandler:
    def __init__(self, groups: ClassicOps, access: GroupAccess) -> None:
        self._groups = groups
        self._access = access

    async def __call__(self, ctx: RequestContext, request: Any) -> Any:
        version = ctx.api_version
        response = _response(ApiKey.HEARTBEAT, version)
        refusal = await self._access.refusal(ctx, request.group_id, "group")
        if refusal is not None:
            return response(throttle_time_ms=0, error_code=refusal)
        forwarded = ClassicHeartbeatRequest(
            member_id=request.member_id,
            generation=request.generation_id,
            instance_id=request.group_instance_id if version >= 3 else None,
        )
        try:
            answer = await self._groups.heartbeat(request.group_id, forwarded)
        except ConveyorError as exc:
            return response(throttle_time_ms=0, error_code=group_error(exc))
        return response(throttle_time_ms=0, error_code=named_error(answer.error))


class LeaveGroupHandler:
    def __init__(self, groups: ClassicOps, access: GroupAccess) -> None:
        self._groups = groups
        self._access = access

    async def __call__(self, ctx: RequestContext, request: Any) -> Any:
        version = ctx.api_version
        response = _response(ApiKey.LEAVE_GROUP, version)
        if version >= 3:
            leaving = [
                ClassicLeaving(member_id=m.member_id, instance_id=m.group_instance_id)
                for m in request.members
            ]
        else:
            leaving = [ClassicLeaving(member_id=request.member_id)]
        refusal = await self._access.refusal(ctx, request.group_id, "group")
        try:
            answer = (
                None
                if refusal is not None
                else await self._groups.leave(
                    request.group_id, ClassicLeaveRequest(members=leaving)
                )
            )
        except ConveyorError as exc:
            refusal = group_error(exc)
            answer = None
        if answer is None or answer.error is not None:
            error = refusal if answer is None else named_error(answer.error)
            return response(throttle_time_ms=0, error_code=error, members=[])
        members = [
            response.MemberResponse(
                member_id=m.member_id,
                group_instance_id=m.instance_id,
                error_code=named_error(m.error),
            )
            for m in answer.members
        ]
        top = KafkaError.NONE
        if version < 3 and members:  # one member: its result is the answer
            top = KafkaError(members[0].error_code)
        return response(throttle_time_ms=0, error_code=top, members=members)
