"""Kafka's classic group protocol as pure decisions: the JoinGroup barrier, the leader's
assignment through SyncGroup, fencing, static membership, timeouts. Scripted scenarios
with a manual clock (``now_ms``), and a property test over random event sequences."""

from __future__ import annotations

from dataclasses import replace

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

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
from conveyor.protocol.errors import ErrorCode

LIMITS = Limits(initial_rebalance_delay_ms=3_000)
NO_DELAY = Limits(initial_rebalance_delay_ms=0)
RANGE = Protocol("range", b"sub-range")
ROUND = Protocol("roundrobin", b"sub-rr")
STICKY = Protocol("cooperative-sticky", b"sub-coop")


def request(
    member_id: str = "",
    instance_id: str | None = None,
    protocols: tuple[Protocol, ...] = (RANGE,),
    **kw: object,
) -> JoinRequest:
    fields: dict[str, object] = {
        "client_id": "c",
        "host": "/127.0.0.1",
        "protocol_type": "consumer",
        "session_timeout_ms": 10_000,
        "rebalance_timeout_ms": 30_000,
    }
    fields.update(kw)
    return JoinRequest(member_id, instance_id, protocols=protocols, **fields)  # type: ignore[arg-type]


def joins(outcome: Outcome) -> dict[str, JoinResult]:
    return {a.member_id: a.result for a in outcome.answers if isinstance(a, JoinAnswer)}


def syncs(outcome: Outcome) -> dict[str, SyncResult]:
    return {a.member_id: a.result for a in outcome.answers if isinstance(a, SyncAnswer)}


def new_member(
    group: ClassicGroup, member_id: str, now_ms: int, limits: Limits = LIMITS
) -> Outcome:
    """KIP-394: ask for an id, then join with it."""
    first = classic.join(group, request(), now_ms, member_id, limits)
    assert joins(first) == {"": JoinResult(member_id, ErrorCode.MEMBER_ID_REQUIRED)}
    return classic.join(first.group, request(member_id), now_ms, "unused", limits)


def open_barrier(group: ClassicGroup, limits: Limits = LIMITS) -> Outcome:
    """Tick at each deadline until the barrier answers the parked JoinGroups."""
    for _ in range(20):
        deadline = group.next_deadline_ms()
        assert deadline is not None
        outcome = classic.tick(group, deadline, limits)
        if joins(outcome):
            return outcome
        group = outcome.group
    raise AssertionError("the barrier never opened")


def stable_group(*member_ids: str, limits: Limits = NO_DELAY) -> ClassicGroup:
    """Members that joined, the leader assigned ``p<i>`` to each, all synced: generation 1."""
    group = ClassicGroup("g")
    for member_id in member_ids:
        group = classic.join(group, request(), 0, member_id, limits).group
    parked = group
    for member_id in member_ids:
        parked = classic.join(parked, request(member_id), 0, "unused", limits).group
    outcome = classic.tick(parked, 0, limits)
    group = outcome.group
    assert group.state == "completing" and group.generation == 1
    leader = group.leader_id
    assert leader is not None
    for member_id in member_ids:
        if member_id != leader:
            group = classic.sync(group, sync_request(member_id, 1), 0, limits).group
    assignments = {m: f"p{i}".encode() for i, m in enumerate(member_ids)}
    done = classic.sync(group, sync_request(leader, 1, assignments), 0, limits)
    assert done.group.state == "stable"
    return done.group


def sync_request(
    member_id: str, generation: int, assignments: dict[str, bytes] | None = None
) -> SyncRequest:
    return SyncRequest(member_id, None, generation, "consumer", "range", assignments or {})


def test_first_join_needs_a_member_id_then_waits_the_initial_delay() -> None:
    outcome = new_member(ClassicGroup("g"), "a", now_ms=1_000)
    assert joins(outcome) == {}  # parked at the barrier
    group = outcome.group
    assert group.state == "preparing" and group.join_deadline_ms == 4_000
    assert group.next_deadline_ms() == 4_000
    assert joins(classic.tick(group, 3_999, LIMITS)) == {}
    done = classic.tick(group, 4_000, LIMITS)
    answer = joins(done)["a"]
    assert answer.error is None and answer.generation == 1 and answer.leader_id == "a"
    assert answer.protocol_name == "range"
    assert [(m.member_id, m.metadata) for m in answer.members] == [("a", b"sub-range")]
    assert done.group.state == "completing"


def test_members_arriving_during_the_initial_delay_extend_it_up_to_the_rebalance_timeout() -> None:
    group = new_member(ClassicGroup("g"), "a", 0).group
    group = new_member(group, "b", 2_000).group  # a new member: extend by another delay
    assert joins(classic.tick(group, 3_000, LIMITS)) == {}
    extended = classic.tick(group, 3_000, LIMITS).group
    assert extended.join_deadline_ms == 6_000
    done = classic.tick(extended, 6_000, LIMITS)
    assert set(joins(done)) == {"a", "b"}
    leader = joins(done)["a"]
    assert leader.leader_id == "a" and [m.member_id for m in leader.members] == ["a", "b"]
    assert joins(done)["b"].members == ()  # followers get no member list


