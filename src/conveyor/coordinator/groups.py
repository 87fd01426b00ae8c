"""Consumer-group membership and assignment: pure decisions, no clock, no I/O.

Modelled on Kafka's KIP-848 (the "next generation" consumer rebalance protocol): one
heartbeat request joins (no ``member_id``), renews, or leaves (``leave``), and reports the
partitions the member owns; the answer says what it may consume.

* The coordinator holds, per group, a **target** assignment (what each member should own,
  recomputed on every membership or subscription change, which starts a new
  ``generation``) and the **given** map: partition -> the member it was handed to and
  which has not released it yet. At every moment a partition is given to at most one
  member: there are never two owners.
* A partition given to a member but outside its target is *revoking*: the member is told
  (it is missing from ``assigned_to``), stops fetching it, commits, and stops reporting it;
  the next heartbeat that does not report it releases it. A partition of a member's target
  that nobody holds is given at once; one still held elsewhere is *pending*.
* Members keep consuming what stays theirs through a rebalance (cooperative). A partition
  moves only after its old owner released it, left, or was removed: session timeout,
  not polling for ``max_poll_interval_ms``, or holding a revoked partition that long.

The assignment is balanced (members' partition counts differ by at most one where
subscriptions allow) and sticky (members keep what they had, up to their share).

Membership is soft state: after a coordinator restart a member is unknown; one that
reports owned partitions is re-admitted under its id and its partitions count as its
previous target (given back if nobody else holds them), so assignments recover; one that
owns nothing is told UNKNOWN_MEMBER and joins again.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, replace
from typing import Final, Literal, NamedTuple

from conveyor.protocol.errors import ConveyorError, ErrorCode, InvalidRequestError, RetriableError

HEARTBEAT_INTERVAL_MS: Final = 1_000  # told to members
SESSION_TIMEOUT_MS_MIN: Final = 100
SESSION_TIMEOUT_MS_MAX: Final = 300_000
MAX_POLL_INTERVAL_MS_MAX: Final = 3_600_000
MEMBERS_PER_GROUP_MAX: Final = 1_000
TOPICS_PER_MEMBER_MAX: Final = 100
OWNED_PER_HEARTBEAT_MAX: Final = 100_000
INSTANCE_ID_LENGTH_MAX: Final = 200
BALANCE_MOVES_MAX: Final = 1_000_000  # bound on the balancing loop (a bug, not input)


class TP(NamedTuple):
    topic: str
    partition: int


GroupState = Literal["empty", "stable", "rebalancing"]


@dataclass(frozen=True, slots=True)
class Member:
    member_id: str
    client_id: str
    topics: tuple[str, ...]
    session_timeout_ms: int
    max_poll_interval_ms: int
    last_heartbeat_ms: int
    joined_generation: int = 0
    revoking_since_ms: int | None = None  # holds a partition outside its target since
    reported: frozenset[TP] = frozenset()  # what it owned at its last heartbeat
    host: str = ""  # the address its heartbeats come from (shown by describe)
    instance_id: str | None = None  # static membership (KIP-345): see take_over


@dataclass(frozen=True, slots=True)
class Heartbeat:
    member_id: str | None  # None: join
    client_id: str
    topics: tuple[str, ...]
    owned: frozenset[TP]
    session_timeout_ms: int = 10_000
    max_poll_interval_ms: int = 300_000
    poll_age_ms: int = 0  # how long ago the application last polled
    leave: bool = False
    host: str = ""  # the peer address of the heartbeat's connection
    instance_id: str | None = None


@dataclass(frozen=True, slots=True)
class Group:
    name: str
    generation: int = 0
    members: Mapping[str, Member] = field(default_factory=dict)
    target: Mapping[str, frozenset[TP]] = field(default_factory=dict)
    given: Mapping[TP, str] = field(default_factory=dict)
    # The generation at which each partition was last given (by _grant): a commit from
    # an older epoch of its owner was made before it lost and regained the partition, by
    # a request that arrived late, and must not move the group's position back.
    given_at: Mapping[TP, int] = field(default_factory=dict)
    rebalances: int = 0
    partition_counts: Mapping[str, int] = field(default_factory=dict)  # as last assigned
    # After a coordinator restart nobody knows who owns what until the members report it:
    # Until then only partitions a member reports are given. The window is the session
    # timeout of the returning members (the longest a live member may go unheard; after
    # it the client drops its partitions by itself), counted from recovery_started_ms
    # (the coordinator's start; None: nothing to recover, a new cluster).
    recovering_until_ms: int = 0
    recovery_started_ms: int | None = None

    def _given_to(self, member_id: str) -> set[TP]:
        return {tp for tp, owner in self.given.items() if owner == member_id}

    def assigned_to(self, member_id: str) -> list[TP]:
        """What the member may consume now: given to it and in its target."""
        target = self.target.get(member_id, frozenset())
        return sorted(tp for tp in self._given_to(member_id) if tp in target)

    def revoking(self, member_id: str) -> list[TP]:
        """Given to the member but no longer in its target: to commit and release."""
        target = self.target.get(member_id, frozenset())
        return sorted(tp for tp in self._given_to(member_id) if tp not in target)

    def pending_for(self, member_id: str) -> list[TP]:
        """In the member's target, still held by another member."""
        target = self.target.get(member_id, frozenset())
        return sorted(tp for tp in target if self.given.get(tp) != member_id)

    @property
    def state(self) -> GroupState:
        if not self.members:
            return "empty"
        settled = all(
            self._given_to(m) == set(self.target.get(m, frozenset())) for m in self.members
        )
        return "stable" if settled else "rebalancing"


