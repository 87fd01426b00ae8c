"""Kafka's group APIs as operations on the coordinator's one group registry
(``GroupManager``) and its one store of committed offsets: what the internal routes
``/internal/v1/kafka/groups/...`` call for a broker's Kafka listener.

Classic JoinGroup/SyncGroup/Heartbeat/LeaveGroup go to ``classic_service.py``; KIP-848's
ConsumerGroupHeartbeat to Conveyor's own groups (``consumer_groups.py``). Here: offsets
(OffsetCommit fenced by whichever kind of group the name has, OffsetFetch for several
groups, OffsetDelete) and administration (ListGroups, DescribeGroups, DeleteGroups),
each group and partition answered on its own, as Kafka does.
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Callable
from typing import Final

from immutables import Map

from conveyor.coordinator import groups
from conveyor.coordinator import state as core
from conveyor.coordinator.classic_model import ClassicGroup
from conveyor.coordinator.group_service import GroupManager, Transition
from conveyor.coordinator.groups import TP, Group
from conveyor.coordinator.model import ClusterState
from conveyor.coordinator.state import Result
from conveyor.coordinator.transactions import pending_offset
from conveyor.coordinator.validation import (
    offset_refusal,
    validate_group_name,
)
from conveyor.protocol.errors import ConveyorError, ErrorCode
from conveyor.protocol.group_messages import (
    ClassicJoinRequest,
    ClassicJoinResponse,
    ClassicLeaveRequest,
    ClassicLeaveResponse,
    ClassicSyncRequest,
    ClassicSyncResponse,
    FetchedGroup,
    FetchedOffset,
    GroupDeletion,
    GroupResult,
    KafkaCommitRequest,
    KafkaCommitResponse,
    KafkaGroupDeletions,
    KafkaGroupDescription,
    KafkaGroupDescriptions,
    KafkaGroupList,
    KafkaGroupListing,
    KafkaGroupMember,
    KafkaOffsetFetchRequest,
    KafkaOffsetFetchResponse,
    OffsetDeleteRequest,
    OffsetDeleteResponse,
    OffsetFetchGroup,
    PartitionResult,
)
from conveyor.protocol.kafka import consumer_protocol
from conveyor.protocol.messages import OffsetCommitRequest, PartitionOffset

log = logging.getLogger(__name__)

GROUPS_PER_REQUEST_MAX: Final = 1_000
ASSIGNOR_NAME: Final = consumer_protocol.CONVEYOR_ASSIGNOR
# OffsetCommit v9 answers GROUP_ID_NOT_FOUND for a group the coordinator does not know
# (either protocol understands it); older versions ILLEGAL_GENERATION (Kafka's rule)
COMMIT_GROUP_NOT_FOUND_VERSION: Final = 9


def _name(code: ErrorCode | None) -> str | None:
    return None if code is None else code.name


def _no_group_error(request: KafkaCommitRequest, rebuilding: bool) -> ErrorCode | None:
    """A commit to a group with no members in memory: a standalone consumer's is written;
    a member's waits while membership is rebuilt, else the group is unknown."""
    if request.generation < 0:
        return None
    if rebuilding and request.member_id:
        return ErrorCode.NOT_COORDINATOR
    new = request.api_version >= COMMIT_GROUP_NOT_FOUND_VERSION
    return ErrorCode.UNKNOWN_GROUP if new else ErrorCode.ILLEGAL_GENERATION


