"""Pure rules of the broker: limits, acks, the high watermark, metadata ages, replication.

No I/O, no clocks, no randomness here: callers pass ``now_ms`` and random fractions in, so
every rule is a table test. The shell (``service.py``, ``heartbeat.py``) applies them.
Rules shared with the coordinator or the clients (topic names, the min-ISR default, backoff)
live in ``conveyor.protocol`` (``topics.py``, ``backoff.py``).
"""

from __future__ import annotations

from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass
from typing import Final, Literal

from conveyor.protocol.errors import ErrorCode, InvalidRequestError
from conveyor.protocol.messages import Acks, BrokerId, PartitionReport
from conveyor.protocol.replica import ProducerBatch, ProducerEntry

FETCH_MAX_BYTES: Final = 16 * 1024 * 1024  # one fetch answers at most this (plus one batch)
FETCH_MAX_WAIT_MS: Final = 30_000  # a long-poll holds a connection at most this long
PRODUCE_MAX_TIMEOUT_MS: Final = 120_000  # acks=all waits at most this long
PRODUCER_BATCHES_KEPT: Final = 5  # dedup window per producer id, as Kafka's
SEQUENCE_MAX: Final = 2**31 - 1  # sequences wrap to 0 after this (int32, as Kafka's)

ACKS_ALIASES: Final[Mapping[str, Acks]] = {"0": "0", "1": "1", "all": "all", "-1": "all"}


def parse_acks(text: str) -> Acks:
    """``0``, ``1``, ``all`` (or Kafka's ``-1`` for all)."""
    acks = ACKS_ALIASES.get(text)
    if acks is None:
        raise InvalidRequestError(f"acks must be 0, 1 or all, not {text[:20]!r}")
    return acks


def clamp(value: int, low: int, high: int) -> int:
    return max(low, min(value, high))


def high_watermark(
    *,
    leader: BrokerId,
    leader_durable_offset: int,
    follower_durable_offsets: Mapping[BrokerId, int],
    isr: Collection[BrokerId],
    previous: int,
    log_end_offset: int,
) -> int:
    """The offset below which every ISR member holds the data durably.

    ``min`` over the leader's durable offset and the durable offset each other ISR member
    last reported; an ISR member that has not reported yet counts as 0 (it holds nothing
    we know of). Never moves backwards while this broker leads (consumers may already have
    read below it), and never passes the leader's log end offset.

    >>> high_watermark(leader=1, leader_durable_offset=10, follower_durable_offsets={2: 7},
    ...                isr=[1, 2], previous=5, log_end_offset=12)
    7
    """
    candidate = leader_durable_offset
    for member in isr:
        if member != leader:
            candidate = min(candidate, follower_durable_offsets.get(member, 0))
    return min(max(previous, candidate), log_end_offset)


def low_watermark(
    *,
    leader: BrokerId,
    leader_log_start: int,
    follower_log_starts: Mapping[BrokerId, int],
    isr: Collection[BrokerId],
) -> int:
    """The lowest log start offset over the ISR (Kafka's ``lowWatermarkIfLeader``, over
    the in-sync replicas where Kafka takes every live one): a DeleteRecords is done once
    it reaches the offset asked for. A member that has not reported its start counts as
    -1 (the records may still be there).

    >>> low_watermark(leader=1, leader_log_start=50, follower_log_starts={2: 50, 3: 20},
    ...               isr=[1, 2])
    50
    >>> low_watermark(leader=1, leader_log_start=50, follower_log_starts={}, isr=[1, 2])
    -1
    """
    low = leader_log_start
    for member in isr:
        if member != leader:
            low = min(low, follower_log_starts.get(member, -1))
    return low


