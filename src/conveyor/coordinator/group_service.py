"""The shell around ``groups.py``: one in-memory :class:`Group` per name, heartbeats,
expiry, fenced commits, descriptions with lag. Membership is soft state (members
re-register within a heartbeat after a restart); committed offsets go through the
coordinator's durable state transitions."""

from __future__ import annotations

import asyncio
import logging
import uuid
from collections.abc import Awaitable, Callable, Mapping
from typing import Final, Literal, Protocol, TypeVar

from immutables import Map

from conveyor.coordinator import groups, views
from conveyor.coordinator import state as core
from conveyor.coordinator.classic_model import ClassicGroup, Limits
from conveyor.coordinator.classic_service import ClassicGroups
from conveyor.coordinator.groups import TP, Group, Heartbeat
from conveyor.coordinator.model import ClusterState
from conveyor.coordinator.state import Result
from conveyor.coordinator.validation import validate_group_name
from conveyor.protocol.errors import ConveyorError, ErrorCode, InvalidRequestError
from conveyor.protocol.kafka import consumer_protocol
from conveyor.protocol.messages import (
    GroupDescription,
    GroupHeartbeatRequest,
    GroupHeartbeatResponse,
    GroupList,
    GroupMemberDescription,
    GroupPartition,
    GroupPartitionLag,
    GroupSummary,
    OffsetCommitRequest,
    OffsetFetchResponse,
    ResetOffsetsRequest,
)

log = logging.getLogger(__name__)

GROUPS_WITH_MEMBERS_MAX: Final = 10_000  # bounds the coordinator's membership memory
# After this coordinator starts deciding (a restart, a takeover), commits of members it does
# not know yet are retried rather than fenced for this long (groups.check_commit): members
# heartbeat within their session timeout, which clients rarely set above 30 s.
GROUP_REBUILD_MS: Final = 30_000
T = TypeVar("T")


class Transition(Protocol):
    """The coordinator's one way to change its state: decide, persist, apply."""

    def __call__(self, decide: Callable[[ClusterState], Result[T]]) -> Awaitable[T]: ...


class GroupMetrics(Protocol):
    def rebalanced(self, group: str) -> None: ...

    def member_expired(self, group: str) -> None: ...


def partition_counts(state: ClusterState) -> dict[str, int]:
    return {name: topic.partition_count for name, topic in state.topics.items()}


def _parts(tps: list[TP]) -> list[GroupPartition]:
    return [GroupPartition(topic=t, partition=p) for t, p in tps]


def _topics(group: Group) -> set[str]:
    return {t for m in group.members.values() for t in m.topics}


_CLASSIC_STATES: Final[dict[str, Literal["empty", "stable", "rebalancing"]]] = {
    "empty": "empty",
    "preparing": "rebalancing",
    "completing": "rebalancing",
    "stable": "stable",
}
# stands for "the group has members" when fencing a member-less commit (check_commit)
_NOBODY: Final = groups.Member("", "", (), 0, 0, 0)