class KafkaGroups:
    def __init__(
        self,
        manager: GroupManager,
        *,
        state: Callable[[], ClusterState],
        transition: Transition,
        now_ms: Callable[[], int],
    ) -> None:
        self._manager = manager
        self._state = state
        self._transition = transition
        self._now_ms = now_ms

    # ---- the classic protocol -----------------------------------------------------------

    async def join(self, name: str, request: ClassicJoinRequest) -> ClassicJoinResponse:
        validate_group_name(name)
        new_member_id = f"{request.client_id[:40] or 'member'}-{uuid.uuid4()}"
        return await self._manager.classic.join(name, request, new_member_id)

    async def sync(self, name: str, request: ClassicSyncRequest) -> ClassicSyncResponse:
        validate_group_name(name)
        return await self._manager.classic.sync(name, request)

    def heartbeat(
        self, name: str, member_id: str, instance_id: str | None, generation: int
    ) -> GroupResult:
        validate_group_name(name)
        if name in self._manager.groups:  # a classic member of a Conveyor group: gone
            return GroupResult(error=ErrorCode.UNKNOWN_MEMBER.name)
        return self._manager.classic.heartbeat(name, member_id, instance_id, generation)

    def leave(self, name: str, request: ClassicLeaveRequest) -> ClassicLeaveResponse:
        validate_group_name(name)
        return self._manager.classic.leave(name, request)

    # ---- offsets --------------------------------------------------------------------------

    async def commit(self, name: str, request: KafkaCommitRequest) -> KafkaCommitResponse:
        """Fenced by the group's current membership at the moment the commit is decided;
        every partition answered (unknown ones and too long metadata on their own)."""
        validate_group_name(name)
        now = self._now_ms()

        def decide(state: ClusterState) -> Result[KafkaCommitResponse]:
            error = self._commit_error(name, request)
            if error is not None:
                reply = _all_partitions(request.offsets, error)
                return Result(state, (), reply, (f"group {name}: commit refused: {error.name}",))
            results: list[PartitionResult] = []
            valid: list[PartitionOffset] = []
            for item in request.offsets:
                refusal = _partition_refusal(state, item)
                results.append(
                    PartitionResult(
                        topic=item.topic, partition=item.partition, error=_name(refusal)
                    )
                )
                if refusal is None:
                    valid.append(item)
            if not valid:
                return Result(state, (), KafkaCommitResponse(partitions=results))
            done = core.commit_offsets(state, name, OffsetCommitRequest(offsets=valid), now)
            reply = KafkaCommitResponse(partitions=results)
            return Result(done.state, done.records, reply, done.decisions)

        return await self._transition(decide)

    def txn_commit_error(self, name: str, request: KafkaCommitRequest) -> ErrorCode | None:
        """TxnOffsetCommit's fencing by the group (KIP-447): as a commit's, but allowed
        while a rebalance completes and without a member id."""
        validate_group_name(name)
        return self._commit_error(name, request, transactional=True)

    def _commit_error(
        self, name: str, request: KafkaCommitRequest, transactional: bool = False
    ) -> ErrorCode | None:
        manager = self._manager
        member_id, generation = request.member_id, request.generation
        if manager.classic.active(name):
            return manager.classic.commit_error(
                name, member_id, request.instance_id, generation, transactional
            )
        group = manager.groups.get(name)
        # Right after a takeover the members are not all back yet: a member's commit then
        # waits for its next heartbeat (as over HTTP) instead of being fenced, which
        # would make it drop healthy partitions (tests/ha: a commit with the epoch the old
        # coordinator gave was ILLEGAL_GENERATION here). Kafka's answer for a coordinator
        # still loading a group is retriable: COORDINATOR_NOT_AVAILABLE (NOT_COORDINATOR).
        # Not for a TxnOffsetCommit: its retries carry the group metadata the application
        # took before the takeover, so they would wait out the whole window; it is fenced
        # at once and the processor restarts (KIP-447; docs/transactions.md).
        rebuilding = not transactional and manager.rebuilding(self._now_ms())
        if group is None:  # no members in memory
            return _no_group_error(request, rebuilding)
        if not member_id:
            return None if transactional else ErrorCode.UNKNOWN_MEMBER
        tps = [TP(o.topic, o.partition) for o in request.offsets]
        try:  # a KIP-848 member: generation is its member epoch (= a group generation)
            groups.check_commit(group, member_id, generation, tps, rebuilding)
        except ConveyorError as exc:
            return ErrorCode.NOT_COORDINATOR if exc.code is ErrorCode.NOT_READY else exc.code
        return None

    def fetch_offsets(self, request: KafkaOffsetFetchRequest) -> KafkaOffsetFetchResponse:
        state = self._state()
        answers = [
            self._fetch_group(state, g, request.require_stable)
            for g in request.groups[:GROUPS_PER_REQUEST_MAX]
        ]
        return KafkaOffsetFetchResponse(groups=answers)

    def _fetch_group(
        self, state: ClusterState, asked: OffsetFetchGroup, require_stable: bool = False
    ) -> FetchedGroup:
        name = asked.group
        try:
            validate_group_name(name)
        except ConveyorError as exc:
            return FetchedGroup(group=name, error=exc.code.name)
        native = self._manager.groups.get(name)
        if asked.member_id and native is not None and asked.member_id not in native.members:
            return FetchedGroup(group=name, error=ErrorCode.UNKNOWN_MEMBER.name)
        committed = state.group_offsets.get(name, Map())
        wanted = (
            sorted(committed)
            if asked.partitions is None
            else [(p.topic, p.partition) for p in asked.partitions]
        )
        rows = []
        for topic, partition in wanted:
            found = committed.get((topic, partition))
            unstable = require_stable and pending_offset(state, name, topic, partition)
            rows.append(
                FetchedOffset(
                    topic=topic,
                    partition=partition,
                    offset=found.offset if found is not None else -1,
                    metadata=found.metadata if found is not None else None,
                    leader_epoch=found.leader_epoch if found is not None else -1,
                    error=ErrorCode.UNSTABLE_OFFSET_COMMIT.name if unstable else None,
                )
            )
        return FetchedGroup(group=name, partitions=rows)

    async def delete_offsets(self, name: str, request: OffsetDeleteRequest) -> OffsetDeleteResponse:
        """OffsetDelete: refused for a topic the group's members read (Kafka's rule)."""
        validate_group_name(name)
        state = self._state()
        if not self._manager.has_members(name) and name not in state.group_offsets:
            return OffsetDeleteResponse(error=ErrorCode.UNKNOWN_GROUP.name)
        classic = self._manager.classic.groups.get(name)
        if classic is not None and classic.members and classic.protocol_type != "consumer":
            return OffsetDeleteResponse(error=ErrorCode.GROUP_NOT_EMPTY.name)
        read = self._subscribed(name)
        results, doomed = [], []
        for item in request.partitions:
            error = None
            topic = state.topics.get(item.topic)
            if topic is None or not 0 <= item.partition < topic.partition_count:
                error = ErrorCode.UNKNOWN_TOPIC
            elif item.topic in read:
                error = ErrorCode.GROUP_SUBSCRIBED_TO_TOPIC
            else:
                doomed.append((item.topic, item.partition))
            results.append(
                PartitionResult(topic=item.topic, partition=item.partition, error=_name(error))
            )
        if doomed:
            await self._transition(lambda s: core.delete_offsets(s, name, doomed))
        return OffsetDeleteResponse(partitions=results)

    def _subscribed(self, name: str) -> set[str]:
        native = self._manager.groups.get(name)
        if native is not None:
            return {t for m in native.members.values() for t in m.topics}
        classic = self._manager.classic.groups.get(name)
        if classic is None:
            return set()
        topics: set[str] = set()
        for member in classic.members.values():
            topics.update(
                consumer_protocol.subscribed_topics(member.metadata_for(classic.protocol_name))
                or ()
            )
        return topics

    # ---- administration -------------------------------------------------------------------

    def listing(self, states: list[str], types: list[str]) -> KafkaGroupList:
        wanted_states = {s.casefold() for s in states}
        wanted_types = {t.casefold() for t in types}
        out = []
        for name in self._manager.names():
            listing = self._listing(name)
            if wanted_states and listing.state.casefold() not in wanted_states:
                continue
            if wanted_types and listing.group_type not in wanted_types:
                continue
            out.append(listing)
        return KafkaGroupList(groups=out)

    def _listing(self, name: str) -> KafkaGroupListing:
        native = self._manager.groups.get(name)
        if native is not None:
            return KafkaGroupListing(
                group=name,
                protocol_type="consumer",
                state=_native_state(native),
                group_type="consumer",
            )
        classic = self._manager.classic.groups.get(name)
        if classic is not None:
            return KafkaGroupListing(
                group=name,
                protocol_type=classic.protocol_type or "",
                state=classic.kafka_state,
                group_type="classic",
            )
        emptied = self._manager.classic.emptied.get(name, "")
        return KafkaGroupListing(
            group=name, protocol_type=emptied, state="Empty", group_type="classic"
        )

    def describe(self, names: list[str]) -> KafkaGroupDescriptions:
        return KafkaGroupDescriptions(
            groups=[self._describe(name) for name in names[:GROUPS_PER_REQUEST_MAX]]
        )

    def _describe(self, name: str) -> KafkaGroupDescription:
        try:
            validate_group_name(name)
        except ConveyorError as exc:
            return KafkaGroupDescription(group=name, error=exc.code.name)
        native = self._manager.groups.get(name)
        if native is not None:
            return _describe_native(native)
        classic = self._manager.classic.groups.get(name)
        if classic is not None:
            return _describe_classic(classic)
        if name in self._state().group_offsets:
            emptied = self._manager.classic.emptied.get(name, "")
            return KafkaGroupDescription(group=name, state="Empty", protocol_type=emptied)
        return KafkaGroupDescription(group=name, error=ErrorCode.UNKNOWN_GROUP.name)

    async def delete(self, names: list[str]) -> KafkaGroupDeletions:
        results = []
        for name in names[:GROUPS_PER_REQUEST_MAX]:
            try:
                await self._manager.delete(name)
                results.append(GroupDeletion(group=name))
            except ConveyorError as exc:
                results.append(GroupDeletion(group=name, error=exc.code.name))
        return KafkaGroupDeletions(groups=results)