# ---- assignment ----------------------------------------------------------------------------


def assign(
    members: Mapping[str, Member],
    partition_counts: Mapping[str, int],
    previous: Mapping[str, Iterable[TP]],
    holding: Mapping[str, Iterable[TP]] = {},
) -> dict[str, frozenset[TP]]:
    """Balanced, sticky target assignment.

    1. Each member keeps the partitions it is ``holding`` (owns now), then its
       ``previous`` target partitions, where they still exist and it still subscribes to
       them (first claim wins: every holding before any previous, members in id order).
    2. Every other partition goes to the eligible member with the fewest.
    3. While a member has two more than another that could take one of its partitions,
       one moves (the sum of squares falls each time, so this ends).

    Example: a had t-0..t-3, b joins, 4 partitions: a keeps t-0, t-1 (the lowest two
    survive step 3's moves from the top), b gets t-2, t-3: two moves, the fewest that balance.
    """
    owned: dict[str, list[TP]] = {m: [] for m in sorted(members)}
    taken: set[TP] = set()
    for tier in (holding, previous):
        for m, mine in owned.items():
            for tp in sorted(tier.get(m, ())):
                if _eligible(members[m], tp, partition_counts) and tp not in taken:
                    mine.append(tp)
                    taken.add(tp)
    every = sorted(
        TP(t, p)
        for t in {t for member in members.values() for t in member.topics}
        for p in range(max(0, partition_counts.get(t, 0)))
    )
    free = [tp for tp in every if tp not in taken]
    eligible_count = {tp: sum(tp.topic in m.topics for m in members.values()) for tp in free}
    for tp in sorted(free, key=lambda tp: (eligible_count[tp], tp)):
        candidates = [m for m in owned if tp.topic in members[m].topics]
        winner = min(candidates, key=lambda m: (len(owned[m]), m))
        owned[winner].append(tp)
    held = {(m, tp) for m, tps in holding.items() for tp in tps}
    _balance(members, owned, held)
    return {m: frozenset(tps) for m, tps in owned.items()}


def _eligible(member: Member, tp: TP, counts: Mapping[str, int]) -> bool:
    return tp.topic in member.topics and 0 <= tp.partition < counts.get(tp.topic, 0)


def _balance(
    members: Mapping[str, Member], owned: dict[str, list[TP]], held: set[tuple[str, TP]]
) -> None:
    for _ in range(BALANCE_MOVES_MAX):
        move = _one_move(members, owned, held)
        if move is None:
            return
        source, dest, tp = move
        owned[source].remove(tp)
        owned[dest].append(tp)
    raise AssertionError("assignment balancing did not converge")  # a bug