def test_the_leader_assigns_and_every_member_gets_its_bytes_through_sync_group() -> None:
    group = stable_group("a", "b", "c")
    for member_id, expected in (("a", b"p0"), ("b", b"p1"), ("c", b"p2")):
        answer = syncs(classic.sync(group, sync_request(member_id, 1), 5, NO_DELAY))[member_id]
        assert answer == SyncResult(None, "consumer", "range", expected)


def test_followers_wait_for_the_leaders_sync_group() -> None:
    group = ClassicGroup("g")
    for member_id in ("a", "b"):
        group = classic.join(group, request(), 0, member_id, NO_DELAY).group
    for member_id in ("a", "b"):
        group = classic.join(group, request(member_id), 0, "x", NO_DELAY).group
    group = classic.tick(group, 0, NO_DELAY).group
    follower = classic.sync(group, sync_request("b", 1), 1, NO_DELAY)
    assert syncs(follower) == {}  # parked
    leader = classic.sync(follower.group, sync_request("a", 1, {"a": b"A", "b": b"B"}), 2, NO_DELAY)
    assert syncs(leader) == {
        "a": SyncResult(None, "consumer", "range", b"A"),
        "b": SyncResult(None, "consumer", "range", b"B"),
    }


def test_a_join_during_stable_starts_a_rebalance_and_heartbeats_say_rejoin() -> None:
    group = stable_group("a", "b")
    outcome = new_member(group, "c", 100, NO_DELAY)
    assert outcome.group.state == "preparing" and joins(outcome) == {}
    group, error = classic.heartbeat(outcome.group, "a", None, 1, 200)
    assert error is ErrorCode.REBALANCE_IN_PROGRESS
    group = classic.join(group, request("a"), 300, "x", NO_DELAY).group
    done = classic.join(group, request("b"), 400, "x", NO_DELAY)  # the last one: barrier opens
    assert set(joins(done)) == {"a", "b", "c"} and done.group.generation == 2
    assert all(r.error is None and r.generation == 2 for r in joins(done).values())


def test_members_that_do_not_rejoin_by_the_rebalance_timeout_are_removed() -> None:
    group = stable_group("a", "b")
    group = classic.join(group, request("a"), 1_000, "x", NO_DELAY).group  # a (leader) rejoins
    assert group.state == "preparing" and group.join_deadline_ms == 31_000
    done = classic.tick(group, 31_000, NO_DELAY)
    assert set(joins(done)) == {"a"} and set(done.group.members) == {"a"}
    assert done.group.generation == 2


def test_stale_generations_are_fenced() -> None:
    group = stable_group("a", "b")
    group = classic.join(group, request("a"), 0, "x", NO_DELAY).group
    group = classic.join(group, request("b"), 0, "x", NO_DELAY).group
    group = classic.tick(group, 0, NO_DELAY).group  # generation 2
    assert classic.heartbeat(group, "b", None, 1, 5)[1] is ErrorCode.ILLEGAL_GENERATION
    assert syncs(classic.sync(group, sync_request("b", 1), 5, NO_DELAY)) == {
        "b": SyncResult(ErrorCode.ILLEGAL_GENERATION)
    }
    assert classic.commit_error(group, "b", None, 1) is ErrorCode.ILLEGAL_GENERATION
    # the new generation's assignment is still being computed: commit after it
    assert classic.commit_error(group, "b", None, 2) is ErrorCode.REBALANCE_IN_PROGRESS
    assert classic.commit_error(group, "zz", None, 2) is ErrorCode.UNKNOWN_MEMBER


def test_commit_rules_without_a_generation() -> None:
    group = stable_group("a")
    assert classic.commit_error(group, "a", None, 1) is None
    assert classic.commit_error(group, "", None, -1) is ErrorCode.UNKNOWN_MEMBER
    assert classic.commit_error(None, "", None, -1) is None  # no members: a simple consumer
    assert classic.commit_error(None, "a", None, 3) is ErrorCode.ILLEGAL_GENERATION


