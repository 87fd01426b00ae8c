"""Share groups in the coordinator: pure decisions, no clock, no I/O (issue 23).

A share group is another group type beside consumer groups (``groups.py``), with the
same shape of membership (KIP-932's ShareGroupHeartbeat, itself KIP-848's): one heartbeat
joins (no ``member_id``), renews or leaves; a member silent for its session timeout is
removed. What differs is the assignment: a share group's members do not own partitions.
Records are locked one by one by the partition's leader, so several members may read one
partition and a partition may move between members at any time without a hand-over.
The assignment only spreads members over partitions (KIP-932's simple assignor) so that
each member polls a few leaders instead of all of them:

* per topic, with partitions ``p0..pP-1`` and its subscribed members ``m0..mM-1`` (by id):
  M >= P: member i reads partition i mod P (every partition has M/P members or one more);
  M < P: member i reads every partition j with j mod M = i.

Example: 4 partitions, 16 members: each partition is read by 4 members; 3 members of a
topic with 8 partitions read {0, 3, 6}, {1, 4, 7}, {2, 5}.

The group's settings are durable cluster state (``model.ShareGroup``): created by the first
member's heartbeat (its mode and config) or by ``configure``; a member asking for another
mode is refused (INCONSISTENT_GROUP_PROTOCOL), as is a name a consumer group already uses.
Creating the first share group also creates the internal topic ``__share_state`` (its
compacted, replicated log holds every share-partition's state).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from typing import Final

import msgspec

from conveyor.coordinator import state as core
from conveyor.coordinator.model import (
    ClusterState,
    Record,
    ShareGroup,
    ShareGroupRecord,
    ShareGroupRemoved,
    apply,
)
from conveyor.coordinator.state import Result, TopicDefaults
from conveyor.coordinator.validation import validate_group_name, validate_topic_name
from conveyor.protocol.errors import ErrorCode, InvalidRequestError
from conveyor.protocol.messages import CreateTopicRequest, TopicConfig
from conveyor.protocol.share import (
    STATE_TOPIC,
    ShareGroupConfig,
    ShareMode,
    SharePartitionRef,
    validate_config,
)

MEMBERS_PER_GROUP_MAX: Final = 1_000
TOPICS_PER_MEMBER_MAX: Final = 100
SESSION_TIMEOUT_MS_MIN: Final = 1_000
SESSION_TIMEOUT_MS_MAX: Final = 300_000
HEARTBEAT_INTERVAL_MS: Final = 1_000
STATE_TOPIC_CONFIG: Final = TopicConfig(cleanup_policy="compact", segment_bytes=16 * 1024 * 1024)

TP = tuple[str, int]


@dataclass(frozen=True, slots=True)
class ShareMember:
    member_id: str
    client_id: str
    topics: tuple[str, ...]
    session_timeout_ms: int
    last_heartbeat_ms: int
    host: str = ""


@dataclass(frozen=True, slots=True)
class ShareBeat:
    member_id: str | None  # None: join
    client_id: str
    topics: tuple[str, ...]
    session_timeout_ms: int = 30_000
    leave: bool = False
    host: str = ""


@dataclass(frozen=True, slots=True)
class Membership:
    """A share group's members (soft state: they rejoin after a coordinator restart)."""

    name: str
    epoch: int = 0
    members: Mapping[str, ShareMember] = field(default_factory=dict)
    assignment: Mapping[str, tuple[TP, ...]] = field(default_factory=dict)
    partition_counts: Mapping[str, int] = field(default_factory=dict)


# ---- assignment ----------------------------------------------------------------------------


def assign(
    members: Mapping[str, ShareMember], counts: Mapping[str, int]
) -> dict[str, tuple[TP, ...]]:
    """The module docstring's rule, per topic."""
    out: dict[str, list[TP]] = {m: [] for m in sorted(members)}
    for topic in sorted({t for m in members.values() for t in m.topics}):
        readers = [m for m in sorted(members) if topic in members[m].topics]
        partitions = counts.get(topic, 0)
        if not readers or partitions <= 0:
            continue
        if len(readers) >= partitions:
            for i, member in enumerate(readers):
                out[member].append((topic, i % partitions))
        else:
            for p in range(partitions):
                out[readers[p % len(readers)]].append((topic, p))
    return {m: tuple(sorted(tps)) for m, tps in out.items()}


def _reassigned(group: Membership, counts: Mapping[str, int]) -> Membership:
    relevant = {t: counts.get(t, 0) for m in group.members.values() for t in m.topics}
    return replace(
        group,
        epoch=group.epoch + 1,
        assignment=assign(group.members, relevant),
        partition_counts=relevant,
    )


# ---- membership events ---------------------------------------------------------------------


def heartbeat(
    group: Membership, beat: ShareBeat, now_ms: int, counts: Mapping[str, int], new_id: str
) -> tuple[Membership, str]:
    """Join, renew or leave. A member id this coordinator does not know (it restarted)
    is admitted under that id: there is no ownership to protect."""
    _validate(beat)
    member_id = beat.member_id or new_id
    known = group.members.get(member_id)
    if beat.leave:
        if known is None:
            return group, member_id
        members = {k: v for k, v in group.members.items() if k != member_id}
        return _reassigned(replace(group, members=members), counts), member_id
    if known is None and len(group.members) >= MEMBERS_PER_GROUP_MAX:
        raise InvalidRequestError(
            f"share group {group.name} has {MEMBERS_PER_GROUP_MAX} members, the limit",
            code=ErrorCode.INVALID_CONFIG,
        )
    member = ShareMember(
        member_id=member_id,
        client_id=beat.client_id,
        topics=beat.topics,
        session_timeout_ms=beat.session_timeout_ms,
        last_heartbeat_ms=now_ms,
        host=beat.host or (known.host if known else ""),
    )
    grown = replace(group, members={**group.members, member_id: member})
    if known is None or known.topics != beat.topics:
        return _reassigned(grown, counts), member_id
    return refresh(grown, counts), member_id


