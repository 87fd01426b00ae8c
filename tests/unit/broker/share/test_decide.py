"""Share-partition decisions, scenario by scenario (docs/queues.md's rules)."""

from __future__ import annotations

import pytest

from conveyor.broker.share import decide
from conveyor.broker.share.keyindex import key_id
from conveyor.broker.share.state import (
    ACKED,
    ACQUIRED,
    ARCHIVED,
    AVAILABLE,
    DEAD,
    ShareState,
    Span,
    invariant_problems,
)
from conveyor.protocol.share import AckRange, ShareGroupConfig

UNORDERED = ShareGroupConfig()
KEYED = ShareGroupConfig(mode="key_ordered")


def fresh(config: ShareGroupConfig, count: int, keys: list[bytes] | None = None) -> ShareState:
    """``count`` records, each in a batch of its own."""
    state = ShareState(config.mode, 0)
    for offset in range(count):
        ids = None
        if config.mode == "key_ordered":
            assert keys is not None
            ids = [key_id(keys[offset], offset)]
        state.extend(Span(offset, offset, keys=ids))
    return state


def ack(partition_range: tuple[int, int], kind: str = "accept", **kw: object) -> AckRange:
    first, last = partition_range
    return AckRange(partition=0, first_offset=first, last_offset=last, type=kind, **kw)  # type: ignore[arg-type]


def ok(state: ShareState) -> None:
    assert invariant_problems(state) == []


def test_acquire_accept_release_moves_the_start_offset() -> None:
    state = fresh(UNORDERED, 10)
    _, got = decide.acquire(state, UNORDERED, "m", 4, now_ms=0)
    assert got is not None
    assert [(r.first_offset, r.last_offset, r.delivery_count) for r in got.ranges] == [(0, 3, 1)]
    assert got.deadline_ms == 30_000
    _, results = decide.acknowledge(
        state,
        UNORDERED,
        "m",
        [
            ack((0, 1), acquisition=got.acquisition),
            ack((2, 3), "release", acquisition=got.acquisition),
        ],
        now_ms=10,
    )
    assert [r.error for r in results] == [None, None]
    assert state.start == 2
    _, again = decide.acquire(state, UNORDERED, "n", 100, now_ms=20)
    assert again is not None
    assert [(r.first_offset, r.last_offset, r.delivery_count) for r in again.ranges] == [
        (2, 3, 2),
        (4, 9, 1),
    ]
    ok(state)


def test_unordered_receives_end_at_a_batch_boundary() -> None:
    state = ShareState("unordered", 0)
    state.extend(Span(0, 9))  # one stored batch of 10
    state.extend(Span(10, 29))  # and one of 20
    _, got = decide.acquire(state, UNORDERED, "m", 4, now_ms=0)
    assert got is not None and [(r.first_offset, r.last_offset) for r in got.ranges] == [(0, 9)]
    _, next_batch = decide.acquire(state, UNORDERED, "n", 3, now_ms=0)
    assert next_batch is not None
    assert [(r.first_offset, r.last_offset) for r in next_batch.ranges] == [(10, 29)]


def test_a_wrong_lock_token_changes_nothing() -> None:
    state = fresh(UNORDERED, 4)
    _, got = decide.acquire(state, UNORDERED, "m", 4, now_ms=0)
    assert got is not None
    ops, results = decide.acknowledge(state, UNORDERED, "m", [ack((0, 3), acquisition=99)], 1)
    assert ops == [] and results[0].error == "INVALID_RECORD_STATE"
    assert state.state_of(0) == ACQUIRED
    # without a token, another member's records are refused too
    ops, results = decide.acknowledge(state, UNORDERED, "other", [ack((0, 3))], 1)
    assert ops == [] and results[0].error == "INVALID_RECORD_STATE"
    ops, results = decide.acknowledge(state, UNORDERED, "m", [ack((0, 3))], 1)
    assert results[0].error is None and state.start == 4


def test_expired_lock_redelivers_then_dead_letters_after_max_attempts() -> None:
    config = ShareGroupConfig(max_delivery_attempts=3, lock_duration_ms=1_000)
    state = fresh(config, 1)
    now = 0
    for attempt in range(1, 4):
        _, got = decide.acquire(state, config, "m", 10, now)
        assert got is not None and got.ranges[0].delivery_count == attempt
        assert decide.expire(state, config, now + 999) == []
        now += 1_000
        decide.expire(state, config, now)
    assert state.state_of(0) == DEAD
    ((sequence, entries),) = state.dead_letters.items()
    assert entries[0].delivery_count == 3 and "lock expired" in entries[0].reason
    assert decide.acquire(state, config, "m", 10, now)[1] is None
    decide.dead_lettered(state, sequence)
    assert state.start == 1 and state.dead_letters == {}
    ok(state)