def test_protocol_is_the_one_every_member_supports_and_most_prefer() -> None:
    group = ClassicGroup("g")
    choices = {"a": (RANGE, ROUND), "b": (ROUND, RANGE), "c": (ROUND,)}
    for member_id, protocols in choices.items():
        group = classic.join(group, request(protocols=protocols), 0, member_id, LIMITS).group
    for member_id, protocols in choices.items():
        group = classic.join(group, request(member_id, protocols=protocols), 0, "x", LIMITS).group
    refused = classic.join(group, request(protocols=(STICKY,)), 0, "d", LIMITS)
    assert joins(refused) == {"": JoinResult("", ErrorCode.INCONSISTENT_GROUP_PROTOCOL)}
    other_type = classic.join(group, request(protocol_type="connect"), 0, "d", LIMITS)
    assert joins(other_type)[""].error is ErrorCode.INCONSISTENT_GROUP_PROTOCOL
    done = open_barrier(group)
    assert done.group.protocol_name == "roundrobin"
    assert {m.metadata for m in joins(done)[done.group.leader_id or ""].members} == {b"sub-rr"}


def test_session_timeout_outside_the_limits_is_refused() -> None:
    short = classic.join(ClassicGroup("g"), request(session_timeout_ms=5_999), 0, "a", LIMITS)
    assert joins(short)[""].error is ErrorCode.INVALID_SESSION_TIMEOUT
    long = classic.join(ClassicGroup("g"), request(session_timeout_ms=1_800_001), 0, "a", LIMITS)
    assert joins(long)[""].error is ErrorCode.INVALID_SESSION_TIMEOUT


def test_a_silent_member_is_removed_after_its_session_timeout_and_the_group_rebalances() -> None:
    group = stable_group("a", "b")
    group, _ = classic.heartbeat(group, "a", None, 1, 9_000)
    assert group.next_deadline_ms() == 10_000  # b's session ends first
    outcome = classic.tick(group, 10_000, NO_DELAY)
    assert set(outcome.group.members) == {"a"} and outcome.group.state == "preparing"


def test_static_member_restart_keeps_its_assignment_without_a_rebalance() -> None:
    group = ClassicGroup("g")
    for member_id, instance in (("a", "i-a"), ("b", "i-b")):
        group = classic.join(group, request(instance_id=instance), 0, member_id, LIMITS).group
    group = open_barrier(group).group
    group = classic.sync(group, replace(sync_request("b", 1), instance_id="i-b"), 0, LIMITS).group
    leader = replace(sync_request("a", 1, {"a": b"A", "b": b"B"}), instance_id="i-a")
    group = classic.sync(group, leader, 0, LIMITS).group
    assert group.state == "stable" and group.generation == 1
    # b restarts: a new process, no member id, the same instance id
    back = classic.join(group, request(instance_id="i-b"), 5_000, "b2", LIMITS)
    answer = joins(back)["b2"]
    assert answer.error is None and answer.generation == 1 and back.group.state == "stable"
    assert back.group.rebalances == group.rebalances  # no rebalance
    synced = classic.sync(
        back.group, replace(sync_request("b2", 1), instance_id="i-b"), 5_001, LIMITS
    )
    assert syncs(synced)["b2"].assignment == b"B"
    # the old incarnation is fenced
    assert classic.heartbeat(back.group, "b", "i-b", 1, 5_002)[1] is ErrorCode.FENCED_INSTANCE_ID
    assert classic.commit_error(back.group, "b", "i-b", 1) is ErrorCode.FENCED_INSTANCE_ID


def test_static_leader_restart_skips_the_assignment() -> None:
    group = ClassicGroup("g")
    group = classic.join(group, request(instance_id="i-a"), 0, "a", LIMITS).group
    group = open_barrier(group).group
    group = classic.sync(
        group, replace(sync_request("a", 1, {"a": b"A"}), instance_id="i-a"), 0, LIMITS
    ).group
    back = joins(classic.join(group, request(instance_id="i-a"), 1, "a2", LIMITS))["a2"]
    assert back.leader_id == "a2" and back.skip_assignment and back.generation == 1


def test_static_members_that_are_away_keep_their_place_through_the_barrier() -> None:
    group = ClassicGroup("g")
    away = request(instance_id="i-a", session_timeout_ms=60_000)
    group = classic.join(group, away, 0, "a", NO_DELAY).group  # generation 1: a alone
    group = classic.join(group, request(), 0, "b", NO_DELAY).group
    group = classic.join(group, request("b"), 0, "x", NO_DELAY).group
    done = classic.tick(group, 30_000, NO_DELAY).group
    assert set(done.members) == {"a", "b"}  # a did not rejoin but is static: kept


def test_leave_group_removes_members_in_a_batch() -> None:
    group = stable_group("a", "b", "c")
    outcome, results = classic.leave(
        group, [classic.Leaving("a"), classic.Leaving("zz"), classic.Leaving("c")], 1, NO_DELAY
    )
    assert results == [("a", None), ("zz", ErrorCode.UNKNOWN_MEMBER), ("c", None)]
    assert set(outcome.group.members) == {"b"} and outcome.group.state == "preparing"
    assert outcome.group.leader_id == "b"