def expire(group: Membership, now_ms: int, counts: Mapping[str, int]) -> Membership:
    """Remove members silent past their session timeout."""
    alive = {
        k: m
        for k, m in group.members.items()
        if now_ms - m.last_heartbeat_ms <= m.session_timeout_ms
    }
    if len(alive) == len(group.members):
        return refresh(group, counts)
    return _reassigned(replace(group, members=alive), counts)


def refresh(group: Membership, counts: Mapping[str, int]) -> Membership:
    """A new assignment when a read topic's partition count changed."""
    relevant = {t: counts.get(t, 0) for m in group.members.values() for t in m.topics}
    if relevant == dict(group.partition_counts):
        return group
    return _reassigned(group, counts)


def assigned_to(group: Membership, member_id: str) -> list[SharePartitionRef]:
    return [SharePartitionRef(topic=t, partition=p) for t, p in group.assignment.get(member_id, ())]


def _validate(beat: ShareBeat) -> None:
    if not beat.topics or len(beat.topics) > TOPICS_PER_MEMBER_MAX:
        raise InvalidRequestError(f"a member reads 1..{TOPICS_PER_MEMBER_MAX} topics")
    if not SESSION_TIMEOUT_MS_MIN <= beat.session_timeout_ms <= SESSION_TIMEOUT_MS_MAX:
        raise InvalidRequestError(
            f"session_timeout_ms must be in {SESSION_TIMEOUT_MS_MIN}..{SESSION_TIMEOUT_MS_MAX}",
            code=ErrorCode.INVALID_CONFIG,
        )


# ---- durable settings ----------------------------------------------------------------------


def declare(
    state: ClusterState,
    name: str,
    *,
    mode: ShareMode | None,
    config: ShareGroupConfig | None,
    now_ms: int,
    state_partitions: int,
    defaults: TopicDefaults,
) -> Result[ShareGroup]:
    """A member's view of the group: create it (with ``config``, or the defaults with
    ``mode``), or check that an existing one has the ``mode`` asked for."""
    existing = state.share_groups.get(name)
    if existing is not None:
        if mode is not None and mode != existing.config.mode:
            raise InvalidRequestError(
                f"share group {name} is {existing.config.mode}, not {mode}: use another group "
                "name, or change its mode with `conveyor queue configure`",
                code=ErrorCode.INCONSISTENT_GROUP_PROTOCOL,
                group=name,
                mode=existing.config.mode,
            )
        return Result(state, (), existing)
    wanted = config or ShareGroupConfig()
    if mode is not None:
        if config is not None and config.mode != mode:
            raise InvalidRequestError(
                "mode and config.mode disagree", code=ErrorCode.INVALID_CONFIG
            )
        wanted = msgspec.structs.replace(wanted, mode=mode)
    return configure(
        state,
        name,
        config=wanted,
        now_ms=now_ms,
        state_partitions=state_partitions,
        defaults=defaults,
    )


def configure(
    state: ClusterState,
    name: str,
    *,
    config: ShareGroupConfig,
    now_ms: int,
    state_partitions: int,
    defaults: TopicDefaults,
) -> Result[ShareGroup]:
    """Create the group or replace its settings (version + 1)."""
    validate_group_name(name)
    validate_config(config)
    if config.dead_letter_topic:
        validate_topic_name(config.dead_letter_topic)
    if name in state.group_offsets:
        raise InvalidRequestError(
            f"{name} is a consumer group (it has committed offsets): a share group needs "
            "another name",
            code=ErrorCode.INCONSISTENT_GROUP_PROTOCOL,
            group=name,
        )
    records: list[Record] = []
    decisions: list[str] = []
    if STATE_TOPIC not in state.topics:
        created = core.create_topic(
            state,
            CreateTopicRequest(
                name=STATE_TOPIC, partitions=state_partitions, config=STATE_TOPIC_CONFIG
            ),
            now_ms,
            defaults,
        )
        records += created.records
        decisions += created.decisions
        state = created.state
    existing = state.share_groups.get(name)
    group = ShareGroup(
        name=name,
        config=config,
        version=1 if existing is None else existing.version + 1,
        created_ms=now_ms if existing is None else existing.created_ms,
    )
    records.append(ShareGroupRecord(group))
    verb = "created" if existing is None else f"changed (version {group.version})"
    decisions.append(f"share group {name} {verb}: mode {config.mode}")
    return Result(apply(state, records[-1:]), tuple(records), group, tuple(decisions))


def remove(state: ClusterState, name: str) -> Result[None]:
    if name not in state.share_groups:
        raise InvalidRequestError(
            f"no share group {name!r}", code=ErrorCode.UNKNOWN_GROUP, group=name
        )
    records: list[Record] = [ShareGroupRemoved(name)]
    return Result(apply(state, records), tuple(records), None, (f"share group {name} deleted",))
