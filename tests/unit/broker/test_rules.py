from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from conveyor.broker.rules import (
    high_watermark,
    hosting_changed,
    metadata_refresh_due,
    parse_acks,
)
from conveyor.protocol.errors import InvalidRequestError
from conveyor.protocol.messages import BrokerId, Epoch, PartitionReport


@pytest.mark.parametrize(("text", "acks"), [("0", "0"), ("1", "1"), ("all", "all"), ("-1", "all")])
def test_parse_acks(text: str, acks: str) -> None:
    assert parse_acks(text) == acks


@pytest.mark.parametrize("text", ["", "2", "ALL", "one"])
def test_parse_acks_rejects(text: str) -> None:
    with pytest.raises(InvalidRequestError):
        parse_acks(text)


B1, B2, B3 = BrokerId(1), BrokerId(2), BrokerId(3)


@pytest.mark.parametrize(
    ("durable", "followers", "isr", "previous", "end", "expected", "why"),
    [
        (10, {}, [B1], 0, 10, 10, "sole replica: its durable offset"),
        (10, {B2: 7}, [B1, B2], 0, 12, 7, "the slowest ISR member bounds it"),
        (10, {B2: 7, B3: 2}, [B1, B2], 0, 12, 7, "a non-ISR follower does not count"),
        (10, {}, [B1, B2], 0, 12, 0, "an ISR member that never reported holds nothing"),
        (4, {}, [B1], 6, 10, 6, "never backwards while leading"),
        (10, {}, [B1], 12, 8, 8, "never past the log end"),
        (10, {B2: 15}, [B1, B2], 0, 12, 10, "a follower ahead does not lift it past the leader"),
    ],
)
def test_high_watermark(  # noqa: PLR0917 -- one argument per table column
    durable: int,
    followers: dict[BrokerId, int],
    isr: list[BrokerId],
    previous: int,
    end: int,
    expected: int,
    why: str,
) -> None:
    got = high_watermark(
        leader=B1,
        leader_durable_offset=durable,
        follower_durable_offsets=followers,
        isr=isr,
        previous=previous,
        log_end_offset=end,
    )
    assert got == expected, why


@given(
    durable=st.integers(0, 1000),
    followers=st.dictionaries(st.sampled_from([B2, B3]), st.integers(0, 1000)),
    previous=st.integers(0, 1000),
    end=st.integers(0, 1000),
)
def test_high_watermark_bounds(
    durable: int, followers: dict[BrokerId, int], previous: int, end: int
) -> None:
    durable = min(durable, end)
    got = high_watermark(
        leader=B1,
        leader_durable_offset=durable,
        follower_durable_offsets=followers,
        isr=[B1, B2, B3],
        previous=previous,
        log_end_offset=end,
    )
    assert got <= end
    assert got >= min(previous, end)
    assert got <= max(previous, durable)


@pytest.mark.parametrize(
    ("fetched", "now", "forced", "expected", "why"),
    [
        (None, 0, False, True, "never fetched"),
        (1000, 1500, True, False, "forced, but within the minimum interval"),
        (1000, 2000, True, True, "forced after the minimum interval"),
        (1000, 5000, False, False, "not forced and still fresh"),
        (1000, 31_000, False, True, "older than the maximum age"),
    ],
)
def test_metadata_refresh_due(
    fetched: int | None, now: int, forced: bool, expected: bool, why: str
) -> None:
    got = metadata_refresh_due(fetched, now, forced=forced, min_interval_ms=1000, max_age_ms=30_000)
    assert got is expected, why


def _report(partition: int, epoch: int, *, end: int = 0, failed: bool = False) -> PartitionReport:
    return PartitionReport(
        topic="t",
        partition=partition,
        leader_epoch=Epoch(epoch),
        log_start_offset=0,
        log_end_offset=end,
        high_watermark=end,
        log_failed=failed,
    )


@pytest.mark.parametrize(
    ("sent", "now", "changed"),
    [
        ([], [], False),
        ([], [_report(0, 0)], True),  # a new topic's replica opened
        ([_report(0, 0)], [], True),  # deleted
        ([_report(0, 0)], [_report(0, 1)], True),  # took over (or followed) at a new epoch
        ([_report(0, 0)], [_report(0, 0, failed=True)], True),  # its log failed
        ([_report(0, 0)], [_report(0, 0, end=10)], False),  # writes: the next beat says so
        ([_report(0, 0), _report(1, 0)], [_report(1, 0), _report(0, 0)], False),
    ],
)
def test_hosting_changed(
    sent: list[PartitionReport], now: list[PartitionReport], changed: bool
) -> None:
    assert hosting_changed(sent, now) is changed
