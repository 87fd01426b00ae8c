"""Pure rules of the broker: names, limits, the high watermark, retries and metadata ages.

No I/O, no clocks, no randomness here: callers pass ``now_ms`` and random fractions in, so
every rule is a table test. The shell (``service.py``, ``heartbeat.py``) applies them.
"""

from __future__ import annotations

import re
from collections.abc import Collection, Mapping
from typing import Final

from conveyor.protocol.errors import ErrorCode, InvalidRequestError
from conveyor.protocol.messages import Acks, BrokerId

TOPIC_NAME_BYTES_MAX: Final = 249  # Kafka's limit: the partition directory name must fit
_TOPIC_NAME: Final = re.compile(r"[a-zA-Z0-9._-]+")

FETCH_BYTES_MAX: Final = 16 * 1024 * 1024  # one fetch answers at most this (plus one batch)
FETCH_WAIT_MS_MAX: Final = 30_000  # a long-poll holds a connection at most this long
PRODUCE_TIMEOUT_MS_MAX: Final = 120_000  # acks=all waits at most this long

ACKS_ALIASES: Final[Mapping[str, Acks]] = {"0": "0", "1": "1", "all": "all", "-1": "all"}


def validate_topic_name(name: str) -> None:
    """Kafka's rule: 1-249 characters of ``[a-zA-Z0-9._-]``, and not ``.`` or ``..``.

    Checked before any lookup, so that a bad name never reaches the file system."""
    if not name or len(name) > TOPIC_NAME_BYTES_MAX or not _TOPIC_NAME.fullmatch(name):
        raise InvalidRequestError(
            f"invalid topic name {name[:300]!r}: use 1-{TOPIC_NAME_BYTES_MAX} characters "
            "of a-z, A-Z, 0-9, '.', '_' and '-'",
            code=ErrorCode.INVALID_TOPIC,
        )
    if name in (".", ".."):
        raise InvalidRequestError(f"invalid topic name {name!r}", code=ErrorCode.INVALID_TOPIC)


def parse_acks(text: str) -> Acks:
    """``0``, ``1``, ``all`` (or Kafka's ``-1`` for all)."""
    acks = ACKS_ALIASES.get(text)
    if acks is None:
        raise InvalidRequestError(f"acks must be 0, 1 or all, not {text[:20]!r}")
    return acks


def clamp(value: int, low: int, high: int) -> int:
    return max(low, min(value, high))


def min_insync_replicas(configured: int | None, replication_factor: int) -> int:
    """The topic's setting, else 2 when RF >= 3, else 1 (issue 4's defaults)."""
    if configured is not None:
        return configured
    return 2 if replication_factor >= 3 else 1


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


def retry_backoff_ms(attempt: int, *, base_ms: int, max_ms: int, jitter_fraction: float) -> int:
    """Exponential backoff with jitter: ``base * 2**attempt`` capped at ``max``, then scaled
    by ``0.5 + jitter_fraction / 2`` (``jitter_fraction`` in [0, 1), from the caller's RNG) so
    that brokers restarted together do not retry in lockstep."""
    raw = min(max_ms, base_ms * (2 ** min(attempt, 30)))
    return max(1, int(raw * (0.5 + jitter_fraction / 2)))


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


def check_offset(offset: int) -> None:
    if offset < 0:
        raise InvalidRequestError(f"offset must be >= 0, not {offset}", offset=offset)