def test_reject_dead_letters_with_its_reason() -> None:
    state = fresh(UNORDERED, 3)
    _, got = decide.acquire(state, UNORDERED, "m", 3, 0)
    assert got is not None
    decide.acknowledge(state, UNORDERED, "m", [ack((1, 1), "reject", reason="bad json")], 1)
    assert state.state_of(1) == DEAD
    [entry] = next(iter(state.dead_letters.values()))
    assert (entry.offset, entry.delivery_count, entry.reason) == (1, 1, "bad json")
    decide.acknowledge(state, UNORDERED, "m", [ack((0, 0)), ack((2, 2))], 2)
    assert state.start == 1  # waits for the dead-letter write
    decide.dead_lettered(state, 0)
    assert state.start == 3 and state.state_of(1) == ACKED  # below start: settled


def test_release_with_delay_and_group_backoff() -> None:
    config = ShareGroupConfig(retry_backoff_ms=100, retry_backoff_max_ms=250)
    state = fresh(config, 2)
    _, got = decide.acquire(state, config, "m", 2, 0)
    decide.acknowledge(
        state, config, "m", [ack((0, 0), "release", delay_ms=5_000), ack((1, 1), "release")], 10
    )
    assert state.not_before == {0: 5_010, 1: 110}
    assert decide.acquire(state, config, "m", 2, 109)[1] is None
    _, got = decide.acquire(state, config, "m", 2, 110)
    assert got is not None and [(r.first_offset, r.last_offset) for r in got.ranges] == [(1, 1)]
    decide.acknowledge(state, config, "m", [ack((1, 1), "release")], 200)
    assert state.not_before[1] == 200 + 200  # 100 * 2^(2-1)
    assert decide.backoff_ms(config, 5) == 250  # capped
    assert state.pop_wakes(201) and not state.pop_wakes(201)
    assert state.next_timer_ms() == 400


def test_not_before_header_delays_delivery() -> None:
    state = ShareState("unordered", 0)
    state.extend(Span(0, 2, not_before=((1, 500),)))
    _, got = decide.acquire(state, UNORDERED, "m", 10, 0)
    assert got is not None and [(r.first_offset, r.last_offset) for r in got.ranges] == [
        (0, 0),
        (2, 2),
    ]
    _, later = decide.acquire(state, UNORDERED, "m", 10, 500)
    assert later is not None and later.ranges[0].first_offset == 1


def test_gaps_are_settled_and_never_delivered() -> None:
    state = ShareState("unordered", 0)
    state.extend(Span(0, 4, offsets=[1, 3]))
    _, got = decide.acquire(state, UNORDERED, "m", 10, 0)
    assert got is not None and [(r.first_offset, r.last_offset) for r in got.ranges] == [
        (1, 1),
        (3, 3),
    ]
    assert state.start == 1
    decide.acknowledge(state, UNORDERED, "m", [ack((1, 3))], 1)  # the gap between passes
    assert state.start == 5


def test_key_ordered_one_member_per_key_in_offset_order() -> None:
    # offsets: 0 a, 1 b, 2 a, 3 b, 4 c
    state = fresh(KEYED, 5, [b"a", b"b", b"a", b"b", b"c"])
    _, first = decide.acquire(state, KEYED, "m1", 1, 0)
    _, second = decide.acquire(state, KEYED, "m2", 1, 0)
    _, third = decide.acquire(state, KEYED, "m3", 10, 0)
    assert first is not None and second is not None and third is not None
    assert [r.first_offset for r in first.ranges] == [0]  # a's head
    assert [r.first_offset for r in second.ranges] == [1]  # b's head
    assert [r.first_offset for r in third.ranges] == [4]  # a, b held: only c
    # m1 fails offset 0: a goes back; 2 stays behind it
    decide.acknowledge(state, KEYED, "m1", [ack((0, 0), "release")], 1)
    _, again = decide.acquire(state, KEYED, "m3", 10, 2)
    assert again is not None and [(r.first_offset, r.last_offset) for r in again.ranges] == [
        (0, 0),
        (2, 2),
    ]
    assert again.ranges[0].delivery_count == 2
    # accepting 2 before 0 breaks a's order: refused, nothing changes
    _, results = decide.acknowledge(state, KEYED, "m3", [ack((2, 2))], 3)
    assert results[0].error == "INVALID_RECORD_STATE" and "key order" in (results[0].message or "")
    # both in one request are applied in offset order
    _, results = decide.acknowledge(state, KEYED, "m3", [ack((2, 2)), ack((0, 0))], 3)
    assert [r.error for r in results] == [None, None]
    ok(state)