def delete_records_offset(asked: int, *, high_watermark: int) -> int:
    """The offset a DeleteRecords deletes below: -1 is the high watermark (Kafka's
    convention); any offset from 0 to the high watermark (records consumers may not see
    yet cannot be deleted); one below the log start changes nothing.

    >>> delete_records_offset(-1, high_watermark=70), delete_records_offset(30, high_watermark=70)
    (70, 30)
    """
    offset = high_watermark if asked == -1 else asked
    if not 0 <= offset <= high_watermark:
        raise InvalidRequestError(
            f"cannot delete records below offset {asked}: it must be between 0 and the high "
            f"watermark {high_watermark} (or -1 for the high watermark)",
            code=ErrorCode.OFFSET_OUT_OF_RANGE,
            offset=asked,
            high_watermark=high_watermark,
        )
    return offset


def coordinator_epoch_after(known: int, received: int) -> int | None:
    """The coordinator epoch to remember after a command at ``received``, or None to refuse
    the command: it comes from a coordinator deposed by one at ``known`` (issue 20). Epoch
    0 is a single coordinator on SQLite, which no other can depose: always accepted,
    never remembered.

    >>> coordinator_epoch_after(0, 7), coordinator_epoch_after(7, 9), coordinator_epoch_after(9, 7)
    (7, 9, None)
    >>> coordinator_epoch_after(9, 0)
    9
    """
    if received == 0:
        return known
    if received < known:
        return None
    return received


def metadata_refresh_due(
    fetched_ms: int | None, now_ms: int, *, forced: bool, min_interval_ms: int, max_age_ms: int
) -> bool:
    """Whether to ask the coordinator again about a topic.

    Never within ``min_interval_ms`` of the last answer (a burst of requests for an unknown
    topic costs the coordinator one lookup a second); after that when forced (the caller
    learnt the entry is wrong) or when older than ``max_age_ms``."""
    if fetched_ms is None:
        return True
    age_ms = now_ms - fetched_ms
    if age_ms < min_interval_ms:
        return False
    return forced or age_ms >= max_age_ms


def hosting_changed(sent: Sequence[PartitionReport], now: Sequence[PartitionReport]) -> bool:
    """Whether the heartbeat just sent (``sent``) no longer says what this broker hosts
    (``now``, after applying the answer): a replica opened or deleted, at another leader
    epoch, or failed. The broker then reports again at once instead of a heartbeat interval
    later: the coordinator's reports are what every broker's Kafka Metadata answers from (a
    partition's leader is advertised once a replica reported hosting it), so a new topic's
    leaders would otherwise stay LEADER_NOT_AVAILABLE for an interval after they serve.
    Offsets do not count: they move with every write and the next heartbeat carries them."""

    def hosting(reports: Sequence[PartitionReport]) -> set[tuple[str, int, int, bool]]:
        return {(r.topic, r.partition, r.leader_epoch, r.log_failed) for r in reports}

    return hosting(sent) != hosting(now)


def check_offset(offset: int) -> None:
    if offset < 0:
        raise InvalidRequestError(f"offset must be >= 0, not {offset}", offset=offset)


# ---- replication (issue 4) -----------------------------------------------------------------


def truncation_offset(
    *, leader_end_offset_for_epoch: int, follower_end_offset_for_epoch: int, follower_log_end: int
) -> int:
    """Where a follower of a new leader cuts its log (KIP-101/KIP-279).

    The follower asks the leader for the end offset of the follower's latest epoch; the
    leader answers with the largest epoch <= it and where that epoch ends in the leader's
    log. Everything the follower has from that point on is a history the leader does not
    share, so it goes. ``follower_end_offset_for_epoch`` is where the same (answered) epoch
    ends in the follower's own log: both sides agree up to the smaller of the two.

    >>> truncation_offset(leader_end_offset_for_epoch=100, follower_end_offset_for_epoch=120,
    ...                   follower_log_end=120)
    100
    """
    return min(leader_end_offset_for_epoch, follower_end_offset_for_epoch, follower_log_end)


IsrChange = Literal["shrink", "expand", "keep"]


