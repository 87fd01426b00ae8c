"""One Fetch per broker: which partitions go to which leader, and which a request names."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from conveyor.client.fetch_plan import (
    Ahead,
    Target,
    group_by_leader,
    next_retry_ms,
    plan_fetch,
    poll_wait_ms,
    reserve_per_partition,
    start_of,
)
from conveyor.client.kafka_fetcher import fetch_request
from conveyor.client.types import TopicPartition
from conveyor.protocol.kafka.codec import decode_request, encode_request

A0, A1, B0 = TopicPartition("a", 0), TopicPartition("a", 1), TopicPartition("b", 0)
LEADERS = {A0: "broker-1:9", A1: "broker-1:9", B0: "broker-2:9"}


def _targets(*tps: TopicPartition) -> list[Target]:
    return [Target(tp, offset=10 * i, generation=1) for i, tp in enumerate(tps)]


def test_partitions_go_to_their_leader_and_leaderless_ones_nowhere() -> None:
    c0 = TopicPartition("c", 0)
    targets = _targets(A0, B0, A1, c0)
    grouped = group_by_leader(targets, LEADERS.get)
    assert grouped == {"broker-1:9": [targets[0], targets[2]], "broker-2:9": [targets[1]]}


def test_a_request_names_fetchable_partitions_only() -> None:
    targets = _targets(A0, A1, B0)
    plan = plan_fetch(targets, paused={A1}, retry_at_ms={B0: 500.0}, now_ms=100.0, rotation=0)
    assert [t.tp for t in plan] == [A0]
    later = plan_fetch(targets, paused=set(), retry_at_ms={B0: 500.0}, now_ms=500.0, rotation=0)
    assert [t.tp for t in later] == [A0, A1, B0]
    assert next_retry_ms(targets, {B0: 500.0}, 100.0) == 400.0
    assert next_retry_ms(targets, {B0: 500.0}, 600.0) is None
    assert plan_fetch(targets, paused={A0, A1, B0}, retry_at_ms={}, now_ms=0, rotation=3) == []


def test_the_order_rotates_so_the_byte_budget_starves_nobody() -> None:
    targets = _targets(B0, A1, A0)
    firsts = [
        plan_fetch(targets, paused=set(), retry_at_ms={}, now_ms=0, rotation=r)[0].tp
        for r in range(3)
    ]
    assert firsts == [A0, A1, B0]


@given(
    st.lists(
        st.tuples(st.sampled_from("xyz"), st.integers(0, 7), st.sampled_from([None, "l1", "l2"])),
        unique_by=lambda t: (t[0], t[1]),
    ),
    st.integers(0, 50),
)
def test_every_led_partition_is_in_exactly_one_request(
    layout: list[tuple[str, int, str | None]], rotation: int
) -> None:
    leaders = {TopicPartition(t, p): leader for t, p, leader in layout}
    targets = [Target(tp, offset=1, generation=0) for tp in leaders]
    grouped = group_by_leader(targets, leaders.get)
    named = [t.tp for leader, group in grouped.items() for t in group]
    assert sorted(named) == sorted(tp for tp, leader in leaders.items() if leader is not None)
    for leader, group in grouped.items():
        assert all(leaders[t.tp] == leader for t in group)
        plan = plan_fetch(group, paused=set(), retry_at_ms={}, now_ms=0, rotation=rotation)
        assert sorted(t.tp for t in plan) == sorted(t.tp for t in group)


def test_the_request_names_every_partition_with_its_offset() -> None:
    request = fetch_request(
        12,
        [(A0, 5), (B0, 7), (A1, 9)],
        max_wait_ms=100,
        partition_max_bytes=1000,
        read_committed=False,
    )
    decoded = decode_request(encode_request(1, 12, 1, "c", request)[4:]).body
    named = {
        (topic.topic, p.partition): (p.fetch_offset, p.partition_max_bytes)
        for topic in decoded.topics
        for p in topic.partitions
    }
    assert named == {("a", 0): (5, 1000), ("b", 0): (7, 1000), ("a", 1): (9, 1000)}
    assert decoded.max_bytes == 3000 and decoded.min_bytes == 1 and decoded.max_wait_ms == 100


def test_a_request_that_leaves_partitions_out_waits_briefly() -> None:
    assert poll_wait_ms(3, 3, max_wait_ms=500, short_wait_ms=100) == 500
    assert poll_wait_ms(2, 3, max_wait_ms=500, short_wait_ms=100) == 100
    assert poll_wait_ms(2, 3, max_wait_ms=50, short_wait_ms=100) == 50


def test_a_request_reserves_at_most_an_eighth_of_the_buffer() -> None:
    mib = 1024 * 1024
    assert reserve_per_partition(4, partition_max_bytes=4 * mib, buffer_max_bytes=64 * mib) == (
        2 * mib
    )
    # few partitions: each its whole partition_max_bytes
    assert reserve_per_partition(1, partition_max_bytes=mib, buffer_max_bytes=64 * mib) == mib
    # a small buffer still lets one partition's worth through
    assert reserve_per_partition(3, partition_max_bytes=mib, buffer_max_bytes=mib) == mib // 3
    assert reserve_per_partition(0, partition_max_bytes=mib, buffer_max_bytes=mib) == mib


def test_a_request_starts_past_an_answer_only_when_the_buffer_will_take_it() -> None:
    """Issue 15: after a leader change two loops answered one partition from the same
    position; the one in second was dropped, and starting past it skipped records for
    good (tests/unit/client/test_kafka_fetcher_leader_move.py runs the loops)."""
    at = Target(A0, offset=2, generation=1)
    assert start_of(at, None) == at
    assert start_of(at, Ahead(Target(A0, 2, 1), end=7)) == Target(A0, 7, 1)  # pipelined
    assert start_of(at, Ahead(Target(A0, 0, 1), end=7)) == at  # from elsewhere: dropped
    assert start_of(at, Ahead(Target(A0, 2, 0), end=7)) == at  # an older generation
    assert start_of(at, Ahead(Target(A0, 2, 1), end=0)) == at  # nothing answered