def _all_partitions(offsets: list[PartitionOffset], error: ErrorCode) -> KafkaCommitResponse:
    return KafkaCommitResponse(
        partitions=[
            PartitionResult(topic=o.topic, partition=o.partition, error=error.name) for o in offsets
        ]
    )


def _partition_refusal(state: ClusterState, item: PartitionOffset) -> ErrorCode | None:
    topic = state.topics.get(item.topic)
    if topic is None or not 0 <= item.partition < topic.partition_count:
        return ErrorCode.UNKNOWN_TOPIC
    refusal = offset_refusal(item)
    return refusal[0] if refusal is not None else None


def _native_state(group: Group) -> str:
    """Kafka's consumer-group state names (KIP-848) for Conveyor's group states."""
    return {"empty": "Empty", "stable": "Stable", "rebalancing": "Reconciling"}[group.state]


def _describe_native(group: Group) -> KafkaGroupDescription:
    """A Conveyor group in DescribeGroups' classic terms: the "consumer" protocol's
    subscription and assignment bytes, so Kafka tools show its members and partitions."""
    members = [
        KafkaGroupMember(
            member_id=m.member_id,
            client_id=m.client_id,
            client_host=m.host,
            metadata=consumer_protocol.encode_subscription(m.topics),
            assignment=consumer_protocol.encode_assignment(group.assigned_to(m.member_id)),
        )
        for m in sorted(group.members.values(), key=lambda m: m.member_id)
    ]
    state = "Stable" if group.state == "stable" else "PreparingRebalance"
    return KafkaGroupDescription(
        group=group.name,
        state=state,
        protocol_type="consumer",
        protocol_name=ASSIGNOR_NAME,
        members=members,
    )


def _describe_classic(group: ClassicGroup) -> KafkaGroupDescription:
    stable = group.state == "stable"
    members = [
        KafkaGroupMember(
            member_id=m.member_id,
            instance_id=m.instance_id,
            client_id=m.client_id,
            client_host=m.host,
            metadata=m.metadata_for(group.protocol_name) if stable else b"",
            assignment=m.assignment if stable else b"",
        )
        for m in sorted(group.members.values(), key=lambda m: m.member_id)
    ]
    return KafkaGroupDescription(
        group=group.name,
        state=group.kafka_state,
        protocol_type=group.protocol_type or "",
        protocol_name=(group.protocol_name or "") if stable else "",
        members=members,
    )