class GroupManager:
    """Every consumer group of the cluster, whatever its protocol: Conveyor's own
    (``groups.py``: Conveyor's clients, and Kafka clients with ``group.protocol=consumer``,
    KIP-848) in ``groups``, Kafka's classic protocol (``classic.py``) in ``classic``. A
    name has members of one kind at a time (INCONSISTENT_GROUP_PROTOCOL, Kafka's rule);
    both kinds commit into the one store of offsets (the cluster state).

    Narrow dependencies: the current state (a read), the coordinator's ``transition``
    (the only way committed offsets change), the metrics it counts, and the clock."""

    def __init__(
        self,
        *,
        state: Callable[[], ClusterState],
        transition: Transition,
        metrics: GroupMetrics,
        now_ms: Callable[[], int],
        classic_limits: Limits | None = None,
    ) -> None:
        self._state = state
        self._transition = transition
        self._metrics = metrics
        self._now_ms = now_ms
        self.groups: dict[str, Group] = {}
        # The generation each emptied group had reached: its next life counts on from
        # there, so a commit sent in an earlier life (delayed in the network) carries a
        # generation older than any member's of the new one and is fenced (groups.py
        # check_commit), never mistaken for a current member's (chaos seed 202).
        self._emptied_at: dict[str, int] = {}
        self.classic = ClassicGroups(
            limits=classic_limits or Limits(),
            now_ms=now_ms,
            rebalanced=metrics.rebalanced,
            other_kind=lambda name: name in self.groups,
            groups_max=GROUPS_WITH_MEMBERS_MAX,
        )
        self._lock = asyncio.Lock()
        # membership is soft state: after a restart, members first report what they own
        self._started_ms = now_ms()
        self._recover = True

    def started(self, recover: bool) -> None:
        """The state is loaded. ``recover`` False (a new cluster: no topics) means no
        member can be consuming yet, so groups need no recovery window."""
        self._started_ms = self._now_ms()
        self._recover = recover

    def rebuilding(self, now_ms: int) -> bool:
        """Whether membership is still being rebuilt from heartbeats: this coordinator
        became active recently (a restart, a takeover) with topics that members may be
        consuming. Commits of members it does not know yet, or with a generation from
        before, are then told to retry, not fenced (``groups.check_commit``), over either
        protocol."""
        return self._recover and now_ms < self._started_ms + GROUP_REBUILD_MS

    def reset(self, error: ConveyorError | None = None) -> None:
        """Forget every membership (this coordinator stopped being active): the next
        active one rebuilds them from the members' heartbeats. Requests parked at a
        classic group's barrier fail with ``error``."""
        self.groups.clear()
        self.classic.reset(
            error or ConveyorError("the coordinator stepped down", code=ErrorCode.NOT_COORDINATOR)
        )

    def has_members(self, name: str) -> bool:
        return name in self.groups or self.classic.active(name)

    def inconsistent(self, name: str) -> InvalidRequestError:
        return InvalidRequestError(
            f"group {name} has members using Kafka's classic group protocol; a Conveyor "
            "consumer (or a Kafka consumer with group.protocol=consumer) cannot join it until "
            "they leave",
            code=ErrorCode.INCONSISTENT_GROUP_PROTOCOL,
            group=name,
        )

    def _new(self, name: str) -> Group:
        generation = self._emptied_at.get(name, 0)
        if not self._recover:
            return Group(name, generation=generation)
        return Group(
            name,
            generation=generation,
            recovering_until_ms=self._started_ms,
            recovery_started_ms=self._started_ms,
        )

    def _set(self, before: Group, after: Group) -> None:
        if after.generation != before.generation:
            log.info(
                "group %s: generation %d, members %s, target %s",
                after.name,
                after.generation,
                sorted(after.members),
                {m: sorted(f"{t}-{p}" for t, p in tps) for m, tps in after.target.items()},
            )
            self._metrics.rebalanced(after.name)
        if after.members:
            self.groups[after.name] = after
        else:  # an empty group keeps only its committed offsets (in the cluster state)
            self.groups.pop(after.name, None)
            self._emptied_at[after.name] = after.generation

    async def heartbeat(
        self, name: str, request: GroupHeartbeatRequest, host: str = ""
    ) -> GroupHeartbeatResponse:
        validate_group_name(name)
        if not request.topics:
            raise InvalidRequestError(
                f"a member subscribes to 1..{groups.TOPICS_PER_MEMBER_MAX} topics"
            )
        counts = partition_counts(self._state())
        unknown = [t for t in request.topics if t not in counts]
        if unknown:
            raise InvalidRequestError(
                f"unknown topics {unknown}", code=ErrorCode.UNKNOWN_TOPIC, topics=unknown
            )
        beat = Heartbeat(
            member_id=request.member_id,
            client_id=request.client_id[:200],
            topics=tuple(request.topics),
            owned=frozenset(TP(o.topic, o.partition) for o in request.owned),
            session_timeout_ms=request.session_timeout_ms,
            max_poll_interval_ms=request.max_poll_interval_ms,
            poll_age_ms=request.poll_age_ms,
            leave=request.leave,
            host=host[:100],
            instance_id=request.instance_id,
        )
        return await self.beat(name, beat, request.client_id)

    async def beat(
        self, name: str, beat: Heartbeat, client_id: str, new_member_id: str | None = None
    ) -> GroupHeartbeatResponse:
        """One heartbeat of a member of a Conveyor group (``groups.heartbeat``), from
        Conveyor's HTTP route or Kafka's ConsumerGroupHeartbeat (``kafka_groups.py``)."""
        counts = partition_counts(self._state())
        async with self._lock:
            if self.classic.active(name):
                raise self.inconsistent(name)
            if name in self._state().share_groups:  # issue 23: another group type
                raise InvalidRequestError(
                    f"{name} is a share group (a queue): a consumer group needs another name",
                    code=ErrorCode.INCONSISTENT_GROUP_PROTOCOL,
                    group=name,
                )
            if name not in self.groups and len(self.groups) >= GROUPS_WITH_MEMBERS_MAX:
                raise InvalidRequestError(
                    f"{GROUPS_WITH_MEMBERS_MAX} groups have members, the limit; group {name} "
                    "cannot start"
                )
            before = self.groups.get(name) or self._new(name)
            after, member_id, error = groups.heartbeat(
                before,
                beat,
                self._now_ms(),
                counts,
                new_member_id or f"{client_id[:40] or 'member'}-{uuid.uuid4().hex[:12]}",
            )
            self._set(before, after)
            if error is not None:
                log.warning("%s", error.message)
                raise error
        return GroupHeartbeatResponse(
            member_id=member_id,
            generation=after.generation,
            assigned=_parts(after.assigned_to(member_id)),
            pending=_parts(after.pending_for(member_id)),
            heartbeat_interval_ms=groups.HEARTBEAT_INTERVAL_MS,
        )

    async def resubscribe(self, name: str, topics: Mapping[str, tuple[str, ...]]) -> None:
        """Members' topics resolved again together (``groups.resubscribe``)."""
        counts = partition_counts(self._state())
        async with self._lock:
            before = self.groups.get(name)
            if before is not None:
                self._set(before, groups.resubscribe(before, topics, counts, self._now_ms()))

    async def rename(self, name: str, old_id: str, new_id: str) -> GroupHeartbeatResponse:
        """A static member's new incarnation takes its place (``groups.rename``)."""
        async with self._lock:
            group = self.groups.get(name)
            if group is None or old_id not in group.members:
                raise groups.unknown(Group(name), old_id)
            after = groups.rename(group, old_id, new_id, self._now_ms())
            self._set(group, after)
        log.info("group %s: static member %s rejoined as %s (no rebalance)", name, old_id, new_id)
        return GroupHeartbeatResponse(
            member_id=new_id,
            generation=after.generation,
            assigned=_parts(after.assigned_to(new_id)),
            pending=_parts(after.pending_for(new_id)),
            heartbeat_interval_ms=groups.HEARTBEAT_INTERVAL_MS,
        )

    async def expire(self) -> None:
        counts = partition_counts(self._state())
        async with self._lock:
            now = self._now_ms()
            for name, before in list(self.groups.items()):
                after = groups.refresh(groups.expire(before, now, counts), counts, now)
                for gone in set(before.members) - set(after.members):
                    log.warning(
                        "group %s: member %s removed (session timed out, or held a revoked "
                        "partition past its max poll interval); its partitions are free",
                        name,
                        gone,
                    )
                    self._metrics.member_expired(name)
                self._set(before, after)

    async def commit(self, name: str, request: OffsetCommitRequest) -> OffsetFetchResponse:
        """Fenced against the membership at the moment the commit is decided (inside the
        transition, so commits of every group share store writes: group commit)."""
        validate_group_name(name)
        tps = [TP(o.topic, o.partition) for o in request.offsets]
        now = self._now_ms()

        rebuilding = self.rebuilding(now)

        def decide(state: ClusterState) -> Result[OffsetFetchResponse]:
            if self.classic.active(name):
                if request.member_id is not None:
                    raise self.inconsistent(name)
                groups.check_commit(Group(name, members={"": _NOBODY}), None, -1, tps)
            group = self.groups.get(name, Group(name))
            groups.check_commit(group, request.member_id, request.generation, tps, rebuilding)
            return core.commit_offsets(state, name, request, now)

        return await self._transition(decide)

    async def reset_offsets(self, name: str, request: ResetOffsetsRequest) -> OffsetFetchResponse:
        """Operators' reset: only while the group has no members (Kafka's rule)."""
        validate_group_name(name)
        commit = OffsetCommitRequest(offsets=request.offsets)
        now = self._now_ms()

        def decide(state: ClusterState) -> Result[OffsetFetchResponse]:
            self.require_empty(name)
            return core.commit_offsets(state, name, commit, now)

        return await self._transition(decide)

    async def delete(self, name: str) -> None:
        """Delete an empty group (its committed offsets); 409 GROUP_NOT_EMPTY with members,
        404 UNKNOWN_GROUP when it has committed nothing."""
        validate_group_name(name)
        async with self._lock:
            self.require_empty(name)
            await self._transition(lambda s: core.delete_group(s, name))
            self.classic.emptied.pop(name, None)

    def require_empty(self, name: str) -> None:
        members = len(self.groups[name].members) if name in self.groups else 0
        members += len(self.classic.groups[name].members) if name in self.classic.groups else 0
        if members:
            raise InvalidRequestError(
                f"group {name} has {members} active members: stop them first",
                code=ErrorCode.GROUP_NOT_EMPTY,
                group=name,
            )

    # ---- views ---------------------------------------------------------------------------

    def member_counts(self) -> dict[str, int]:
        """Members per group that has any (for the metrics)."""
        counts = {name: len(group.members) for name, group in self.groups.items()}
        return {**counts, **self.classic.member_counts()}

    def names(self) -> list[str]:
        return self._names(self._state())

    def _names(self, state: ClusterState) -> list[str]:
        return sorted(set(state.group_offsets) | set(self.groups) | set(self.classic.groups))

    def describe(self, name: str) -> GroupDescription:
        validate_group_name(name)
        return self._description(self._state(), name)

    def _description(self, state: ClusterState, name: str) -> GroupDescription:
        classic_group = self.classic.groups.get(name)
        if classic_group is not None and name not in self.groups:
            return self._describe_classic(state, classic_group)
        group = self.groups.get(name, Group(name))
        now = self._now_ms()
        members = [
            GroupMemberDescription(
                member_id=m.member_id,
                client_id=m.client_id,
                host=m.host,
                topics=list(m.topics),
                assigned=_parts(group.assigned_to(m.member_id)),
                revoking=_parts(group.revoking(m.member_id)),
                pending=_parts(group.pending_for(m.member_id)),
                last_heartbeat_age_ms=max(0, now - m.last_heartbeat_ms),
                instance_id=m.instance_id,
            )
            for m in sorted(group.members.values(), key=lambda m: m.member_id)
        ]
        return GroupDescription(
            group=name,
            state=group.state,
            generation=group.generation,
            rebalances=group.rebalances,
            members=members,
            partitions=(rows := self._lag_rows(state, name, _topics(group), group.given)),
            lag=sum(r.lag or 0 for r in rows),
        )

    def _describe_classic(self, state: ClusterState, group: ClassicGroup) -> GroupDescription:
        """A Kafka classic group: its members' topics and partitions read from their
        subscriptions and the leader's assignment (the "consumer" protocol's bytes)."""
        now = self._now_ms()
        owners: dict[TP, str] = {}
        members = []
        for m in sorted(group.members.values(), key=lambda m: m.member_id):
            subscribed = consumer_protocol.subscribed_topics(m.metadata_for(group.protocol_name))
            assigned = consumer_protocol.assigned_partitions(m.assignment) or []
            owners.update({TP(t, p): m.member_id for t, p in assigned})
            members.append(
                GroupMemberDescription(
                    member_id=m.member_id,
                    client_id=m.client_id,
                    host=m.host,
                    topics=subscribed or [],
                    assigned=_parts([TP(t, p) for t, p in assigned]),
                    last_heartbeat_age_ms=max(0, now - m.last_heartbeat_ms),
                    instance_id=m.instance_id,
                )
            )
        topics = {t for m in members for t in m.topics} | {p.topic for p in owners}
        rows = self._lag_rows(state, group.name, topics, owners)
        return GroupDescription(
            group=group.name,
            state=_CLASSIC_STATES[group.state],
            generation=group.generation,
            rebalances=group.rebalances,
            members=members,
            partitions=rows,
            lag=sum(r.lag or 0 for r in rows),
            protocol="classic",
        )

    def _lag_rows(
        self, state: ClusterState, name: str, topics: set[str], owners: Mapping[TP, str]
    ) -> list[GroupPartitionLag]:
        """Per partition of the topics the group reads or committed: owner, committed
        offset and lag = the leader's reported log end offset - committed."""
        committed_offsets = state.group_offsets.get(name, Map())
        topics = topics | {t for t, _ in committed_offsets}
        rows: list[GroupPartitionLag] = []
        for topic_name in sorted(t for t in topics if t in state.topics):
            topic = state.topics[topic_name]
            for partition in state.topic_partitions(topic):
                info = views.partition_info(state, partition)
                committed = committed_offsets.get((topic_name, partition.partition))
                offset = committed.offset if committed is not None else None
                lag = None
                if info.log_end_offset is not None:
                    lag = max(0, info.log_end_offset - (offset or 0))
                rows.append(
                    GroupPartitionLag(
                        topic=topic_name,
                        partition=partition.partition,
                        member_id=owners.get(TP(topic_name, partition.partition)),
                        committed_offset=offset,
                        high_watermark=info.high_watermark,
                        log_end_offset=info.log_end_offset,
                        lag=lag,
                    )
                )
        return rows

    def list(self) -> GroupList:
        out = []
        state = self._state()  # one state for the whole list
        for name in self._names(state):
            description = self._description(state, name)
            out.append(
                GroupSummary(
                    group=name,
                    state=description.state,
                    generation=description.generation,
                    members=len(description.members),
                    lag=description.lag,
                    topics=sorted({p.topic for p in description.partitions}),
                    protocol=description.protocol,
                )
            )
        return GroupList(groups=out)