def _one_move(
    members: Mapping[str, Member], owned: dict[str, list[TP]], held: set[tuple[str, TP]]
) -> tuple[str, str, TP] | None:
    """One partition from the most to the least loaded member that can take it: one the
    source does not hold yet if any (no hand-over needed), else its highest."""
    by_load = sorted(owned, key=lambda m: (-len(owned[m]), m))
    for source in by_load:
        for dest in reversed(by_load):
            if len(owned[source]) - len(owned[dest]) <= 1:
                break
            movable = [tp for tp in owned[source] if tp.topic in members[dest].topics]
            if movable:
                return source, dest, max(movable, key=lambda tp: ((source, tp) not in held, tp))
    return None


# ---- events --------------------------------------------------------------------------------


def heartbeat(
    group: Group, beat: Heartbeat, now_ms: int, counts: Mapping[str, int], new_member_id: str
) -> tuple[Group, str, ConveyorError | None]:
    """Join, renew or leave. Returns the new group, the member's id, and an error to send
    after keeping the new group (a member removed for not polling learns it so).
    Raises (changing nothing) for bad input and for an unknown member owning nothing."""
    _validate(beat)
    member_id = beat.member_id
    if member_id is None or member_id not in group.members:
        if beat.leave:
            return group, member_id or new_member_id, None
        holder = _instance_holder(group, beat.instance_id)
        if holder is not None and member_id is not None:
            raise _fenced_instance(group, beat.instance_id, holder)
        if holder is not None:
            taken = take_over(group, holder, beat, now_ms, counts, new_id=new_member_id)
            return taken, new_member_id, None
        if member_id is not None and not beat.owned:
            raise unknown(group, member_id)
        return (
            _join(group, beat, now_ms, counts, member_id or new_member_id),
            member_id or new_member_id,
            None,
        )
    if beat.leave:
        return _remove(group, [member_id], counts, now_ms), member_id, None
    member = group.members[member_id]
    if beat.poll_age_ms > member.max_poll_interval_ms:
        removed = _remove(group, [member_id], counts, now_ms)
        error = InvalidRequestError(
            f"member {member_id} of group {group.name} did not poll for {beat.poll_age_ms} ms "
            f"(max_poll_interval_ms {member.max_poll_interval_ms}): removed; rejoin",
            code=ErrorCode.UNKNOWN_MEMBER,
            group=group.name,
            member_id=member_id,
        )
        return removed, member_id, error
    renewed = replace(
        member,
        last_heartbeat_ms=now_ms,
        client_id=beat.client_id,
        reported=beat.owned,
        host=beat.host or member.host,
    )
    topics_changed = beat.topics != member.topics
    if topics_changed:
        renewed = replace(renewed, topics=beat.topics)
    group = replace(group, members={**group.members, member_id: renewed})
    if topics_changed:
        group = _retarget(group, counts, {})
    group = _release(group, member_id, beat.owned)
    return _grant(group, now_ms), member_id, None


def _instance_holder(group: Group, instance_id: str | None) -> str | None:
    if instance_id is None:
        return None
    return next((m.member_id for m in group.members.values() if m.instance_id == instance_id), None)


def take_over(
    group: Group,
    old_id: str,
    beat: Heartbeat,
    now_ms: int,
    counts: Mapping[str, int],
    *,
    new_id: str,
) -> Group:
    """Static membership (Kafka's KIP-345): a member joining with the ``instance_id`` of a
    current member is that member restarted. It replaces the old member at once with its
    target and the partitions given to it (no wait for the old session to time out, no
    reassignment), in a new generation; the old member id is gone, so anything still
    running under it is fenced (``FENCED_INSTANCE_ID`` on its next heartbeat,
    ``UNKNOWN_MEMBER`` on a commit). Its subscription may differ: then it is retargeted.

    Example: a (instance "w1") owns t-0, t-1 and is SIGKILLed; w1 restarts and joins as
    b within a's session timeout: b owns t-0, t-1 at once, a is gone.
    """
    old = group.members[old_id]
    member = replace(
        old,
        member_id=new_id,
        client_id=beat.client_id,
        session_timeout_ms=beat.session_timeout_ms,
        max_poll_interval_ms=beat.max_poll_interval_ms,
        last_heartbeat_ms=now_ms,
        joined_generation=group.generation + 1,
        reported=beat.owned,
        host=beat.host,
    )
    members = {k: v for k, v in group.members.items() if k != old_id}
    members[new_id] = member
    target = {k: v for k, v in group.target.items() if k != old_id}
    target[new_id] = group.target.get(old_id, frozenset())
    given = {tp: new_id if m == old_id else m for tp, m in group.given.items()}
    moved = replace(
        group, generation=group.generation + 1, members=members, target=target, given=given
    )
    if beat.topics != old.topics:
        moved = _retarget(
            replace(moved, members={**members, new_id: replace(member, topics=beat.topics)}),
            counts,
            {},
        )
    return _grant(moved, now_ms)


