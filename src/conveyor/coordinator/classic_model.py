"""The classic consumer-group protocol's state (``ClassicGroup``), its requests and
answers: the data ``classic.py``'s pure rules take and return. See ``classic.py``."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from typing import Final, Literal

from conveyor.protocol.errors import ErrorCode

ClassicState = Literal["empty", "preparing", "completing", "stable"]
# Kafka's names, as DescribeGroups and ListGroups answer them
KAFKA_STATE_NAMES: Final[Mapping[ClassicState, str]] = {
    "empty": "Empty",
    "preparing": "PreparingRebalance",
    "completing": "CompletingRebalance",
    "stable": "Stable",
}
PROTOCOLS_PER_MEMBER_MAX: Final = 32
PROTOCOL_METADATA_BYTES_MAX: Final = 1024 * 1024
ASSIGNMENT_BYTES_MAX: Final = 1024 * 1024


@dataclass(frozen=True, slots=True)
class Limits:
    """Kafka's broker settings for classic groups, with Kafka's defaults."""

    min_session_timeout_ms: int = 6_000  # group.min.session.timeout.ms
    max_session_timeout_ms: int = 1_800_000  # group.max.session.timeout.ms
    initial_rebalance_delay_ms: int = 3_000  # group.initial.rebalance.delay.ms
    members_max: int = 1_000  # group.max.size (Kafka: unbounded)


@dataclass(frozen=True, slots=True)
class Protocol:
    """One assignment protocol a member supports (its name and its metadata: for
    ``consumer`` groups the encoded subscription), in the member's order of preference."""

    name: str
    metadata: bytes


@dataclass(frozen=True, slots=True)
class Member:
    member_id: str
    instance_id: str | None
    client_id: str
    host: str
    protocols: tuple[Protocol, ...]
    session_timeout_ms: int
    rebalance_timeout_ms: int
    last_heartbeat_ms: int
    assignment: bytes = b""
    awaiting_join: bool = False  # a JoinGroup of it is parked at the barrier
    awaiting_sync: bool = False  # a SyncGroup of it waits for the leader's

    def metadata_for(self, protocol: str | None) -> bytes:
        return next((p.metadata for p in self.protocols if p.name == protocol), b"")

    def vote(self, candidates: set[str]) -> str:
        return next(p.name for p in self.protocols if p.name in candidates)


@dataclass(frozen=True, slots=True)
class ClassicGroup:
    name: str
    state: ClassicState = "empty"
    generation: int = 0
    protocol_type: str | None = None
    protocol_name: str | None = None
    leader_id: str | None = None
    members: Mapping[str, Member] = field(default_factory=dict)
    # member ids answered MEMBER_ID_REQUIRED -> until when their JoinGroup is awaited
    pending: Mapping[str, int] = field(default_factory=dict)
    # members of the new generation that have not sent SyncGroup yet (removed at the deadline)
    pending_sync: frozenset[str] = frozenset()
    join_deadline_ms: int | None = None  # in "preparing": when the barrier gives up
    sync_deadline_ms: int | None = None
    initial_remaining_ms: int | None = None  # the first rebalance's delay still allowed
    new_member_added: bool = False  # during the first rebalance's delay
    rebalances: int = 0

    @property
    def static_members(self) -> dict[str, str]:
        """instance id -> member id."""
        return {m.instance_id: m.member_id for m in self.members.values() if m.instance_id}

    @property
    def rebalance_timeout_ms(self) -> int:
        return max((m.rebalance_timeout_ms for m in self.members.values()), default=0)

    @property
    def kafka_state(self) -> str:
        return KAFKA_STATE_NAMES[self.state]

    @property
    def removable(self) -> bool:
        """Nothing left to remember in memory (its committed offsets stay in the store)."""
        return not self.members and not self.pending

    def next_deadline_ms(self) -> int | None:
        """When ``classic.tick`` next has something to do (None: nothing scheduled):
        the barrier's or SyncGroup's deadline, a pending member's, a session's end (not
        while a request of the member is parked)."""
        deadlines = [d for d in (self.join_deadline_ms, self.sync_deadline_ms) if d is not None]
        deadlines += list(self.pending.values())
        deadlines += [
            m.last_heartbeat_ms + m.session_timeout_ms
            for m in self.members.values()
            if not (m.awaiting_join or m.awaiting_sync)
        ]
        return min(deadlines, default=None)


# ---- requests and answers ----------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class JoinRequest:
    member_id: str  # "": a new member
    instance_id: str | None
    client_id: str
    host: str
    protocol_type: str
    protocols: tuple[Protocol, ...]
    session_timeout_ms: int
    rebalance_timeout_ms: int
    require_member_id: bool = True  # JoinGroup v4+ (KIP-394)


@dataclass(frozen=True, slots=True)
class JoinedMember:
    member_id: str
    instance_id: str | None
    metadata: bytes


@dataclass(frozen=True, slots=True)
class JoinResult:
    member_id: str
    error: ErrorCode | None = None
    generation: int = -1
    protocol_type: str | None = None
    protocol_name: str | None = None
    leader_id: str = ""
    members: tuple[JoinedMember, ...] = ()  # the leader's: everyone's metadata
    skip_assignment: bool = False  # a static leader rejoining a stable group (v9+)


@dataclass(frozen=True, slots=True)
class SyncRequest:
    member_id: str
    instance_id: str | None
    generation: int
    protocol_type: str | None
    protocol_name: str | None
    assignments: Mapping[str, bytes]  # the leader's: member id -> assignment


@dataclass(frozen=True, slots=True)
class SyncResult:
    error: ErrorCode | None = None
    protocol_type: str | None = None
    protocol_name: str | None = None
    assignment: bytes = b""


@dataclass(frozen=True, slots=True)
class JoinAnswer:
    member_id: str
    result: JoinResult


@dataclass(frozen=True, slots=True)
class SyncAnswer:
    member_id: str
    result: SyncResult


Answer = JoinAnswer | SyncAnswer


@dataclass(frozen=True, slots=True)
class Outcome:
    """The group after an event; answers to deliver to parked requests (the caller's own
    among them when it was answered at once or completed the barrier); ``reasons`` for
    the shell's log."""

    group: ClassicGroup
    answers: tuple[Answer, ...] = ()
    reasons: tuple[str, ...] = ()


class Steps:
    """One event's work: the group as it changes, the answers and reasons so far."""

    def __init__(self, group: ClassicGroup, now_ms: int, limits: Limits) -> None:
        self.group = group
        self.now_ms = now_ms
        self.limits = limits
        self.answers: list[Answer] = []
        self.reasons: list[str] = []

    def outcome(self) -> Outcome:
        return Outcome(self.group, tuple(self.answers), tuple(self.reasons))

    def join_answer(self, member_id: str, result: JoinResult) -> None:
        self.answers.append(JoinAnswer(member_id, result))

    def sync_answer(self, member_id: str, result: SyncResult) -> None:
        self.answers.append(SyncAnswer(member_id, result))

    def set_member(self, member: Member) -> None:
        self.group = replace(self.group, members={**self.group.members, member.member_id: member})
