"""How far ahead a queue member fetches (client/queue_prefetch.py)."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from conveyor.client.queue_prefetch import (
    PREFETCH_DEPTH_MAX,
    PREFETCH_RECORDS_MAX,
    PrefetchPacing,
)


def paced(rtt_s: float, record_s: float, records: int = 10) -> PrefetchPacing:
    """A member that got ``records`` and worked ``record_s`` on each before asking again."""
    pacing = PrefetchPacing()
    pacing.round_trip(rtt_s)
    pacing.handed_out(records, 100.0)
    pacing.receive_called(100.0 + records * record_s)
    return pacing


def test_one_batch_until_both_rates_are_known() -> None:
    assert PrefetchPacing().target(10) == 10
    pacing = PrefetchPacing()
    pacing.round_trip(0.2)
    assert pacing.target(10) == 10


def test_a_round_trip_of_work_is_kept_ahead() -> None:
    assert paced(rtt_s=0.05, record_s=0.005).target(10) == 20  # 10 more cover 50 ms


def test_at_most_a_few_batches_ahead() -> None:
    assert paced(rtt_s=0.2, record_s=0.005).target(10) == PREFETCH_DEPTH_MAX * 10
    assert paced(rtt_s=0.2, record_s=0.0).target(10) == PREFETCH_DEPTH_MAX * 10


def test_large_batches_are_not_fetched_further_ahead() -> None:
    assert paced(rtt_s=0.2, record_s=0.0, records=2000).target(2000) == 2000
    assert paced(rtt_s=0.2, record_s=0.0, records=400).target(400) == PREFETCH_RECORDS_MAX


def test_slow_work_keeps_one_batch_and_a_record() -> None:
    assert paced(rtt_s=0.002, record_s=1.0).target(10) == 11


def test_an_empty_receive_is_no_sample() -> None:
    pacing = paced(rtt_s=0.05, record_s=0.005)
    pacing.handed_out(0, 200.0)
    pacing.receive_called(900.0)  # idle: not work
    assert pacing.target(10) == 20


@given(
    st.lists(st.floats(0, 5), min_size=1, max_size=20),
    st.lists(st.tuples(st.integers(0, 500), st.floats(0, 10)), min_size=1, max_size=20),
    st.integers(1, 1000),
)
def test_the_target_stays_between_one_batch_and_the_cap(
    trips: list[float], work: list[tuple[int, float]], max_records: int
) -> None:
    pacing = PrefetchPacing()
    now = 0.0
    for rtt_s, (records, spent_s) in zip(trips, work, strict=False):
        pacing.round_trip(rtt_s)
        pacing.handed_out(records, now)
        now += spent_s
        pacing.receive_called(now)
    target = pacing.target(max_records)
    assert max_records <= target <= PREFETCH_DEPTH_MAX * max_records
    assert target <= max(max_records, PREFETCH_RECORDS_MAX)