def _join(
    group: Group, beat: Heartbeat, now_ms: int, counts: Mapping[str, int], member_id: str
) -> Group:
    if len(group.members) >= MEMBERS_PER_GROUP_MAX:
        raise InvalidRequestError(
            f"group {group.name} has {MEMBERS_PER_GROUP_MAX} members, the limit",
            code=ErrorCode.INVALID_CONFIG,
        )
    member = Member(
        member_id=member_id,
        client_id=beat.client_id,
        topics=beat.topics,
        session_timeout_ms=beat.session_timeout_ms,
        max_poll_interval_ms=beat.max_poll_interval_ms,
        last_heartbeat_ms=now_ms,
        joined_generation=group.generation + 1,
        reported=beat.owned,
        host=beat.host,
        instance_id=beat.instance_id,
    )
    grown = replace(group, members={**group.members, member_id: member})
    started = group.recovery_started_ms
    if started is not None:  # other members as live as this one may take this long
        until = max(group.recovering_until_ms, started + beat.session_timeout_ms)
        grown = replace(grown, recovering_until_ms=until)
    claims = {member_id: beat.owned} if beat.owned else {}
    return _grant(_retarget(grown, counts, claims), now_ms)


def rename(group: Group, old_id: str, new_id: str, now_ms: int) -> Group:
    """A static member's new incarnation (Kafka's ``group.instance.id``, KIP-848) takes the
    old one's place: its target and the partitions given to it move to the new id, with no
    new generation, so nobody else's assignment changes. It reports what it owns from its
    next heartbeat on; what it owned before stays given to it meanwhile."""
    old = group.members[old_id]
    renamed = replace(old, member_id=new_id, last_heartbeat_ms=now_ms, reported=frozenset())
    members = {(new_id if k == old_id else k): (renamed if k == old_id else v)
               for k, v in group.members.items()}  # fmt: skip
    target = {(new_id if k == old_id else k): v for k, v in group.target.items()}
    given = {tp: (new_id if m == old_id else m) for tp, m in group.given.items()}
    return replace(group, members=members, target=target, given=given)


def expire(group: Group, now_ms: int, counts: Mapping[str, int]) -> Group:
    """Remove members silent past their session timeout, and members holding a revoked
    partition longer than their max poll interval (a stuck callback must not hold it)."""
    gone = [
        m.member_id
        for m in group.members.values()
        if now_ms - m.last_heartbeat_ms > m.session_timeout_ms
        or (
            m.revoking_since_ms is not None
            and now_ms - m.revoking_since_ms > m.max_poll_interval_ms
        )
    ]
    if not gone:
        return group
    return _remove(group, gone, counts, now_ms)


def refresh(group: Group, counts: Mapping[str, int], now_ms: int) -> Group:
    """A new generation when a subscribed topic's partition count changed (or it went)."""
    relevant = _relevant_counts(group, counts)
    if not group.members or relevant == dict(group.partition_counts):
        return group
    retargeted = _retarget(group, counts, {})
    # partitions of a deleted topic (or beyond a smaller count) are nobody's any more
    given = {
        tp: m for tp, m in retargeted.given.items() if tp.partition < relevant.get(tp.topic, 0)
    }
    return _grant(replace(retargeted, given=given), now_ms)


