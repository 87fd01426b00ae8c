"""The client benchmarks' pure parts: settings checks, partition assignment, pacing,
percentiles and how worker reports combine into rates."""

from __future__ import annotations

import pytest

from conveyor.bench.workload import (
    ClientBenchConfig,
    WorkerReport,
    assign_partitions,
    combine,
    due_count,
    percentile,
    split_evenly,
    summarize_latencies,
)


def test_split_evenly_gives_the_first_workers_the_remainder() -> None:
    assert split_evenly(10, 4) == [3, 3, 2, 2]
    assert split_evenly(3, 5) == [1, 1, 1, 0, 0]
    assert sum(split_evenly(1_000_001, 7)) == 1_000_001


def test_assign_partitions_in_contiguous_slices() -> None:
    assert assign_partitions(16, 4) == [
        [0, 1, 2, 3],
        [4, 5, 6, 7],
        [8, 9, 10, 11],
        [12, 13, 14, 15],
    ]
    assert assign_partitions(2, 3) == [[0], [1], []]


def test_due_count_paces_at_the_rate() -> None:
    assert due_count(5_000, 0.0) == 1
    assert due_count(5_000, 1.0) == 5_001
    assert due_count(5_000, -0.1) == 0


def test_percentile_is_nearest_rank() -> None:
    values = list(range(1, 101))
    assert percentile(values, 0.5) == 50
    assert percentile(values, 0.99) == 99
    assert percentile(values, 1.0) == 100
    assert percentile([7], 0.5) == 7
    with pytest.raises(ValueError, match="no values"):
        percentile([], 0.5)


def test_summarize_latencies_in_microseconds() -> None:
    summary = summarize_latencies([3_000, 1_000, 2_000, 4_000])
    assert summary is not None
    assert (summary.count, summary.p50_us, summary.max_us, summary.mean_us) == (4, 2.0, 4.0, 2.5)
    assert summarize_latencies([]) is None


def test_combine_spans_first_start_to_last_finish() -> None:
    a = WorkerReport(
        "producer", 0, messages=100, payload_bytes=10_000, started_s=10.0, finished_s=11.0
    )
    b = WorkerReport(
        "producer", 1, messages=300, payload_bytes=30_000, started_s=10.5, finished_s=12.0, errors=2
    )
    total = combine([a, b])
    assert total is not None
    assert (total.messages, total.seconds, total.errors) == (400, 2.0, 2)
    assert total.msg_per_s == 200.0
    assert total.mb_per_s == pytest.approx(0.02)
    assert combine([]) is None


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"count": 0}, "count must be positive"),
        ({"keys": -1}, "must be >= 0"),
        ({"mode": "e2e", "rate": None}, "needs a rate"),
        ({"mode": "e2e", "rate": 10, "message_bytes": 4}, "at least 8 bytes"),
        ({"duration_s": 0.0}, "duration_s must be positive"),
        ({"mode": "bogus"}, "mode must be one of"),
    ],
)
def test_bad_settings_are_refused(changes: dict[str, object], message: str) -> None:
    settings: dict[str, object] = {"mode": "produce", **changes}
    with pytest.raises(ValueError, match=message):
        ClientBenchConfig(**settings)  # type: ignore[arg-type]


def test_planned_count() -> None:
    assert ClientBenchConfig("produce", count=5).planned_count() == 5
    assert ClientBenchConfig("e2e", rate=100, duration_s=2.5).planned_count() == 250
    assert ClientBenchConfig("produce", duration_s=1.0).planned_count() is None