def isr_change_for_follower(
    *,
    in_isr: bool,
    follower_log_end: int,
    leader_log_end: int,
    high_watermark: int,
    last_caught_up_ms: int,
    now_ms: int,
    lag_time_max_ms: int,
) -> IsrChange:
    """Kafka's rule: a follower leaves the ISR when it has not been caught up to the
    leader's log end for ``lag_time_max_ms`` (whatever its distance in messages: a slow
    but steady follower that keeps reaching the end stays); it rejoins once it reaches the
    leader's log end or at least the high watermark (so a busy partition can still admit
    it)."""
    caught_up = follower_log_end >= leader_log_end
    if in_isr:
        if caught_up or now_ms - last_caught_up_ms <= lag_time_max_ms:
            return "keep"
        return "shrink"
    if caught_up or (follower_log_end >= high_watermark > 0):
        return "expand"
    return "keep"


@dataclass(frozen=True, slots=True)
class Dedup:
    """What to do with an idempotent batch: ``append`` it, answer ``duplicate`` with the
    original offsets (``batch``), or ``reject`` with ``error``."""

    action: Literal["append", "duplicate", "reject"]
    batch: ProducerBatch | None = None
    error: ErrorCode | None = None


def next_sequence(sequence: int) -> int:
    return 0 if sequence == SEQUENCE_MAX else sequence + 1


def dedup_decision(
    entry: ProducerEntry | None, *, producer_epoch: int, first_sequence: int, last_sequence: int
) -> Dedup:
    """Kafka's idempotence check for a batch with a producer id.

    - an older epoch than the entry's: PRODUCER_FENCED (a newer instance took the id);
    - a newer epoch: sequences restart, so the batch must start at 0;
    - same epoch: a batch already in the window is a retry (answer its offsets); the next
      sequence after the last batch appends; anything else is a gap (OUT_OF_ORDER_SEQUENCE)
      or older than the window (DUPLICATE_SEQUENCE: written, offsets no longer known).
    - an unknown producer id (new, or its batches expired by retention) appends as is.
    """
    if entry is None:
        return Dedup("append")
    if producer_epoch < entry.producer_epoch:
        return Dedup("reject", error=ErrorCode.PRODUCER_FENCED)
    if first_sequence < 0:  # a transaction marker (issue 21): no sequence of its own
        return Dedup("append")
    if producer_epoch > entry.producer_epoch:
        if first_sequence == 0:
            return Dedup("append")
        return Dedup("reject", error=ErrorCode.OUT_OF_ORDER_SEQUENCE)
    return _same_epoch_decision(entry.batches, first_sequence, last_sequence)


def _same_epoch_decision(
    batches: tuple[ProducerBatch, ...], first_sequence: int, last_sequence: int
) -> Dedup:
    for batch in batches:
        if (batch.first_sequence, batch.last_sequence) == (first_sequence, last_sequence):
            return Dedup("duplicate", batch=batch)
    if not batches or first_sequence == next_sequence(batches[-1].last_sequence):
        return Dedup("append")
    if len(batches) == PRODUCER_BATCHES_KEPT and first_sequence < batches[0].first_sequence:
        return Dedup("reject", error=ErrorCode.DUPLICATE_SEQUENCE)
    return Dedup("reject", error=ErrorCode.OUT_OF_ORDER_SEQUENCE)


def record_producer_batch(
    entry: ProducerEntry | None, *, producer_epoch: int, batch: ProducerBatch
) -> ProducerEntry:
    """The entry after appending ``batch`` (leader, follower and log rebuild alike). A
    transaction marker (sequence -1) only raises the epoch, which fences older ones: the
    coordinator aborts a fenced producer's transaction at a bumped epoch (KIP-98)."""
    if batch.first_sequence < 0:
        if entry is None or producer_epoch > entry.producer_epoch:
            return ProducerEntry(producer_epoch, ())
        return entry
    if entry is None or producer_epoch != entry.producer_epoch:
        return ProducerEntry(producer_epoch, (batch,))
    kept = (*entry.batches, batch)[-PRODUCER_BATCHES_KEPT:]
    return ProducerEntry(producer_epoch, kept)