def resubscribe(
    group: Group, topics: Mapping[str, tuple[str, ...]], counts: Mapping[str, int], now_ms: int
) -> Group:
    """Members' subscriptions resolved again together (``topics``: member id -> its topics
    now), one new target for all of them. KIP-848 resolves a group's topic names and
    regexes for the whole group when topics appear, so members subscribed alike see a new
    topic at once: resolved one member at a time, the first to hear of it would be given
    its partitions and then give some back. Not a heartbeat: no session is renewed.

    Example: a and b subscribe to ``t.*``; t1 (2 partitions) exists, a owns t1-0, b t1-1;
    t2 appears. Together: a {t1-0, t2-x}, b {t1-1, t2-y}, nothing revoked. One by one, a
    (seeing t1, t2) beside b (seeing t1 only) would be moved off t1 for b's sake."""
    changed = {
        m: t for m, t in topics.items() if m in group.members and group.members[m].topics != t
    }
    if not changed:
        return group
    members = dict(group.members)
    for member_id, member_topics in changed.items():
        members[member_id] = replace(members[member_id], topics=member_topics)
    return _grant(_retarget(replace(group, members=members), counts, {}), now_ms)


def _relevant_counts(group: Group, counts: Mapping[str, int]) -> dict[str, int]:
    return {t: counts.get(t, 0) for m in group.members.values() for t in m.topics}


def _remove(group: Group, member_ids: list[str], counts: Mapping[str, int], now_ms: int) -> Group:
    members = {k: v for k, v in group.members.items() if k not in member_ids}
    given = {tp: m for tp, m in group.given.items() if m in members}
    shrunk = replace(group, members=members, given=given)
    return _grant(_retarget(shrunk, counts, {}), now_ms)


def _retarget(group: Group, counts: Mapping[str, int], claims: Mapping[str, Iterable[TP]]) -> Group:
    previous = {m: group.target.get(m, frozenset()) for m in group.members}
    holding: dict[str, set[TP]] = {m: set(claims.get(m, ())) for m in group.members}
    for tp, m in group.given.items():
        if m in holding:
            holding[m].add(tp)
    relevant = _relevant_counts(group, counts)
    return replace(
        group,
        generation=group.generation + 1,
        rebalances=group.rebalances + 1,
        target=assign(group.members, relevant, previous, holding),
        partition_counts=relevant,
    )


def _release(group: Group, member_id: str, owned: frozenset[TP]) -> Group:
    """The member no longer reports a revoked partition: it gave it up."""
    target = group.target.get(member_id, frozenset())
    given = {
        tp: m for tp, m in group.given.items() if m != member_id or tp in target or tp in owned
    }
    return replace(group, given=given)


def _grant(group: Group, now_ms: int) -> Group:
    """Give every target partition nobody holds (while recovering from a coordinator
    restart: only those its member reports owning); start or stop revocation clocks."""
    given = dict(group.given)
    given_at = dict(group.given_at)
    recovering = now_ms < group.recovering_until_ms
    for member_id in sorted(group.target):
        reported = group.members[member_id].reported
        for tp in sorted(group.target[member_id]):
            if tp not in given and (not recovering or tp in reported):
                given[tp] = member_id
                given_at[tp] = group.generation
    grouped = replace(group, given=given, given_at=given_at)
    members = {}
    for member_id, member in group.members.items():
        revoking = bool(grouped.revoking(member_id))
        since = member.revoking_since_ms
        if not revoking:
            since = None
        elif since is None:
            since = now_ms
        members[member_id] = replace(member, revoking_since_ms=since)
    return replace(grouped, members=members)


def unknown(group: Group, member_id: str) -> InvalidRequestError:
    return InvalidRequestError(
        f"member {member_id!r} is not in group {group.name} (removed, or the coordinator "
        "restarted): rejoin",
        code=ErrorCode.UNKNOWN_MEMBER,
        group=group.name,
        member_id=member_id,
    )


def _fenced_instance(group: Group, instance_id: str | None, holder: str) -> InvalidRequestError:
    return InvalidRequestError(
        f"instance {instance_id!r} of group {group.name} is now member {holder} (a newer "
        "process with the same group_instance_id took over): this one must stop",
        code=ErrorCode.FENCED_INSTANCE_ID,
        group=group.name,
        instance_id=instance_id,
    )