def test_key_ordered_failure_sends_the_keys_later_records_back_uncounted() -> None:
    state = fresh(KEYED, 3, [b"a", b"a", b"a"])
    _, got = decide.acquire(state, KEYED, "m", 10, 0)
    assert got is not None and got.count == 3
    decide.acknowledge(state, KEYED, "m", [ack((0, 0))], 1)
    decide.acknowledge(state, KEYED, "m", [ack((1, 1), "release")], 2)
    assert state.state_of(2) == AVAILABLE and state.count_of(2) == 0  # not an attempt
    assert state.count_of(1) == 1
    _, again = decide.acquire(state, KEYED, "n", 10, 3)
    assert again is not None
    assert [(r.first_offset, r.last_offset, r.delivery_count) for r in again.ranges] == [
        (1, 1, 2),
        (2, 2, 1),
    ]
    ok(state)


def test_key_ordered_reject_does_not_hold_the_key_back() -> None:
    state = fresh(KEYED, 2, [b"a", b"a"])
    decide.acquire(state, KEYED, "m", 10, 0)
    _, results = decide.acknowledge(state, KEYED, "m", [ack((0, 0), "reject"), ack((1, 1))], 1)
    assert [r.error for r in results] == [None, None]
    assert state.state_of(0) == DEAD and state.state_of(1) == ACKED
    decide.dead_lettered(state, 0)
    assert state.start == 2 and state.state_of(0) == ACKED


def test_keyless_records_are_independent_in_key_ordered_mode() -> None:
    state = ShareState("key_ordered", 0)
    state.extend(Span(0, 2, keys=[key_id(None, o) for o in range(3)]))
    _, one = decide.acquire(state, KEYED, "m1", 1, 0)
    _, two = decide.acquire(state, KEYED, "m2", 1, 0)
    assert one is not None and two is not None
    assert (one.ranges[0].first_offset, two.ranges[0].first_offset) == (0, 1)


def test_window_room_bounds_reading() -> None:
    config = ShareGroupConfig(window_records_max=100)
    state = fresh(config, 60)
    assert decide.window_room(state, config) == 40
    decide.acquire(state, config, "m", 100, 0)
    assert decide.window_room(state, config) == 40  # in flight still counts
    decide.acknowledge(state, config, "m", [ack((0, 59))], 1)
    assert decide.window_room(state, config) == 100


def test_skip_settles_what_retention_removed() -> None:
    state = fresh(UNORDERED, 10)
    decide.acquire(state, UNORDERED, "m", 3, 0)
    decide.skip_to(state, 5)
    assert state.start == 5
    _, got = decide.acquire(state, UNORDERED, "m", 10, 1)
    assert got is not None and got.ranges[0].first_offset == 5
    ok(state)


def test_retention_keeps_a_dead_letter_batch_one_record_per_sequence_number() -> None:
    """Retention removed a record waiting to be dead-lettered: its batch keeps the entry
    (written with a null value, deadletter.py) so the batch still spans the sequence
    numbers it was given; dropping it left a gap before the next batch, which the
    dead-letter topic refuses for good (OUT_OF_ORDER_SEQUENCE), or an empty batch."""
    state = fresh(UNORDERED, 10)
    _, got = decide.acquire(state, UNORDERED, "m", 3, 0)
    assert got is not None
    decide.acknowledge(state, UNORDERED, "m", [ack((0, 1), "reject", reason="bad")], 1)
    decide.skip_to(state, 1)
    decide.acknowledge(state, UNORDERED, "m", [ack((2, 2), "reject", reason="bad")], 2)
    assert {s: [e.offset for e in es] for s, es in state.dead_letters.items()} == {
        0: [0, 1],
        2: [2],
    }
    ok(state)
    decide.skip_to(state, 3)  # every record of both batches removed
    assert [len(es) for es in state.dead_letters.values()] == [2, 1]
    ok(state)
    decide.dead_lettered(state, 0)
    decide.dead_lettered(state, 2)
    assert state.start == 3 and state.dead_letters == {}
    ok(state)


@pytest.mark.parametrize("bad", [(-1, 2), (5, 3)])
def test_bad_ranges_are_invalid_requests(bad: tuple[int, int]) -> None:
    state = fresh(UNORDERED, 10)
    _, results = decide.acknowledge(state, UNORDERED, "m", [ack(bad)], 0)
    assert results[0].error == "INVALID_REQUEST"


def test_settled_and_undelivered_offsets_are_refused() -> None:
    state = fresh(UNORDERED, 4)
    decide.acquire(state, UNORDERED, "m", 2, 0)
    decide.acknowledge(state, UNORDERED, "m", [ack((0, 1))], 1)
    _, results = decide.acknowledge(state, UNORDERED, "m", [ack((0, 1)), ack((9, 9))], 2)
    assert [r.error for r in results] == ["INVALID_RECORD_STATE", "INVALID_RECORD_STATE"]
    assert ARCHIVED != ACKED
