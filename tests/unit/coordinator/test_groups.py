"""Consumer-group decisions: assignment balance and stickiness, cooperative hand-over,
expiry, fencing. Pure: no network, no clock."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from conveyor.coordinator import groups
from conveyor.coordinator.groups import TP, Group, Heartbeat, Member
from conveyor.protocol.errors import ErrorCode, InvalidRequestError, RetriableError

COUNTS = {"t": 8}


def member(member_id: str, topics: tuple[str, ...] = ("t",)) -> Member:
    return Member(member_id, "c", topics, 10_000, 300_000, 0)


def beat(
    member_id: str | None, owned: set[TP] | frozenset[TP] | list[TP] = frozenset(), **kw: object
) -> Heartbeat:
    return Heartbeat(member_id, "c", ("t",), frozenset(owned), **kw)  # type: ignore[arg-type]


def join(group: Group, name: str, now_ms: int = 0) -> Group:
    group, member_id, error = groups.heartbeat(group, beat(None), now_ms, COUNTS, name)
    assert member_id == name and error is None
    return group


def settle_with(group: Group, counts: dict[str, int], now_ms: int) -> Group:
    """Every member heartbeats, reporting what it was given, until nothing changes."""
    for _ in range(10):
        before = group
        for member_id in sorted(group.members):
            owned = frozenset(group.assigned_to(member_id))
            group, _, _ = groups.heartbeat(group, beat(member_id, owned), now_ms, counts, "x")
        if group == before:
            return group
    raise AssertionError("the group did not settle")


def settle(group: Group, now_ms: int = 0) -> Group:
    return settle_with(group, COUNTS, now_ms)


def test_two_members_split_the_partitions_evenly() -> None:
    group = settle(join(join(Group("g"), "a"), "b"))
    assert len(group.assigned_to("a")) == len(group.assigned_to("b")) == 4
    assert set(group.assigned_to("a")) | set(group.assigned_to("b")) == {
        TP("t", p) for p in range(8)
    }
    assert group.state == "stable"


def test_a_joining_member_gets_partitions_only_after_their_owner_releases_them() -> None:
    group = settle(join(join(Group("g"), "a"), "b"))
    a_before = set(group.assigned_to("a"))
    group = join(group, "c")
    # c's target is set, but its partitions are still given to a and b until they stop
    # reporting them: never two owners.
    assert group.pending_for("c")
    assert group.assigned_to("c") == []
    assert group.state == "rebalancing"
    # a reports what it owns now (its target): the partitions it gives up go to c.
    a_target = group.target["a"]
    group, _, _ = groups.heartbeat(group, beat("a", a_target), 1, COUNTS, "x")
    assert set(group.assigned_to("a")) == set(a_target) <= a_before  # sticky
    released = a_before - a_target
    assert released <= set(group.assigned_to("c"))
    group = settle(group, 2)
    sizes = sorted(len(group.assigned_to(m)) for m in "abc")
    assert sizes == [2, 3, 3]


def test_a_silent_member_expires_and_its_partitions_move() -> None:
    group = settle(join(join(Group("g"), "a"), "b"))
    group, _, _ = groups.heartbeat(group, beat("a", group.assigned_to("a")), 20_000, COUNTS, "x")
    group = groups.expire(group, 20_001, COUNTS)  # b last beat at 0, timeout 10 s
    assert set(group.members) == {"a"}
    assert len(group.assigned_to("a")) == 8


def test_a_member_that_stops_polling_is_removed() -> None:
    group = settle(join(join(Group("g"), "a"), "b"))
    owned = frozenset(group.assigned_to("b"))
    group, _, error = groups.heartbeat(group, beat("b", owned, poll_age_ms=300_001), 1, COUNTS, "x")
    assert error is not None and error.code is ErrorCode.UNKNOWN_MEMBER
    assert "b" not in group.members


def test_a_member_holding_a_revoked_partition_too_long_is_removed() -> None:
    group = settle(join(Group("g"), "a"))
    group = join(group, "b", now_ms=1)
    assert group.revoking("a")
    # a keeps heartbeating but never releases what it must give up
    owned = frozenset(group.assigned_to("a")) | set(group.revoking("a"))
    group, _, _ = groups.heartbeat(group, beat("a", owned), 299_000, COUNTS, "x")
    group, _, _ = groups.heartbeat(group, beat("b", group.assigned_to("b")), 299_000, COUNTS, "x")
    assert set(groups.expire(group, 299_500, COUNTS).members) == {"a", "b"}
    group = groups.expire(group, 300_002, COUNTS)
    assert set(group.members) == {"b"} and len(group.assigned_to("b")) == 8


def test_commits_are_fenced() -> None:
    group = settle(join(join(Group("g"), "a"), "b"))
    a_part = group.assigned_to("a")[0]
    b_part = group.assigned_to("b")[0]
    groups.check_commit(group, "a", group.generation, [a_part])
    with pytest.raises(InvalidRequestError) as lost:
        groups.check_commit(group, "a", group.generation, [b_part])
    assert lost.value.code is ErrorCode.FENCED_MEMBER
    assert lost.value.code.http_status == 409
    with pytest.raises(InvalidRequestError) as zombie:
        groups.check_commit(group, "zombie", group.generation - 1, [a_part])
    assert zombie.value.code is ErrorCode.UNKNOWN_MEMBER
    with pytest.raises(InvalidRequestError) as future:
        groups.check_commit(group, "a", group.generation + 1, [a_part])
    assert future.value.code is ErrorCode.ILLEGAL_GENERATION
    with pytest.raises(InvalidRequestError) as simple:
        groups.check_commit(group, None, -1, [a_part])
    assert simple.value.code is ErrorCode.FENCED_MEMBER
    groups.check_commit(Group("empty"), None, -1, [a_part])  # a standalone consumer


def test_a_late_commit_from_before_a_member_lost_and_regained_a_partition_is_fenced() -> None:
    """A commit sent while ``a`` owned everything, delayed (a network partition) until
    after ``b`` took half and left again and ``a`` got it back and committed further: it
    must not move the group back (chaos seed 202 read 11 records twice that way)."""
    group = settle(join(Group("g"), "a"))
    early = group.generation
    part = TP("t", 0)
    groups.check_commit(group, "a", early, [part])
    group = settle(join(group, "b"))
    b_parts = set(group.assigned_to("b"))
    regained = sorted(b_parts)[0]
    group, _, _ = groups.heartbeat(group, beat("b", b_parts, leave=True), 0, COUNTS, "x")
    group = settle(group)
    assert regained in group.assigned_to("a") and group.generation > early
    groups.check_commit(group, "a", group.generation, [regained])  # its current epoch
    with pytest.raises(InvalidRequestError) as late:
        groups.check_commit(group, "a", early, [regained])
    assert late.value.code is ErrorCode.ILLEGAL_GENERATION
    kept = sorted(set(group.assigned_to("a")) - b_parts)[0]  # owned all along: accepted
    groups.check_commit(group, "a", early, [kept])


def test_while_rebuilding_unknown_members_and_old_generations_retry_instead_of_fenced() -> None:
    """Just after a coordinator restart or takeover: a member's commit that reaches the
    new coordinator before its heartbeat is told to retry, not fenced (it would drop its
    partitions); a member the group knows is checked as usual."""
    group = settle(join(Group("g"), "a"))
    part = group.assigned_to("a")[0]
    for member, generation in (("unknown", 3), ("a", group.generation + 5)):
        with pytest.raises(RetriableError) as retry:
            groups.check_commit(group, member, generation, [part], rebuilding=True)
        assert retry.value.code is ErrorCode.NOT_READY
    groups.check_commit(group, "a", group.generation, [part], rebuilding=True)
    with pytest.raises(InvalidRequestError) as lost:
        groups.check_commit(group, "a", group.generation, [TP("other", 0)], rebuilding=True)
    assert lost.value.code is ErrorCode.FENCED_MEMBER


def test_bad_settings_are_rejected_and_change_nothing() -> None:
    group = settle(join(Group("g"), "a"))
    # (no topics at all is refused by the shell for Conveyor's clients: a Kafka member's
    # pattern may match none yet)
    for bad in (
        Heartbeat(None, "c", tuple(f"t{i}" for i in range(101)), frozenset()),
        Heartbeat(None, "c", ("t",), frozenset(), session_timeout_ms=1),
        Heartbeat(
            None, "c", ("t",), frozenset(), session_timeout_ms=20_000, max_poll_interval_ms=10
        ),
    ):
        with pytest.raises(InvalidRequestError):
            groups.heartbeat(group, bad, 1, COUNTS, "new")


def test_an_unknown_member_without_partitions_must_rejoin_but_one_with_partitions_returns() -> None:
    group = settle(join(join(Group("g"), "a"), "b"))
    with pytest.raises(InvalidRequestError) as unknown:
        groups.heartbeat(group, beat("ghost"), 1, COUNTS, "x")
    assert unknown.value.code is ErrorCode.UNKNOWN_MEMBER
    # After a coordinator restart the group is empty; members come back with what they own.
    owned_a, owned_b = group.assigned_to("a"), group.assigned_to("b")
    fresh = Group("g")
    fresh, _, _ = groups.heartbeat(fresh, beat("a", frozenset(owned_a)), 5, COUNTS, "x")
    fresh, _, _ = groups.heartbeat(fresh, beat("b", frozenset(owned_b)), 5, COUNTS, "x")
    fresh = settle(fresh, 6)
    assert fresh.assigned_to("a") == owned_a and fresh.assigned_to("b") == owned_b


def test_partition_count_growth_starts_a_generation_that_spreads_the_new_partitions() -> None:
    group = settle(join(join(Group("g"), "a"), "b"))
    generation = group.generation
    grown = groups.refresh(group, {"t": 12}, 1)
    assert grown.generation == generation + 1
    grown = settle_with(grown, {"t": 12}, 1)
    assert sorted(len(grown.assigned_to(m)) for m in "ab") == [6, 6]


@settings(max_examples=200)
@given(
    st.lists(st.sampled_from(["join", "leave", "beat", "expire"]), min_size=1, max_size=30),
    st.integers(min_value=1, max_value=24),
)
def test_properties_over_random_membership_changes(events: list[str], partitions: int) -> None:
    """Whatever happens: a partition is never given to a member while another member still
    reports owning it; once settled, every partition is given and counts differ by <= 1;
    a member that stays keeps what it had where balance allows (stickiness)."""
    counts = {"t": partitions}
    group = Group("g")
    owned: dict[str, frozenset[TP]] = {}
    now = 0
    names = iter(f"m{i:02d}" for i in range(100))
    for event in events:
        now += 100
        if event == "join" or not group.members:
            group, member_id, _ = groups.heartbeat(group, beat(None), now, counts, next(names))
            owned[member_id] = frozenset()
        elif event == "leave":
            victim = sorted(group.members)[0]
            group, _, _ = groups.heartbeat(group, beat(victim, leave=True), now, counts, "x")
            owned.pop(victim, None)
        elif event == "expire":
            group = groups.expire(group, now + 10_001, counts)  # everyone silent: all expire
            owned = {m: o for m, o in owned.items() if m in group.members}
        else:
            for member_id in sorted(group.members):
                # the member gives up what is no longer given, takes what is given
                owned[member_id] = frozenset(group.assigned_to(member_id))
                group, _, _ = groups.heartbeat(
                    group, beat(member_id, owned[member_id]), now, counts, "x"
                )
        holders: dict[TP, list[str]] = {}
        for member_id, tps in owned.items():
            if member_id in group.members:
                for tp in tps:
                    holders.setdefault(tp, []).append(member_id)
        for tp, given_to in group.given.items():
            others = [m for m in holders.get(tp, []) if m != given_to]
            assert not others, f"{tp} given to {given_to} while {others} still own it"
    before = {m: frozenset(group.assigned_to(m)) for m in group.members}
    group = settle_with(group, counts, now + 1)
    if group.members:
        sizes = [len(group.assigned_to(m)) for m in group.members]
        assert max(sizes) - min(sizes) <= 1
        assert sum(sizes) == partitions
        share = -(-partitions // len(group.members))
        for member_id, had in before.items():
            if member_id in group.members and len(had) <= share:
                assert had <= set(group.assigned_to(member_id)) or len(had) > min(sizes)


@settings(max_examples=200)
@given(
    st.dictionaries(st.sampled_from("abcdef"), st.sets(st.integers(0, 15)), max_size=6),
    st.integers(min_value=0, max_value=16),
)
def test_assign_is_balanced_and_keeps_previous_partitions_up_to_the_share(
    previous: dict[str, set[int]], partitions: int
) -> None:
    members = {m: member(m) for m in previous} or {"a": member("a")}
    prev = {m: {TP("t", p) for p in ps} for m, ps in previous.items()}
    target = groups.assign(members, {"t": partitions}, prev)
    sizes = [len(v) for v in target.values()]
    assert max(sizes) - min(sizes) <= 1 and sum(sizes) == partitions
    every = [tp for tps in target.values() for tp in tps]
    assert len(every) == len(set(every))  # one owner each
    floor = partitions // len(members)
    kept = {m: len(prev.get(m, set()) & target[m]) for m in members}
    valid = {m: {tp for tp in prev.get(m, set()) if tp.partition < partitions} for m in members}
    for m in members:  # nobody loses a partition while below its share
        if len(valid[m]) <= floor and all(not (valid[m] & valid[o]) for o in members if o != m):
            assert kept[m] == len(valid[m])


def test_assignment_is_balanced_across_unequal_subscriptions() -> None:
    members = {
        "a": member("a", ("t", "u")),
        "b": member("b", ("t",)),
        "c": member("c", ("u",)),
    }
    target = groups.assign(members, {"t": 4, "u": 4}, {})
    assert all(tp.topic in members[m].topics for m, tps in target.items() for tp in tps)
    assert sum(len(v) for v in target.values()) == 8
    assert max(len(v) for v in target.values()) - min(len(v) for v in target.values()) <= 1


def test_a_restarted_coordinator_gives_out_only_reported_partitions_at_first() -> None:
    """Before every member has reported, an unreported partition may still be consumed
    by a member that has not come back yet: it must not be given to anyone else."""
    fresh = Group("g", recovery_started_ms=0)
    a_owned = {TP("t", p) for p in (0, 1, 2, 3)}
    b_owned = {TP("t", p) for p in (4, 5, 6, 7)}
    group, _, _ = groups.heartbeat(fresh, beat("a", a_owned), 10, COUNTS, "x")
    assert set(group.assigned_to("a")) == a_owned  # b's partitions are not given to a
    assert not set(group.given) & b_owned
    group, _, _ = groups.heartbeat(group, beat("b", b_owned), 20, COUNTS, "x")
    group = settle(group, 30)
    assert set(group.assigned_to("a")) == a_owned and set(group.assigned_to("b")) == b_owned
    # a partition nobody reports is given once the window (the returning members' session
    # timeout, counted from the coordinator's start) has passed
    lonely = Group("g", recovery_started_ms=0)
    slow = Heartbeat("a", "c", ("t",), frozenset(a_owned), session_timeout_ms=5_000)
    lonely, _, _ = groups.heartbeat(lonely, slow, 10, COUNTS, "x")
    assert len(settle(lonely, 4_999).assigned_to("a")) == 4
    assert len(settle(lonely, 5_001).assigned_to("a")) == 8


@settings(max_examples=300)
@given(
    st.lists(
        st.tuples(st.sampled_from(["join", "leave", "beat", "silence"]), st.integers(0, 99)),
        min_size=1,
        max_size=60,
    ),
    st.integers(min_value=1, max_value=20),
)
def test_never_two_owners_when_members_act_one_at_a_time(
    events: list[tuple[str, int]], partitions: int
) -> None:
    """Members as the client behaves: a heartbeat reports what the member owns; from the
    answer it starts the new partitions at once and gives up the revoked ones only at its
    next heartbeat (after the application's poll). One member at a time, in any order;
    one member may go silent and expire (it is then gone, as a fenced client drops all).
    At every step no partition is owned by two live members."""
    counts = {"t": partitions}
    group = Group("g")
    owned: dict[str, set[TP]] = {}
    revoking: dict[str, set[TP]] = {}
    last_beat: dict[str, int] = {}
    now = 0
    names = iter(f"m{i:03d}" for i in range(1000))
    for kind, pick in events:
        now += 100
        live = sorted(group.members)
        if kind == "join" or not live:
            group, member_id, _ = groups.heartbeat(group, beat(None), now, counts, next(names))
            owned[member_id] = set(group.assigned_to(member_id))
            revoking[member_id], last_beat[member_id] = set(), now
        elif kind == "leave":
            victim = live[pick % len(live)]
            group, _, _ = groups.heartbeat(group, beat(victim, leave=True), now, counts, "x")
        elif kind == "silence":  # everyone else heartbeats; the victim stays silent
            victim = live[pick % len(live)]
            now = last_beat[victim] + 10_001
            for member_id in live:
                if member_id != victim:
                    group = _client_beat(
                        group, member_id, owned=owned, revoking=revoking, now_ms=now, counts=counts
                    )
                    last_beat[member_id] = now
            group = groups.expire(group, now, counts)
        else:
            member_id = live[pick % len(live)]
            group = _client_beat(
                group, member_id, owned=owned, revoking=revoking, now_ms=now, counts=counts
            )
            last_beat[member_id] = now
        holders: dict[TP, list[str]] = {}
        for member_id in group.members:
            for tp in owned[member_id]:
                holders.setdefault(tp, []).append(member_id)
        doubled = {tp: who for tp, who in holders.items() if len(who) > 1}
        assert not doubled, f"two owners: {doubled}"


def _client_beat(
    group: Group,
    member_id: str,
    *,
    owned: dict[str, set[TP]],
    revoking: dict[str, set[TP]],
    now_ms: int,
    counts: dict[str, int],
) -> Group:
    owned[member_id] -= revoking[member_id]  # released at the poll before this heartbeat
    group, _, _ = groups.heartbeat(group, beat(member_id, owned[member_id]), now_ms, counts, "x")
    assigned = set(group.assigned_to(member_id))
    revoking[member_id] = owned[member_id] - assigned
    owned[member_id] |= assigned
    return group


def test_after_a_restart_each_returning_member_keeps_what_it_owns_whoever_comes_first() -> None:
    """The first member back gets a target of everything; the next one's reported
    partitions must still win over that target (regression: they were swapped)."""
    fresh = Group("g", recovery_started_ms=0)
    owns_high = {TP("t", p) for p in (4, 5, 6, 7)}
    owns_low = {TP("t", p) for p in (0, 1, 2, 3)}
    group, _, _ = groups.heartbeat(fresh, beat("a", owns_high), 10, COUNTS, "x")  # a < b
    group, _, _ = groups.heartbeat(group, beat("b", owns_low), 20, COUNTS, "x")
    group = settle(group, 30)
    assert set(group.assigned_to("a")) == owns_high
    assert set(group.assigned_to("b")) == owns_low


# ---- static membership ---------------------------------------------------------------------


def test_a_restarted_static_member_takes_its_partitions_back_at_once() -> None:
    group, _, _ = groups.heartbeat(Group("g"), beat(None, instance_id="w1"), 0, COUNTS, "a")
    group = settle(join(group, "b"))
    a_parts, b_parts = group.assigned_to("a"), group.assigned_to("b")
    generation = group.generation
    # a is SIGKILLed; its restart joins (no member id) with the same instance id, long
    # before a's session would time out
    group, member_id, error = groups.heartbeat(
        group, beat(None, instance_id="w1"), 1_000, COUNTS, "a2"
    )
    assert (member_id, error) == ("a2", None)
    assert set(group.members) == {"a2", "b"}
    assert group.assigned_to("a2") == a_parts  # given at once, not pending
    assert group.assigned_to("b") == b_parts  # nobody else moved
    assert group.generation == generation + 1 and group.state == "stable"
    # anything still running as a is fenced, and changes nothing
    with pytest.raises(InvalidRequestError) as fenced:
        groups.heartbeat(group, beat("a", a_parts, instance_id="w1"), 1_001, COUNTS, "x")
    assert fenced.value.code is ErrorCode.FENCED_INSTANCE_ID
    with pytest.raises(InvalidRequestError) as unknown:
        groups.check_commit(group, "a", generation, a_parts)
    assert unknown.value.code is ErrorCode.UNKNOWN_MEMBER
    groups.check_commit(group, "a2", group.generation, a_parts)


def test_a_static_member_restarted_with_other_topics_is_retargeted() -> None:
    counts = {"t": 4, "u": 4}
    group, _, _ = groups.heartbeat(Group("g"), beat(None, instance_id="w1"), 0, counts, "a")
    group = settle_with(group, counts, 0)
    assert len(group.assigned_to("a")) == 4
    restart = Heartbeat(None, "c", ("t", "u"), frozenset(), instance_id="w1")
    group, _, _ = groups.heartbeat(group, restart, 1, counts, "a2")
    assert set(group.members) == {"a2"}
    assert group.members["a2"].topics == ("t", "u")
    assert len(group.assigned_to("a2")) == 8


@pytest.mark.parametrize("instance_id", ["", "x" * 201])
def test_instance_ids_are_bounded(instance_id: str) -> None:
    with pytest.raises(InvalidRequestError):
        groups.heartbeat(Group("g"), beat(None, instance_id=instance_id), 0, COUNTS, "a")
