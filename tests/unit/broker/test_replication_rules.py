"""Replication decisions of broker/rules.py: truncation point, ISR changes, idempotence."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from conveyor.broker.rules import (
    PRODUCER_BATCHES_KEPT,
    SEQUENCE_MAX,
    ProducerBatch,
    ProducerEntry,
    dedup_decision,
    isr_change_for_follower,
    next_sequence,
    record_producer_batch,
    truncation_offset,
)
from conveyor.protocol.errors import ErrorCode


@pytest.mark.parametrize(
    ("leader_end", "follower_end", "log_end", "expected", "why"),
    [
        (100, 120, 120, 100, "follower wrote a suffix in an epoch the leader never saw"),
        (120, 100, 100, 100, "follower is behind: nothing to cut"),
        (100, 100, 130, 100, "follower has later epochs the leader does not know: cut them"),
        (0, 50, 50, 0, "the leader has nothing of that epoch"),
    ],
)
def test_truncation_offset(
    leader_end: int, follower_end: int, log_end: int, expected: int, why: str
) -> None:
    got = truncation_offset(
        leader_end_offset_for_epoch=leader_end,
        follower_end_offset_for_epoch=follower_end,
        follower_log_end=log_end,
    )
    assert got == expected, why


@given(st.integers(0, 10**9), st.integers(0, 10**9), st.integers(0, 10**9))
def test_truncation_never_passes_either_side(leader: int, follower: int, end: int) -> None:
    got = truncation_offset(
        leader_end_offset_for_epoch=leader,
        follower_end_offset_for_epoch=follower,
        follower_log_end=end,
    )
    assert got <= leader and got <= follower and got <= end


LAG = 10_000


@pytest.mark.parametrize(
    ("in_isr", "f_end", "l_end", "hw", "caught_ms", "now_ms", "expected", "why"),
    [
        (True, 100, 100, 90, 0, 50_000, "keep", "caught up now"),
        (True, 90, 100, 90, 45_000, 50_000, "keep", "behind, but caught up within the lag"),
        (True, 90, 100, 90, 39_999, 50_000, "shrink", "not caught up for longer than the lag"),
        (False, 100, 100, 90, 0, 50_000, "expand", "reached the leader's log end"),
        (False, 95, 100, 90, 0, 50_000, "expand", "reached the high watermark"),
        (False, 80, 100, 90, 0, 50_000, "keep", "still below the high watermark"),
        (False, 0, 10, 0, 0, 50_000, "keep", "an empty replica does not count as at HW 0"),
    ],
)
def test_isr_change(  # noqa: PLR0917 -- one argument per table column
    in_isr: bool,
    f_end: int,
    l_end: int,
    hw: int,
    caught_ms: int,
    now_ms: int,
    expected: str,
    why: str,
) -> None:
    got = isr_change_for_follower(
        in_isr=in_isr,
        follower_log_end=f_end,
        leader_log_end=l_end,
        high_watermark=hw,
        last_caught_up_ms=caught_ms,
        now_ms=now_ms,
        lag_time_max_ms=LAG,
    )
    assert got == expected, why


def _entry(epoch: int, *ranges: tuple[int, int]) -> ProducerEntry:
    batches = tuple(ProducerBatch(a, b, a * 10, b * 10) for a, b in ranges)
    return ProducerEntry(epoch, batches)


FULL = _entry(0, (0, 4), (5, 9), (10, 14), (15, 19), (20, 24))  # the dedup window, full


@pytest.mark.parametrize(
    ("entry", "epoch", "first", "last", "action", "error", "why"),
    [
        (None, 0, 0, 4, "append", None, "new producer"),
        (None, 0, 7, 9, "append", None, "unknown id (state expired): accepted as is"),
        (_entry(0, (0, 4)), 0, 5, 9, "append", None, "next in sequence"),
        (_entry(0, (0, 4), (5, 9)), 0, 0, 4, "duplicate", None, "retry of a kept batch"),
        (_entry(0, (0, 4)), 0, 6, 9, "reject", ErrorCode.OUT_OF_ORDER_SEQUENCE, "a gap"),
        (_entry(1, (0, 4)), 0, 5, 9, "reject", ErrorCode.PRODUCER_FENCED, "older epoch"),
        (_entry(0, (0, 4)), 1, 0, 3, "append", None, "new epoch restarts at 0"),
        (_entry(0, (0, 4)), 1, 5, 9, "reject", ErrorCode.OUT_OF_ORDER_SEQUENCE, "new epoch, not 0"),
        (
            _entry(0, (5, 5), (6, 6), (7, 7), (8, 8), (9, 9)),
            0,
            1,
            1,
            "reject",
            ErrorCode.DUPLICATE_SEQUENCE,
            "older than the window",
        ),
        (_entry(0, (SEQUENCE_MAX - 1, SEQUENCE_MAX)), 0, 0, 3, "append", None, "wraps to 0"),
        # five batches in flight (the producer's most): 5-9 refused, 10-14 arrive first
        (_entry(0, (0, 4)), 0, 10, 14, "reject", ErrorCode.OUT_OF_ORDER_SEQUENCE, "ahead of 5"),
        (_entry(0, (0, 4)), 0, 20, 24, "reject", ErrorCode.OUT_OF_ORDER_SEQUENCE, "4th ahead"),
        (FULL, 0, 0, 4, "duplicate", None, "the oldest of 5 in flight, resent: still kept"),
        (FULL, 0, 20, 24, "duplicate", None, "the newest, resent"),
        (FULL, 0, 25, 29, "append", None, "the next after a full window"),
        (FULL, 0, 30, 34, "reject", ErrorCode.OUT_OF_ORDER_SEQUENCE, "gap above the window"),
    ],
)
def test_dedup_decision(  # noqa: PLR0917 -- one argument per table column
    entry: ProducerEntry | None,
    epoch: int,
    first: int,
    last: int,
    action: str,
    error: ErrorCode | None,
    why: str,
) -> None:
    got = dedup_decision(entry, producer_epoch=epoch, first_sequence=first, last_sequence=last)
    assert (got.action, got.error) == (action, error), why
    if action == "duplicate":
        assert got.batch is not None and got.batch.first_sequence == first


@given(st.lists(st.integers(1, 20), min_size=1, max_size=40), st.data())
def test_retries_never_duplicate_or_reorder(sizes: list[int], data: st.DataObject) -> None:
    """A producer sends batches in order, retrying any already-sent batch at random: the
    log (the appended batches) is exactly the batches in order, each once, and every retry
    still in the window gets its original offsets back."""
    entry: ProducerEntry | None = None
    sent: list[tuple[int, int]] = []
    appended: list[ProducerBatch] = []
    sequence = 0
    for size in sizes:
        batch_range = (sequence, sequence + size - 1)
        sequence += size
        sent.append(batch_range)
        attempts = [batch_range, *data.draw(st.lists(st.sampled_from(sent), max_size=3))]
        for first, last in attempts:
            decision = dedup_decision(
                entry, producer_epoch=0, first_sequence=first, last_sequence=last
            )
            if decision.action == "append":
                offset = appended[-1].last_offset + 1 if appended else 0
                batch = ProducerBatch(first, last, offset, offset + last - first)
                appended.append(batch)
                entry = record_producer_batch(entry, producer_epoch=0, batch=batch)
            elif decision.action == "duplicate":
                assert decision.batch in appended
            else:
                assert decision.error is ErrorCode.DUPLICATE_SEQUENCE
    assert [(b.first_sequence, b.last_sequence) for b in appended] == sent
    assert entry is not None and len(entry.batches) <= PRODUCER_BATCHES_KEPT


def test_next_sequence_wraps() -> None:
    assert next_sequence(SEQUENCE_MAX) == 0
    assert next_sequence(5) == 6
