"""Which partitions one Fetch to a broker names (pure: no I/O, no clock).

Kafka's consumers send one Fetch per broker carrying every fetchable partition that
broker leads (Java's ``AbstractFetch.prepareFetchRequests``, librdkafka's per-broker
``rd_kafka_broker_fetch_toppars``), not one per partition: the broker long-polls them
all at once and answers as soon as any has data, so one round trip and one connection
serve them all. The shell (``kafka_fetcher.py``) asks :func:`group_by_leader` which
broker each positioned partition goes to, then :func:`plan_fetch` which of a broker's
partitions the next request names, and :func:`poll_wait_ms` how long it may wait.

A partition is fetchable when it has a position, is not paused, is not backing off
after an error, and the buffer has room for its ``partition_max_bytes`` (each named
partition reserves that much: the buffer's bound holds exactly as with one request per
partition). The request's ``max_bytes`` is what was reserved.

The broker fills the request's byte budget in the order partitions are named (KIP-74),
so a fixed order would let the first partitions starve the last under load. Like
librdkafka, which rotates its active-partition list after each request, the order
starts one partition further on every request (``rotation``).

Worked example: partitions a0, a1 led by broker A and b0 by broker B, all positioned, a1
paused: ``group_by_leader`` gives {A: [a0, a1], B: [b0]}; for A, ``plan_fetch`` names
[a0] (a1 is paused); with room for one partition only, B's request waits for space.
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Iterable, Mapping
from dataclasses import dataclass
from typing import Final

from conveyor.client.types import TopicPartition


@dataclass(frozen=True, slots=True)
class Target:
    """A partition a fetch names: from ``offset``, for the buffer's ``generation``."""

    tp: TopicPartition
    offset: int
    generation: int


@dataclass(frozen=True, slots=True)
class Ahead:
    """An answer in but not yet in the buffer: the request it answers and where its
    batches end (the next request of a pipelined loop starts there)."""

    answered: Target
    end: int


def start_of(target: Target, ahead: Ahead | None) -> Target:
    """Where ``target`` (the buffer's position) is fetched from next: past an answer not
    yet decoded only when that answer starts at the position in the same generation, so
    the buffer takes it. An answer from elsewhere is one the buffer will drop (an old
    leader's loop answered first after a leader change): starting past it would skip
    what it held, and every later answer would start there too, dropped in turn
    (issue 15: a reader stuck for good at a new leader epoch, calling itself caught up).

    >>> at = Target(TopicPartition("t", 0), 2, 1)
    >>> start_of(at, Ahead(Target(at.tp, 2, 1), 7)).offset
    7
    >>> start_of(at, Ahead(Target(at.tp, 0, 1), 7)).offset  # an answer the buffer drops
    2
    """
    if (
        ahead is not None
        and ahead.answered.offset == target.offset
        and ahead.answered.generation == target.generation
        and ahead.end > target.offset
    ):
        return Target(target.tp, ahead.end, target.generation)
    return target


def group_by_leader(
    targets: Iterable[Target], leader_of: Callable[[TopicPartition], str | None]
) -> dict[str, list[Target]]:
    """The targets by their leader's address, in the order given; a partition without a
    known leader goes nowhere (the metadata refresh it triggers will place it)."""
    by_leader: dict[str, list[Target]] = {}
    for target in targets:
        leader = leader_of(target.tp)
        if leader is not None:
            by_leader.setdefault(leader, []).append(target)
    return by_leader


def plan_fetch(
    candidates: list[Target],
    *,
    paused: Collection[TopicPartition],
    retry_at_ms: Mapping[TopicPartition, float],
    now_ms: float,
    rotation: int,
) -> list[Target]:
    """The candidates one broker's next Fetch names, in the order it names them: not
    paused, not backing off, rotated by ``rotation`` for fairness. The buffer's room is
    the shell's to check (it reserves as it goes, in this order)."""
    fetchable = [
        c
        for c in sorted(candidates, key=lambda c: (c.tp.topic, c.tp.partition))
        if c.tp not in paused and retry_at_ms.get(c.tp, 0.0) <= now_ms
    ]
    if not fetchable:
        return []
    start = rotation % len(fetchable)
    return fetchable[start:] + fetchable[:start]


def poll_wait_ms(named_count: int, led_count: int, *, max_wait_ms: int, short_wait_ms: int) -> int:
    """How long the broker may hold a request naming ``named_count`` of the
    ``led_count`` unpaused partitions it leads for this consumer. A request can't be
    widened while the broker holds it, so one that leaves partitions out (still finding
    their positions, backing off, or waiting for buffer room) waits ``short_wait_ms`` at
    most: those join the next request soon instead of after a whole long poll."""
    if named_count >= led_count:
        return max_wait_ms
    return min(max_wait_ms, short_wait_ms)


REQUEST_BUFFER_SHARE: Final = 8  # a request reserves at most 1/8 of the buffer


def reserve_per_partition(count: int, *, partition_max_bytes: int, buffer_max_bytes: int) -> int:
    """The buffer room each of ``count`` partitions of one request reserves (the request's
    ``max_bytes`` is ``count`` times it): ``partition_max_bytes``, less when that would
    take more than 1/8 of the buffer (but never below one partition's worth in all). A
    request reserving ``fetch_max_bytes`` for each of its partitions would, with a few
    brokers and two requests each in flight (the one answered, not yet decoded, and the
    next), want more than the whole buffer: 3 brokers x 3 partitions x 4 MiB x 2 is
    72 MiB of a 64 MiB buffer, and the next request could not leave early. Worked
    example: 4 MiB per partition, a 64 MiB buffer, 4 partitions: 2 MiB each (8 MiB)."""
    cap = max(partition_max_bytes, buffer_max_bytes // REQUEST_BUFFER_SHARE)
    return max(1, min(partition_max_bytes, cap // max(1, count)))


def next_retry_ms(
    candidates: Iterable[Target], retry_at_ms: Mapping[TopicPartition, float], now_ms: float
) -> float | None:
    """How long until the first of ``candidates`` that is backing off may fetch again;
    None when none is."""
    waits = [retry_at_ms[c.tp] - now_ms for c in candidates if retry_at_ms.get(c.tp, 0) > now_ms]
    return min(waits) if waits else None