def test_a_member_that_never_sends_sync_group_is_removed() -> None:
    group = ClassicGroup("g")
    for member_id in ("a", "b"):
        group = classic.join(
            group, request(session_timeout_ms=60_000), 0, member_id, NO_DELAY
        ).group
    for member_id in ("a", "b"):
        group = classic.join(
            group, request(member_id, session_timeout_ms=60_000), 0, "x", NO_DELAY
        ).group
    group = classic.tick(group, 0, NO_DELAY).group
    group = classic.sync(group, sync_request("a", 1, {"a": b"A", "b": b"B"}), 1, NO_DELAY).group
    assert group.state == "stable" and group.sync_deadline_ms == 30_000
    expired = classic.tick(group, 30_000, NO_DELAY).group
    assert set(expired.members) == {"a"} and expired.state == "preparing"


def test_a_rebalance_answers_parked_sync_groups_with_rebalance_in_progress() -> None:
    group = ClassicGroup("g")
    for member_id in ("a", "b"):
        group = classic.join(group, request(), 0, member_id, NO_DELAY).group
    for member_id in ("a", "b"):
        group = classic.join(group, request(member_id), 0, "x", NO_DELAY).group
    group = classic.tick(group, 0, NO_DELAY).group
    group = classic.sync(group, sync_request("b", 1), 1, NO_DELAY).group
    outcome = classic.join(group, request("b", protocols=(RANGE, ROUND)), 2, "x", NO_DELAY)
    assert syncs(outcome) == {"b": SyncResult(ErrorCode.REBALANCE_IN_PROGRESS)}


def test_a_pending_member_that_never_joins_stops_blocking_the_barrier() -> None:
    group = stable_group("a")
    asked = classic.join(group, request(), 0, "b", NO_DELAY)  # told MEMBER_ID_REQUIRED
    group = classic.join(
        asked.group, request("a", protocols=(RANGE, ROUND)), 1, "x", NO_DELAY
    ).group
    assert joins(classic.tick(group, 5_000, NO_DELAY)) == {}  # b may still come
    done = classic.tick(group, 10_000, NO_DELAY)  # b's session timeout passed
    assert set(joins(done)) == {"a"}


# ---- property: random events keep the group consistent ---------------------------------------

EVENTS = st.lists(
    st.tuples(
        st.sampled_from(["join", "rejoin", "sync", "heartbeat", "leave", "tick", "static"]),
        st.sampled_from(["m1", "m2", "m3"]),
        st.integers(0, 40_000),
    ),
    max_size=40,
)


@settings(max_examples=300)
@given(EVENTS)
def test_random_events_keep_the_invariants(events: list[tuple[str, str, int]]) -> None:
    group = ClassicGroup("g")
    now_ms = 0
    ids = iter(f"n{i}" for i in range(1000))
    for kind, who, step in events:
        now_ms += step
        before = group
        match kind:
            case "join":
                outcome = classic.join(group, request(), now_ms, next(ids), LIMITS)
            case "static":
                outcome = classic.join(group, request(instance_id=who), now_ms, next(ids), LIMITS)
            case "rejoin":
                member = min(group.members, default=who)
                outcome = classic.join(group, request(member), now_ms, next(ids), LIMITS)
            case "sync":
                member = min(group.members, default=who)
                assignments = {m: m.encode() for m in group.members}
                outcome = classic.sync(
                    group, sync_request(member, group.generation, assignments), now_ms, LIMITS
                )
            case "heartbeat":
                member = max(group.members, default=who)
                group, _ = classic.heartbeat(group, member, None, group.generation, now_ms)
                outcome = Outcome(group)
            case "leave":
                member = max(group.members, default=who)
                outcome, _ = classic.leave(group, [classic.Leaving(member)], now_ms, LIMITS)
            case _:
                outcome = classic.tick(group, now_ms, LIMITS)
        group = outcome.group
        _check(before, outcome)


def _check(before: ClassicGroup, outcome: Outcome) -> None:
    group = outcome.group
    assert group.generation >= before.generation
    assert not set(group.pending) & set(group.members)
    instances = [m.instance_id for m in group.members.values() if m.instance_id]
    assert len(instances) == len(set(instances))
    if group.members:
        assert group.leader_id in group.members
    if group.state == "empty":
        assert not group.members
    if group.state in ("completing", "stable"):
        assert group.protocol_name is not None
        assert not any(m.awaiting_join for m in group.members.values())
    if group.state != "completing":
        assert not any(m.awaiting_sync for m in group.members.values())
    for answer in outcome.answers:
        if isinstance(answer, JoinAnswer) and answer.result.error is None:
            assert answer.result.generation == group.generation
            assert answer.result.member_id in group.members


@pytest.mark.parametrize("state", ["empty", "preparing", "completing", "stable"])
def test_every_state_has_a_kafka_name(state: str) -> None:
    assert replace(ClassicGroup("g"), state=state).kafka_state  # type: ignore[arg-type]
