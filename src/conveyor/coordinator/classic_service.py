"""The shell around ``classic.py`` (Kafka's classic group protocol): the groups in
memory, the requests parked at the JoinGroup barrier or waiting for the leader's
SyncGroup, and one timer per group at its next deadline.

Every event is one synchronous call into the pure rules on the event loop (no await
between reading a group and storing its successor, so no lock is needed); the outcome's
answers complete the parked requests they name. Like Conveyor's own groups, membership is
soft state: after a coordinator restart members learn UNKNOWN_MEMBER_ID at their next
heartbeat and join again (a new group's first rebalance waits the initial delay, which
lets them all arrive); committed offsets are durable in the coordinator's store.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from typing import Final, TypeVar

from conveyor.coordinator import classic
from conveyor.coordinator.classic_model import (
    ClassicGroup,
    JoinAnswer,
    JoinRequest,
    JoinResult,
    Limits,
    Outcome,
    Protocol,
    SyncAnswer,
    SyncRequest,
    SyncResult,
)
from conveyor.protocol.errors import ConveyorError, ErrorCode
from conveyor.protocol.group_messages import (
    ClassicJoinedMember,
    ClassicJoinRequest,
    ClassicJoinResponse,
    ClassicLeaveRequest,
    ClassicLeaveResponse,
    ClassicLeft,
    ClassicSyncRequest,
    ClassicSyncResponse,
    GroupResult,
)
from conveyor.transport.waits import within

log = logging.getLogger(__name__)

PARKED_MARGIN_MS: Final = 5_000  # beyond the group's own deadlines, a parked request gives up
REBALANCE_TIMEOUT_MS_MAX: Final = 3_600_000  # Conveyor's max poll interval limit
EMPTIED_GROUPS_MAX: Final = 100_000  # emptied groups whose protocol type is remembered
_Key = tuple[str, str]  # (group, member id)
T = TypeVar("T")


def _name(code: ErrorCode | None) -> str | None:
    return None if code is None else code.name


def join_response(result: JoinResult) -> ClassicJoinResponse:
    return ClassicJoinResponse(
        member_id=result.member_id,
        error=_name(result.error),
        generation=result.generation,
        protocol_type=result.protocol_type,
        protocol_name=result.protocol_name,
        leader_id=result.leader_id,
        members=[
            ClassicJoinedMember(
                member_id=m.member_id, instance_id=m.instance_id, metadata=m.metadata
            )
            for m in result.members
        ],
        skip_assignment=result.skip_assignment,
    )


def sync_response(result: SyncResult) -> ClassicSyncResponse:
    return ClassicSyncResponse(
        error=_name(result.error),
        protocol_type=result.protocol_type,
        protocol_name=result.protocol_name,
        assignment=result.assignment,
    )


class ClassicGroups:
    """Narrow dependencies: the limits, the clock, a way to count rebalances, and
    ``other_kind`` (does a Conveyor group of this name have members: then a classic
    member is refused with INCONSISTENT_GROUP_PROTOCOL)."""

    def __init__(
        self,
        *,
        limits: Limits,
        now_ms: Callable[[], int],
        rebalanced: Callable[[str], None],
        other_kind: Callable[[str], bool],
        groups_max: int,
    ) -> None:
        self.limits = limits
        self._now_ms = now_ms
        self._rebalanced = rebalanced
        self._other_kind = other_kind
        self._groups_max = groups_max
        self.groups: dict[str, ClassicGroup] = {}
        # The protocol type of groups whose members all left (their state is forgotten,
        # their offsets stay): Kafka lists such a group as an Empty "consumer" group, not
        # as a "simple" one (protocol type ""). Soft state, at most EMPTIED_GROUPS_MAX.
        self.emptied: dict[str, str] = {}
        self._joins: dict[_Key, list[asyncio.Future[JoinResult]]] = {}
        self._syncs: dict[_Key, list[asyncio.Future[SyncResult]]] = {}
        self._timers: dict[str, asyncio.TimerHandle] = {}
        self._ids = 0

    def active(self, name: str) -> bool:
        group = self.groups.get(name)
        return group is not None and bool(group.members or group.pending)

    # ---- JoinGroup and SyncGroup: parked until answered -----------------------------------

    async def join(
        self, name: str, request: ClassicJoinRequest, new_member_id: str
    ) -> ClassicJoinResponse:
        if self._other_kind(name):
            return ClassicJoinResponse(
                member_id=request.member_id, error=ErrorCode.INCONSISTENT_GROUP_PROTOCOL.name
            )
        if name not in self.groups and len(self.groups) >= self._groups_max:
            return ClassicJoinResponse(
                member_id=request.member_id, error=ErrorCode.GROUP_MAX_SIZE_REACHED.name
            )
        event = JoinRequest(
            member_id=request.member_id,
            instance_id=request.instance_id,
            client_id=request.client_id[:200],
            host=request.client_host[:100],
            protocol_type=request.protocol_type,
            protocols=tuple(Protocol(p.name, p.metadata) for p in request.protocols),
            session_timeout_ms=request.session_timeout_ms,
            # Kafka takes any; a bound keeps parked requests and deadlines finite
            rebalance_timeout_ms=min(
                max(request.rebalance_timeout_ms, 0), REBALANCE_TIMEOUT_MS_MAX
            ),
            require_member_id=request.require_member_id,
        )
        group = self.groups.get(name) or ClassicGroup(name)
        outcome = classic.join(group, event, self._now_ms(), new_member_id, self.limits)
        mine = {request.member_id} if request.member_id else {"", new_member_id}
        own = [
            a.result for a in outcome.answers if isinstance(a, JoinAnswer) and a.member_id in mine
        ]
        parked: asyncio.Future[JoinResult] | None = None
        if not own:  # parked at the barrier: the answer comes with a later outcome
            member_id = request.member_id or new_member_id
            parked = asyncio.get_running_loop().create_future()
            self._joins.setdefault((name, member_id), []).append(parked)
        self._apply(name, group, outcome)
        if parked is None:
            return join_response(own[0])
        wait_ms = self._wait_ms(name, request.rebalance_timeout_ms)
        return join_response(await self._wait(self._joins, (name, member_id), parked, wait_ms))

    async def sync(self, name: str, request: ClassicSyncRequest) -> ClassicSyncResponse:
        group = self.groups.get(name)
        if group is None:
            return ClassicSyncResponse(error=ErrorCode.UNKNOWN_MEMBER.name)
        event = SyncRequest(
            member_id=request.member_id,
            instance_id=request.instance_id,
            generation=request.generation,
            protocol_type=request.protocol_type,
            protocol_name=request.protocol_name,
            assignments={a.member_id: a.assignment for a in request.assignments},
        )
        outcome = classic.sync(group, event, self._now_ms(), self.limits)
        own = [
            a.result
            for a in outcome.answers
            if isinstance(a, SyncAnswer) and a.member_id == request.member_id
        ]
        key = (name, request.member_id)
        parked: asyncio.Future[SyncResult] | None = None
        if not own:
            parked = asyncio.get_running_loop().create_future()
            self._syncs.setdefault(key, []).append(parked)
        self._apply(name, group, outcome)
        if parked is None:
            return sync_response(own[0])
        wait_ms = self._wait_ms(name, 0)
        return sync_response(await self._wait(self._syncs, key, parked, wait_ms))

    def _wait_ms(self, name: str, asked_ms: int) -> int:
        group = self.groups.get(name)
        timeout_ms = max(asked_ms, group.rebalance_timeout_ms if group else 0)
        return timeout_ms + self.limits.initial_rebalance_delay_ms + PARKED_MARGIN_MS

    async def _wait(
        self,
        parked_map: dict[_Key, list[asyncio.Future[T]]],
        key: _Key,
        parked: asyncio.Future[T],
        wait_ms: int,
    ) -> T:
        try:
            return await within(asyncio.shield(parked), wait_ms / 1000)
        except TimeoutError:  # a bug: every parked request has a deadline in the group
            log.error("group %s: a request of member %s was never answered", key[0], key[1])
            raise ConveyorError(
                f"group {key[0]}: no answer for member {key[1]} within {wait_ms} ms",
                code=ErrorCode.REBALANCE_IN_PROGRESS,
            ) from None
        finally:  # answered, timed out, or the caller went away (its connection closed)
            waiting = parked_map.get(key)
            if waiting is not None and parked in waiting:
                waiting.remove(parked)
                if not waiting:
                    del parked_map[key]

    # ---- Heartbeat and LeaveGroup: answered at once ------------------------------------

    def heartbeat(
        self, name: str, member_id: str, instance_id: str | None, generation: int
    ) -> GroupResult:
        group = self.groups.get(name)
        if group is None:
            return GroupResult(error=ErrorCode.UNKNOWN_MEMBER.name)
        renewed, error = classic.heartbeat(
            group, member_id, instance_id, generation, self._now_ms()
        )
        self.groups[name] = renewed
        self._schedule(name)
        return GroupResult(error=_name(error))

    def leave(self, name: str, request: ClassicLeaveRequest) -> ClassicLeaveResponse:
        group = self.groups.get(name)
        if group is None:
            return ClassicLeaveResponse(error=ErrorCode.UNKNOWN_MEMBER.name)
        leaving = [classic.Leaving(m.member_id, m.instance_id) for m in request.members]
        outcome, results = classic.leave(group, leaving, self._now_ms(), self.limits)
        self._apply(name, group, outcome)
        return ClassicLeaveResponse(
            members=[
                ClassicLeft(
                    member_id=member_id or asked.member_id,
                    instance_id=asked.instance_id,
                    error=_name(error),
                )
                for asked, (member_id, error) in zip(request.members, results, strict=True)
            ]
        )

    def commit_error(
        self,
        name: str,
        member_id: str,
        instance_id: str | None,
        generation: int,
        transactional: bool = False,
    ) -> ErrorCode | None:
        group = self.groups.get(name)
        return classic.commit_error(group, member_id, instance_id, generation, transactional)

    # ---- time and lifecycle ---------------------------------------------------------------

    def _apply(self, name: str, before: ClassicGroup, outcome: Outcome) -> None:
        after = outcome.group
        for reason in outcome.reasons:
            log.info("group %s: %s", name, reason)
        if after.generation != before.generation and after.members:
            self._rebalanced(name)
        if after.removable and not self._parked(name):
            self.groups.pop(name, None)
            if before.members and after.protocol_type:
                self._emptied(name, after.protocol_type)
        else:
            self.groups[name] = after
            self.emptied.pop(name, None)
        for answer in outcome.answers:
            if isinstance(answer, JoinAnswer):
                self._deliver(self._joins, (name, answer.member_id), answer.result)
            else:
                self._deliver(self._syncs, (name, answer.member_id), answer.result)
        self._schedule(name)

    def _emptied(self, name: str, protocol_type: str) -> None:
        self.emptied.pop(name, None)
        self.emptied[name] = protocol_type
        while len(self.emptied) > EMPTIED_GROUPS_MAX:  # the longest emptied goes first
            del self.emptied[next(iter(self.emptied))]

    def _parked(self, name: str) -> bool:
        return any(k[0] == name for k in self._joins) or any(k[0] == name for k in self._syncs)

    @staticmethod
    def _deliver(parked_map: dict[_Key, list[asyncio.Future[T]]], key: _Key, result: T) -> None:
        for future in parked_map.pop(key, []):
            if not future.done():
                future.set_result(result)

    def _schedule(self, name: str) -> None:
        timer = self._timers.pop(name, None)
        if timer is not None:
            timer.cancel()
        group = self.groups.get(name)
        deadline = group.next_deadline_ms() if group is not None else None
        if deadline is None:
            return
        delay_s = max(0, deadline - self._now_ms()) / 1000
        loop = asyncio.get_running_loop()
        self._timers[name] = loop.call_later(delay_s, self._tick, name)

    def _tick(self, name: str) -> None:
        self._timers.pop(name, None)
        group = self.groups.get(name)
        if group is None:
            return
        try:
            self._apply(name, group, classic.tick(group, self._now_ms(), self.limits))
        except Exception:  # a bug: keep the other groups' timers running
            log.exception("group %s: deadline handling failed", name)

    def member_counts(self) -> dict[str, int]:
        return {name: len(g.members) for name, g in self.groups.items() if g.members}

    def reset(self, error: ConveyorError) -> None:
        """This coordinator stopped being active: forget every group and fail every parked
        request (its member finds the active coordinator and joins again)."""
        for timer in self._timers.values():
            timer.cancel()
        self._timers.clear()
        self.groups.clear()
        self.emptied.clear()
        for parked_map in (self._joins, self._syncs):
            for futures in parked_map.values():
                for future in futures:
                    if not future.done():
                        future.set_exception(error)
            parked_map.clear()