def _validate(beat: Heartbeat) -> None:
    # Conveyor's clients name at least one topic (checked by the shell); a Kafka member
    # (KIP-848) may subscribe to a pattern that matches none yet
    if len(beat.topics) > TOPICS_PER_MEMBER_MAX:
        raise InvalidRequestError(f"a member subscribes to 1..{TOPICS_PER_MEMBER_MAX} topics")
    if beat.instance_id is not None and not 0 < len(beat.instance_id) <= INSTANCE_ID_LENGTH_MAX:
        raise InvalidRequestError(f"instance_id must be 1..{INSTANCE_ID_LENGTH_MAX} characters")
    if len(beat.owned) > OWNED_PER_HEARTBEAT_MAX:
        raise InvalidRequestError(f"more than {OWNED_PER_HEARTBEAT_MAX} owned partitions")
    if not SESSION_TIMEOUT_MS_MIN <= beat.session_timeout_ms <= SESSION_TIMEOUT_MS_MAX:
        raise InvalidRequestError(
            f"session_timeout_ms must be in {SESSION_TIMEOUT_MS_MIN}..{SESSION_TIMEOUT_MS_MAX}",
            code=ErrorCode.INVALID_CONFIG,
        )
    if not beat.session_timeout_ms <= beat.max_poll_interval_ms <= MAX_POLL_INTERVAL_MS_MAX:
        raise InvalidRequestError(
            f"max_poll_interval_ms must be in session_timeout_ms..{MAX_POLL_INTERVAL_MS_MAX}",
            code=ErrorCode.INVALID_CONFIG,
        )


# ---- fencing -------------------------------------------------------------------------------


def check_commit(
    group: Group,
    member_id: str | None,
    generation: int,
    partitions: Iterable[TP],
    rebuilding: bool = False,
) -> None:
    """Raise the typed error that fences a commit; return if it may be written.

    Without a member id (generation -1) the committer is a standalone consumer: allowed
    only while the group has no members, else it could overwrite a member's progress.

    ``rebuilding``: this coordinator became active recently (a restart or a takeover) and
    membership is being rebuilt from heartbeats. A member it does not know yet, or a
    generation from before (newer than any it has handed out), is then not fenced but
    told to retry (NOT_READY): its next heartbeat re-admits it with what it owns, and
    fencing it would make it drop healthy partitions and read them again.
    """
    tps = [TP(*tp) for tp in partitions]
    if member_id is None:
        if generation != -1:
            raise InvalidRequestError("a commit with a generation needs a member_id")
        if group.members:
            raise InvalidRequestError(
                f"group {group.name} has {len(group.members)} active member(s); only a member "
                "may commit (with its member_id and generation)",
                code=ErrorCode.FENCED_MEMBER,
                group=group.name,
            )
        return
    member = group.members.get(member_id)
    if rebuilding and (member is None or generation > group.generation):
        raise RetriableError(
            f"group {group.name} is being rebuilt after a coordinator change: member "
            f"{member_id} should heartbeat, then commit again",
            code=ErrorCode.NOT_READY,
            group=group.name,
        )
    if member is None:
        raise unknown(group, member_id)
    if not member.joined_generation <= generation <= group.generation:
        raise InvalidRequestError(
            f"generation {generation} is not one member {member_id} belongs to "
            f"({member.joined_generation}..{group.generation})",
            code=ErrorCode.ILLEGAL_GENERATION,
            group=group.name,
            generation=generation,
        )
    foreign = sorted(tp for tp in tps if group.given.get(tp) != member_id)
    if foreign:
        raise InvalidRequestError(
            f"member {member_id} does not own {[f'{t}-{p}' for t, p in foreign]} in group "
            f"{group.name}",
            code=ErrorCode.FENCED_MEMBER,
            group=group.name,
            partitions=[f"{t}-{p}" for t, p in foreign],
        )
    regained = sorted(tp for tp in tps if group.given_at.get(tp, 0) > generation)
    if regained:  # Kafka's rule: owned continuously since the commit's epoch
        raise InvalidRequestError(
            f"generation {generation} of member {member_id} is older than its hold on "
            f"{[f'{t}-{p}' for t, p in regained]} (given again since): a late commit",
            code=ErrorCode.ILLEGAL_GENERATION,
            group=group.name,
            generation=generation,
        )
