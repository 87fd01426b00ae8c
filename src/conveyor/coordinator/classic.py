"""Kafka's classic consumer-group protocol (JoinGroup, SyncGroup, Heartbeat, LeaveGroup):
pure decisions, no clock, no I/O. ``(group, event, now_ms) -> Outcome(group, answers)``.

The rules are Kafka's own (its ``GroupMetadataManager``/``ClassicGroup``), so every
Kafka client's state machine meets the answers it was written against:

* **States**: ``empty`` -> ``preparing`` (PreparingRebalance: the JoinGroup barrier) ->
  ``completing`` (CompletingRebalance: the members have their JoinGroup answers and the
  leader computes the assignment) -> ``stable`` (the leader's SyncGroup delivered every
  member's assignment). Any membership or metadata change goes back to ``preparing``.
* **The barrier**: a JoinGroup during ``preparing`` is answered only when every member
  has joined again (and no member told MEMBER_ID_REQUIRED is still expected), or when the
  rebalance timeout (the largest of the members') passes; members that did not rejoin
  by then are removed (dynamic ones; static ones keep their place until their session
  times out). A group's first rebalance waits ``initial_rebalance_delay_ms`` (Kafka's
  ``group.initial.rebalance.delay.ms``), extended while new members keep arriving, so a
  starting group does not rebalance once per member.
* **Assignment is the leader's**: the leader's JoinGroup answer lists every member's
  metadata for the chosen protocol; its SyncGroup carries every member's assignment as
  opaque bytes, which the others' SyncGroup answers return. The chosen protocol is the one
  every member supports that most members prefer.
* **Fencing**: UNKNOWN_MEMBER (removed, or never a member), ILLEGAL_GENERATION (not the
  group's current generation), FENCED_INSTANCE_ID (a newer member took the static
  ``group_instance_id``), REBALANCE_IN_PROGRESS (heartbeats during the barrier: rejoin).
* **KIP-394**: a JoinGroup without a member id (v4+) gets MEMBER_ID_REQUIRED and a new id,
  and joins with it; until it does (or its session timeout passes) the barrier waits.
* **Static membership (KIP-345)**: a member rejoining with a known ``instance_id`` and no
  member id takes over the old member's place and assignment; in ``stable`` this needs no
  rebalance (the others keep consuming), unless the group's chosen protocol would change.

Answers to requests parked at the barrier (JoinGroup) or awaiting the leader (SyncGroup)
are *effects*: the shell (``classic_service.py``) holds the parked requests and completes
them with the answers an outcome lists. Time is the caller's ``now_ms``; the shell calls
:func:`tick` at ``ClassicGroup.next_deadline_ms()``.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, replace

from conveyor.coordinator.classic_model import (
    PROTOCOL_METADATA_BYTES_MAX,
    PROTOCOLS_PER_MEMBER_MAX,
    ClassicGroup,
    JoinedMember,
    JoinRequest,
    JoinResult,
    Limits,
    Member,
    Outcome,
    Protocol,
    Steps,
    SyncRequest,
    SyncResult,
)
from conveyor.protocol.errors import ErrorCode

# ---- JoinGroup ----------------------------------------------------------------------------


def join(
    group: ClassicGroup, request: JoinRequest, now_ms: int, new_member_id: str, limits: Limits
) -> Outcome:
    """A JoinGroup. The caller's answer is among the outcome's answers (for its member id,
    or for ``request.member_id`` when refused) now or in a later outcome."""
    steps = Steps(group, now_ms, limits)
    refused = _refusal(group, request, limits)
    if refused is not None:
        steps.join_answer(request.member_id, JoinResult(request.member_id, refused))
        return steps.outcome()
    if request.member_id:
        _join_known(steps, request)
    elif request.instance_id is not None:
        existing = group.static_members.get(request.instance_id)
        if existing is not None:
            _replace_static(steps, existing, request, new_member_id)
        else:
            _add_member(steps, request, new_member_id)
    elif request.require_member_id:
        until = now_ms + request.session_timeout_ms
        steps.group = replace(group, pending={**group.pending, new_member_id: until})
        steps.join_answer("", JoinResult(new_member_id, ErrorCode.MEMBER_ID_REQUIRED))
        steps.reasons.append(f"new member {new_member_id} told to join with its member id")
    else:
        _add_member(steps, request, new_member_id)
    return steps.outcome()


def _refusal(group: ClassicGroup, request: JoinRequest, limits: Limits) -> ErrorCode | None:
    timeout_ms = request.session_timeout_ms
    if not limits.min_session_timeout_ms <= timeout_ms <= limits.max_session_timeout_ms:
        return ErrorCode.INVALID_SESSION_TIMEOUT
    if len(request.protocols) > PROTOCOLS_PER_MEMBER_MAX or any(
        len(p.metadata) > PROTOCOL_METADATA_BYTES_MAX for p in request.protocols
    ):
        return ErrorCode.INCONSISTENT_GROUP_PROTOCOL
    if not _supports(group, request.protocol_type, request.protocols):
        return ErrorCode.INCONSISTENT_GROUP_PROTOCOL
    return None


def _accepts_new(group: ClassicGroup, limits: Limits) -> bool:
    if group.state == "preparing":  # members who rejoin count, not those who may not
        return sum(m.awaiting_join for m in group.members.values()) < limits.members_max
    return len(group.members) < limits.members_max


def _supports(group: ClassicGroup, protocol_type: str, protocols: tuple[Protocol, ...]) -> bool:
    """Kafka's rule: a non-empty group takes only its protocol type, and members that
    support at least one protocol every current member supports."""
    if not protocol_type or not protocols:
        return False
    if not group.members:
        return True
    if protocol_type != group.protocol_type:
        return False
    common = _candidates(group.members.values())
    return any(p.name in common for p in protocols)


def _candidates(members: Iterable[Member]) -> set[str]:
    sets = [{p.name for p in m.protocols} for m in members]
    return set.intersection(*sets) if sets else set()


def _validate_member(
    group: ClassicGroup, member_id: str, instance_id: str | None
) -> ErrorCode | None:
    """Kafka's ``validateMember``: a static member's instance id must map to this id."""
    if instance_id is not None:
        holder = group.static_members.get(instance_id)
        if holder is None:
            return ErrorCode.UNKNOWN_MEMBER
        if holder != member_id:
            return ErrorCode.FENCED_INSTANCE_ID
    if member_id not in group.members:
        return ErrorCode.UNKNOWN_MEMBER
    return None


def _join_known(steps: Steps, request: JoinRequest) -> None:
    group = steps.group
    member_id = request.member_id
    if member_id in group.pending and request.instance_id is None:
        steps.group = replace(group, pending=_without(group.pending, member_id))
        _add_member(steps, request, member_id)
        return
    error = _validate_member(group, member_id, request.instance_id)
    if error is None and group.state == "empty":
        error = ErrorCode.UNKNOWN_MEMBER
    if error is not None:
        steps.join_answer(member_id, JoinResult(member_id, error))
        return
    member = group.members[member_id]
    same = member.protocols == request.protocols
    follower = group.leader_id != member_id
    if same and (group.state == "completing" or (group.state == "stable" and follower)):
        # a lost JoinGroup answer asked again, or a follower with nothing new: this generation
        steps.set_member(replace(member, last_heartbeat_ms=steps.now_ms))
        steps.join_answer(member_id, _current(steps.group, member_id))
        return
    _update_member(steps, member, request)
    _rebalance_or_complete(steps, f"member {member_id} joins again ({group.state})")


def _update_member(steps: Steps, member: Member, request: JoinRequest) -> None:
    steps.set_member(
        replace(
            member,
            protocols=request.protocols,
            session_timeout_ms=request.session_timeout_ms,
            rebalance_timeout_ms=request.rebalance_timeout_ms,
            client_id=request.client_id,
            host=request.host or member.host,
            last_heartbeat_ms=steps.now_ms,
            awaiting_join=True,
        )
    )


def _add_member(steps: Steps, request: JoinRequest, member_id: str) -> None:
    if not _accepts_new(steps.group, steps.limits):
        steps.join_answer(member_id, JoinResult(member_id, ErrorCode.GROUP_MAX_SIZE_REACHED))
        return
    group = steps.group
    if not group.members:
        group = replace(group, protocol_type=request.protocol_type)
    if group.state == "preparing" and group.initial_remaining_ms is not None:
        group = replace(group, new_member_added=True)
    if group.leader_id is None:
        group = replace(group, leader_id=member_id)
    steps.group = group
    steps.set_member(
        Member(
            member_id=member_id,
            instance_id=request.instance_id,
            client_id=request.client_id,
            host=request.host,
            protocols=request.protocols,
            session_timeout_ms=request.session_timeout_ms,
            rebalance_timeout_ms=request.rebalance_timeout_ms,
            last_heartbeat_ms=steps.now_ms,
            awaiting_join=True,
        )
    )
    _rebalance_or_complete(steps, f"member {member_id} joins")


def _replace_static(steps: Steps, old_id: str, request: JoinRequest, new_id: str) -> None:
    """KIP-345: the instance's new incarnation takes the old member's place (and its
    assignment); a request the old one still has parked is answered FENCED_INSTANCE_ID."""
    group = steps.group
    old = group.members[old_id]
    if old.awaiting_join:
        steps.join_answer(old_id, JoinResult(old_id, ErrorCode.FENCED_INSTANCE_ID))
    if old.awaiting_sync:
        steps.sync_answer(old_id, SyncResult(ErrorCode.FENCED_INSTANCE_ID))
    members = {k: v for k, v in group.members.items() if k != old_id}
    renamed = replace(old, member_id=new_id, awaiting_join=False, awaiting_sync=False)
    members[new_id] = renamed
    leader = new_id if group.leader_id == old_id else group.leader_id
    pending_sync = group.pending_sync - {old_id}
    steps.group = replace(group, members=members, leader_id=leader, pending_sync=pending_sync)
    reason = f"static member {request.instance_id} rejoins as {new_id} (was {old_id})"
    _update_member(steps, renamed, request)
    if steps.group.state == "stable":
        if _select_protocol(steps.group) == steps.group.protocol_name:
            steps.set_member(replace(steps.group.members[new_id], awaiting_join=False))
            leader_rejoins = steps.group.leader_id == new_id
            steps.join_answer(new_id, _current(steps.group, new_id, skip=leader_rejoins))
            steps.reasons.append(reason + ": no rebalance (its assignment is kept)")
            return
        reason += " with another protocol"
    _rebalance_or_complete(steps, reason)


def _current(group: ClassicGroup, member_id: str, skip: bool = False) -> JoinResult:
    """The current generation's JoinGroup answer (the leader's lists the members)."""
    leader = group.leader_id == member_id
    return JoinResult(
        member_id=member_id,
        generation=group.generation,
        protocol_type=group.protocol_type,
        protocol_name=group.protocol_name,
        leader_id=group.leader_id or "",
        members=_joined_members(group) if leader else (),
        skip_assignment=skip,
    )


def _joined_members(group: ClassicGroup) -> tuple[JoinedMember, ...]:
    return tuple(
        JoinedMember(m.member_id, m.instance_id, m.metadata_for(group.protocol_name))
        for m in sorted(group.members.values(), key=lambda m: m.member_id)
    )


def _select_protocol(group: ClassicGroup) -> str | None:
    """Every member votes for its preferred protocol among those all support; most votes
    wins (ties: the one voted for first, in member id order)."""
    candidates = _candidates(group.members.values())
    if not candidates:
        return None
    votes = [m.vote(candidates) for m in sorted(group.members.values(), key=lambda m: m.member_id)]
    return max(votes, key=lambda name: (votes.count(name), -votes.index(name)))


# ---- the barrier ------------------------------------------------------------------------------


def _rebalance_or_complete(steps: Steps, reason: str) -> None:
    if steps.group.state == "preparing":
        _maybe_complete_join(steps)
    else:
        _prepare_rebalance(steps, reason)


def _prepare_rebalance(steps: Steps, reason: str) -> None:
    group = steps.group
    if group.state == "completing":  # parked SyncGroups: rejoin instead
        members = dict(group.members)
        for member in group.members.values():
            if member.awaiting_sync:
                steps.sync_answer(member.member_id, SyncResult(ErrorCode.REBALANCE_IN_PROGRESS))
            members[member.member_id] = replace(member, assignment=b"", awaiting_sync=False)
        group = replace(group, members=members)
    timeout_ms = group.rebalance_timeout_ms
    initial = group.state == "empty" and steps.limits.initial_rebalance_delay_ms > 0
    delay_ms = steps.limits.initial_rebalance_delay_ms if initial else timeout_ms
    steps.group = replace(
        group,
        state="preparing",
        pending_sync=frozenset(),
        sync_deadline_ms=None,
        join_deadline_ms=steps.now_ms + delay_ms,
        initial_remaining_ms=max(timeout_ms - delay_ms, 0) if initial else None,
        new_member_added=False,
        rebalances=group.rebalances + 1,
    )
    steps.reasons.append(f"rebalance from generation {group.generation}: {reason}")
    _maybe_complete_join(steps)


def _maybe_complete_join(steps: Steps) -> None:
    group = steps.group
    if group.state != "preparing" or group.initial_remaining_ms is not None:
        return  # a new group's first barrier waits its delay (more members may come)
    if all(m.awaiting_join for m in group.members.values()) and not group.pending:
        _complete_join(steps)


def _complete_join(steps: Steps) -> None:
    """The barrier opens: dynamic members that did not rejoin are removed, the next
    generation starts, every parked JoinGroup is answered (the leader's with the members)."""
    group = steps.group
    gone = sorted(k for k, m in group.members.items() if not m.awaiting_join and not m.instance_id)
    members = {k: v for k, v in group.members.items() if k not in gone}
    if gone:
        steps.reasons.append(f"removed members that did not join again in time: {gone}")
    group = replace(group, members=members, join_deadline_ms=None, initial_remaining_ms=None)
    joined = sorted(k for k, m in members.items() if m.awaiting_join)
    if members and not joined:  # only static members that are away: wait for them again
        steps.group = replace(group, join_deadline_ms=steps.now_ms + group.rebalance_timeout_ms)
        return
    if not members:
        steps.group = replace(
            group,
            state="empty",
            generation=group.generation + 1,
            protocol_name=None,
            leader_id=None,
        )
        steps.reasons.append(f"generation {group.generation + 1}: the group is empty")
        return
    leader = group.leader_id
    if leader not in joined:
        leader = joined[0]
    group = replace(group, generation=group.generation + 1, leader_id=leader, state="completing")
    now_ms = steps.now_ms
    done = {
        k: replace(m, awaiting_join=False, last_heartbeat_ms=now_ms) if m.awaiting_join else m
        for k, m in members.items()
    }
    steps.group = replace(
        group,
        members=done,
        protocol_name=_select_protocol(group),
        pending_sync=frozenset(done),
        sync_deadline_ms=now_ms + group.rebalance_timeout_ms,
        new_member_added=False,
    )
    for member_id in joined:
        steps.join_answer(member_id, _current(steps.group, member_id))
    steps.reasons.append(
        f"generation {steps.group.generation}: {len(done)} members, protocol "
        f"{steps.group.protocol_name}, leader {leader}"
    )


# ---- SyncGroup ----------------------------------------------------------------------------


def sync(group: ClassicGroup, request: SyncRequest, now_ms: int, limits: Limits) -> Outcome:
    """A SyncGroup: answered at once (an error, or the assignment of a stable group), when
    the leader's arrives, or with REBALANCE_IN_PROGRESS when a rebalance starts first."""
    steps = Steps(group, now_ms, limits)
    member_id = request.member_id
    error = _validate_member(group, member_id, request.instance_id)
    if error is None and request.generation != group.generation:
        error = ErrorCode.ILLEGAL_GENERATION
    if error is None and _inconsistent(request.protocol_type, group.protocol_type):
        error = ErrorCode.INCONSISTENT_GROUP_PROTOCOL
    if error is None and _inconsistent(request.protocol_name, group.protocol_name):
        error = ErrorCode.INCONSISTENT_GROUP_PROTOCOL
    if error is None and group.state == "empty":
        error = ErrorCode.UNKNOWN_MEMBER
    if error is None and group.state == "preparing":
        error = ErrorCode.REBALANCE_IN_PROGRESS
    if error is not None:
        steps.sync_answer(member_id, SyncResult(error))
        return steps.outcome()
    member = replace(group.members[member_id], last_heartbeat_ms=now_ms)
    pending_sync = group.pending_sync - {member_id}
    deadline_ms = group.sync_deadline_ms if pending_sync else None
    steps.group = replace(group, pending_sync=pending_sync, sync_deadline_ms=deadline_ms)
    if group.state == "stable":
        steps.set_member(member)
        steps.sync_answer(member_id, _assignment(steps.group, member))
        return steps.outcome()
    steps.set_member(replace(member, awaiting_sync=True))
    if group.leader_id == member_id:
        _set_assignment(steps, request.assignments)
    return steps.outcome()


def _inconsistent(asked: str | None, current: str | None) -> bool:
    return asked is not None and asked != current


def _assignment(group: ClassicGroup, member: Member) -> SyncResult:
    return SyncResult(None, group.protocol_type, group.protocol_name, member.assignment)


def _set_assignment(steps: Steps, assignments: Mapping[str, bytes]) -> None:
    """The leader's assignment: every member's bytes (empty for a member it left out),
    delivered to every parked SyncGroup; the group is stable."""
    group = steps.group
    members = {}
    for member_id, member in group.members.items():
        members[member_id] = replace(
            member, assignment=assignments.get(member_id, b""), awaiting_sync=False
        )
    steps.group = replace(group, members=members, state="stable")
    for member_id, member in sorted(members.items()):
        if group.members[member_id].awaiting_sync:
            steps.sync_answer(member_id, _assignment(steps.group, member))
    steps.reasons.append(
        f"generation {group.generation} stable: the leader's assignment for {len(members)} members"
    )


# ---- Heartbeat and LeaveGroup ----------------------------------------------------------------


def heartbeat(
    group: ClassicGroup, member_id: str, instance_id: str | None, generation: int, now_ms: int
) -> tuple[ClassicGroup, ErrorCode | None]:
    """A Heartbeat renews the member's session; REBALANCE_IN_PROGRESS tells it to rejoin."""
    error = _validate_member(group, member_id, instance_id)
    if error is None and generation != group.generation:
        error = ErrorCode.ILLEGAL_GENERATION
    if error is None and group.state == "empty":
        error = ErrorCode.UNKNOWN_MEMBER
    if error is not None:
        return group, error
    member = replace(group.members[member_id], last_heartbeat_ms=now_ms)
    renewed = replace(group, members={**group.members, member_id: member})
    return renewed, ErrorCode.REBALANCE_IN_PROGRESS if group.state == "preparing" else None


@dataclass(frozen=True, slots=True)
class Leaving:
    member_id: str  # "" with an instance id: the static member holding it
    instance_id: str | None = None


def leave(
    group: ClassicGroup, leaving: Sequence[Leaving], now_ms: int, limits: Limits
) -> tuple[Outcome, list[tuple[str, ErrorCode | None]]]:
    """LeaveGroup (v3+: several members at once). Each member's own result, in order."""
    steps = Steps(group, now_ms, limits)
    results: list[tuple[str, ErrorCode | None]] = []
    removed: list[str] = []
    for one in leaving:
        member_id = one.member_id
        if not member_id and one.instance_id is not None:
            member_id = steps.group.static_members.get(one.instance_id, "")
            if not member_id:
                results.append(("", ErrorCode.UNKNOWN_MEMBER))
                continue
        if member_id in steps.group.pending and one.instance_id is None:
            steps.group = replace(steps.group, pending=_without(steps.group.pending, member_id))
            results.append((member_id, None))
            continue
        error = _validate_member(steps.group, member_id, one.instance_id)
        results.append((member_id, error))
        if error is None:
            _remove(steps, member_id)
            removed.append(member_id)
    if removed:
        _after_removal(steps, f"members {removed} left")
    else:
        _maybe_complete_join(steps)
    return steps.outcome(), results


def _remove(steps: Steps, member_id: str) -> None:
    group = steps.group
    member = group.members[member_id]
    if member.awaiting_join:
        steps.join_answer(member_id, JoinResult("", ErrorCode.UNKNOWN_MEMBER))
    if member.awaiting_sync:
        steps.sync_answer(member_id, SyncResult(ErrorCode.UNKNOWN_MEMBER))
    members = {k: v for k, v in group.members.items() if k != member_id}
    leader = group.leader_id
    if leader == member_id:
        leader = min(members, default=None)
    steps.group = replace(
        group, members=members, leader_id=leader, pending_sync=group.pending_sync - {member_id}
    )


def _after_removal(steps: Steps, reason: str) -> None:
    if steps.group.state in ("stable", "completing"):
        _prepare_rebalance(steps, reason)
    elif steps.group.state == "preparing":
        steps.reasons.append(reason)
        _maybe_complete_join(steps)


def _without(pending: Mapping[str, int], member_id: str) -> dict[str, int]:
    return {k: v for k, v in pending.items() if k != member_id}


# ---- time --------------------------------------------------------------------------------


def tick(group: ClassicGroup, now_ms: int, limits: Limits) -> Outcome:
    """Deadlines that passed: members told MEMBER_ID_REQUIRED that never came, members
    whose session timed out (not while a request of theirs is parked), the barrier's
    timeout (and the first rebalance's delay), SyncGroups the new generation never sent."""
    steps = Steps(group, now_ms, limits)
    expired_pending = [k for k, until in group.pending.items() if until <= now_ms]
    if expired_pending:
        steps.group = replace(
            group, pending={k: v for k, v in group.pending.items() if k not in expired_pending}
        )
    expired = sorted(
        m.member_id
        for m in group.members.values()
        if not (m.awaiting_join or m.awaiting_sync)
        and m.last_heartbeat_ms + m.session_timeout_ms <= now_ms
    )
    for member_id in expired:
        _remove(steps, member_id)
    if expired:
        _after_removal(steps, f"session timed out for {expired}")
    _sync_deadline(steps)
    _join_deadline(steps)
    _maybe_complete_join(steps)
    return steps.outcome()


def _join_deadline(steps: Steps) -> None:
    group = steps.group
    deadline = group.join_deadline_ms
    if group.state != "preparing" or deadline is None or steps.now_ms < deadline:
        return
    remaining = group.initial_remaining_ms
    if remaining is not None and group.new_member_added and remaining > 0:
        delay_ms = min(steps.limits.initial_rebalance_delay_ms, remaining)
        steps.group = replace(
            group,
            join_deadline_ms=steps.now_ms + delay_ms,
            initial_remaining_ms=max(remaining - delay_ms, 0),
            new_member_added=False,
        )
        return
    _complete_join(steps)


def _sync_deadline(steps: Steps) -> None:
    group = steps.group
    deadline = group.sync_deadline_ms
    if deadline is None or steps.now_ms < deadline or group.state not in ("completing", "stable"):
        return
    missing = sorted(group.pending_sync & set(group.members))
    steps.group = replace(group, pending_sync=frozenset(), sync_deadline_ms=None)
    if not missing:
        return
    for member_id in missing:
        _remove(steps, member_id)
    _after_removal(steps, f"no SyncGroup from {missing} in time")


# ---- offsets --------------------------------------------------------------------------------


def commit_error(
    group: ClassicGroup | None,
    member_id: str,
    instance_id: str | None,
    generation: int,
    transactional: bool = False,
) -> ErrorCode | None:
    """Kafka's ``validateOffsetCommit`` for a classic group (None: no group in memory,
    only committed offsets): without a generation (-1) only while it has no members; a
    member commits at the current generation only; not while the new generation's
    assignment is being computed (REBALANCE_IN_PROGRESS; transactional commits may)."""
    members = group.members if group is not None else {}
    if generation < 0 and not members:
        return None
    if group is None:  # a member of a group this coordinator does not know (restarted)
        return ErrorCode.ILLEGAL_GENERATION
    error: ErrorCode | None = None
    if generation >= 0 or member_id or instance_id is not None:
        error = _validate_member(group, member_id, instance_id)
        if error is None and generation != group.generation:
            error = ErrorCode.ILLEGAL_GENERATION
    elif not transactional:
        error = ErrorCode.UNKNOWN_MEMBER
    if error is None and not transactional and group.state == "completing":
        error = ErrorCode.REBALANCE_IN_PROGRESS
    return error
