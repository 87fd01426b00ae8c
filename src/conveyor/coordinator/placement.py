"""Where a new topic's partitions go: replicas spread, leaders spread, deterministic.

Pure: the caller passes the live brokers, the cluster's current load and a seed; the same
inputs always give the same placement (the seed only breaks ties, so replaying a decision
or re-running a failing property test reproduces it exactly).

The rule, in the spirit of Kafka's ``StripedReplicaPlacer``:

1. **Leaders.** Order the live brokers by (partitions they lead now, replicas they hold
   now, seeded tie-break). Partition ``p`` is led by ``order[p % n]``. So within the topic
   every broker leads ``floor(P/n)`` or ``ceil(P/n)`` partitions (never more than its
   ceil share), and the ``P mod n`` extra leaderships go to the least-loaded brokers. If the
   cluster's leader counts were within one of each other before, they still are after.
2. **Followers.** For each partition in turn, pick ``RF - 1`` more distinct brokers, each
   time the one holding the fewest replicas *of this topic so far*, then the fewest
   replicas in the cluster, then the nearest after the leader in the order above (which
   stripes followers around the ring as Kafka does, so one broker's failure spreads its
   followers' load over many brokers). Every leadership is charged up front, so brokers
   that lead less get more followers. A final pass moves followers from the fullest to
   the emptiest brokers, so the topic's replica counts end within one of each other (the
   property tests check it; if no single move can help, the greedy result stands).

``replicas[0]`` of each partition is its *preferred leader*; the coordinator makes it the
leader at creation (epoch 0) and issue #4's preferred-leader election moves leadership
back to it after failovers.

Worked example: live brokers 1, 2, 3, each with leader and replica load {1: 2, 2: 0,
3: 1}; a new topic of 4 partitions with RF 2.

* Leader order by load: 2, 3, 1. Leaders: p0=2, p1=3, p2=1, p3=2: broker 2, the least
  loaded, takes the one extra leadership (ceil(4/3) = 2).
* p0, leader 2: brokers 3 and 1 hold no replica of the topic yet; 3 holds fewer in the
  cluster (1 < 2), so p0 = [2, 3]. Topic counts now 2:1, 3:1, 1:0.
* p1, leader 3: broker 1 holds 0 of the topic, broker 2 holds 1: p1 = [3, 1].
* p2, leader 1: broker 2 holds 1 of the topic, broker 3 holds 2: p2 = [1, 2].
* p3, leader 2: brokers 3 and 1 both hold 2; 3 holds fewer in the cluster: p3 = [2, 3].

Result ``[[2, 3], [3, 1], [1, 2], [2, 3]]``: leaders 2/1/1, replicas 3/3/2 (brokers
2/3/1); ``test_worked_example`` checks exactly this.
"""

from __future__ import annotations

import zlib
from collections.abc import Mapping, Sequence

from conveyor.coordinator.validation import validate_partition_count, validate_replication_factor
from conveyor.protocol.messages import BrokerId

_MASK64 = (1 << 64) - 1


def topic_seed(name: str) -> int:
    """The placement seed of a topic: stable across runs, different between topics, so two
    topics created on an idle cluster do not both start their leaders on the same broker."""
    return zlib.crc32(name.encode("utf-8"))


def _rank(seed: int, broker_id: int) -> int:
    """A seeded pseudo-random rank (splitmix64 of seed and broker id): the tie-breaker."""
    x = (seed * 0x9E3779B97F4A7C15 + broker_id + 1) & _MASK64
    x = ((x ^ (x >> 30)) * 0xBF58476D1CE4E5B9) & _MASK64
    x = ((x ^ (x >> 27)) * 0x94D049BB133111EB) & _MASK64
    return x ^ (x >> 31)


def place_partitions(
    brokers: Sequence[BrokerId],
    partition_count: int,
    replication_factor: int,
    *,
    seed: int,
    leader_load: Mapping[BrokerId, int] | None = None,
    replica_load: Mapping[BrokerId, int] | None = None,
) -> list[list[BrokerId]]:
    """Replica lists of partitions ``0..partition_count-1``, preferred leader first.

    ``brokers`` are the live brokers; ``leader_load`` and ``replica_load`` count what each
    already leads and holds (missing means 0). Raises INVALID_CONFIG when the replication
    factor exceeds the live brokers or the partition count is out of range. Cost
    O(partitions x RF x brokers), well under a second at the 10,000-partition limit for
    clusters of tens of brokers.
    """
    validate_partition_count(partition_count)
    validate_replication_factor(replication_factor, len(brokers))
    if len(set(brokers)) != len(brokers):
        raise ValueError(f"duplicate broker ids in {list(brokers)}")  # a caller's bug
    leaders_now = leader_load or {}
    replicas_now = replica_load or {}
    order = sorted(
        brokers,
        key=lambda b: (leaders_now.get(b, 0), replicas_now.get(b, 0), _rank(seed, b), b),
    )
    position = {broker: i for i, broker in enumerate(order)}
    n = len(order)
    # charge every leadership up front, so followers fill the brokers that lead less
    topic_count = {
        b: partition_count // n + (1 if i < partition_count % n else 0) for i, b in enumerate(order)
    }
    placement: list[list[BrokerId]] = []
    for p in range(partition_count):
        leader = order[p % n]
        replicas = [leader]
        for _ in range(replication_factor - 1):
            follower = min(
                (b for b in order if b not in replicas),
                key=lambda b: (
                    topic_count[b],
                    replicas_now.get(b, 0),
                    (position[b] - position[leader]) % n,
                ),
            )
            replicas.append(follower)
            topic_count[follower] += 1
        placement.append(replicas)
    _even_out(placement, order, topic_count)
    return placement


def _even_out(
    placement: list[list[BrokerId]], order: Sequence[BrokerId], topic_count: dict[BrokerId, int]
) -> None:
    """Move follower replicas from the fullest to the emptiest brokers until the topic's
    replica counts are within one of each other, or no single move helps.

    Greedy following leaves a spread of 2 in rare cases: the last partitions' leaders are
    fixed, and the emptiest broker may already be in the partition being filled. Leaders
    never move here, so the leader guarantee above is untouched. Each move lowers the sum of
    squared counts, so the loop ends after at most P x RF moves.
    """
    while True:
        low, high = min(topic_count.values()), max(topic_count.values())
        if high - low <= 1:
            return
        fullest = {b for b in order if topic_count[b] == high}
        emptiest = [b for b in order if topic_count[b] == low]
        move = _find_move(placement, fullest, emptiest)
        if move is None:
            return
        replicas, index, target = move
        topic_count[replicas[index]] -= 1
        topic_count[target] += 1
        replicas[index] = target


def _find_move(
    placement: list[list[BrokerId]], fullest: set[BrokerId], emptiest: list[BrokerId]
) -> tuple[list[BrokerId], int, BrokerId] | None:
    for replicas in placement:
        for index in range(1, len(replicas)):  # followers only
            if replicas[index] in fullest:
                target = next((b for b in emptiest if b not in replicas), None)
                if target is not None:
                    return replicas, index, target
    return None
