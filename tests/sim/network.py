"""The simulated network: messages between nodes that may be delayed, reordered, dropped,
duplicated, or blocked by a partition, all decided by a seeded RNG.

Nodes are named (``"c"`` the coordinator, ``"b1"``.. the brokers, ``"p1"``.. clients).
A message is delivered by scheduling a call on the simulation's clock; a partition blocks
both directions between two groups of nodes until it heals. Nothing is delivered to a
node that is down, or to a node that restarted since the message was sent (the
connection it was sent on is gone).
"""

from __future__ import annotations

import random
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field


@dataclass
class NetworkFaults:
    """How unreliable the network is during one run (chosen per seed)."""

    delay_ms_min: int = 1
    delay_ms_max: int = 5
    drop_rate: float = 0.0
    duplicate_rate: float = 0.0


@dataclass
class NetworkStats:
    sent: int = 0
    delivered: int = 0
    dropped: int = 0
    duplicated: int = 0
    blocked: int = 0


@dataclass
class Network:
    rng: random.Random
    schedule: Callable[[int, Callable[[], None], str], None]  # (delay_ms, action, label)
    alive: Callable[[str], int | None]  # a node's incarnation, None when down
    faults: NetworkFaults = field(default_factory=NetworkFaults)
    stats: NetworkStats = field(default_factory=NetworkStats)
    # blocked pairs, counted: overlapping partitions each heal only their own cut
    cut: Counter[frozenset[str]] = field(default_factory=Counter)

    def partition(self, side: set[str], other: set[str]) -> list[frozenset[str]]:
        pairs = sorted({frozenset((a, b)) for a in side for b in other if a != b}, key=sorted)
        self.cut.update(pairs)
        return pairs

    def heal(self, pairs: list[frozenset[str]] | None = None) -> None:
        """Heal these pairs' cut (one partition's), or every cut."""
        if pairs is None:
            self.cut.clear()
            return
        self.cut.subtract(pairs)
        self.cut = +self.cut  # drop the healed (zero) counts

    def connected(self, a: str, b: str) -> bool:
        return not self.cut or frozenset((a, b)) not in self.cut

    def send(self, source: str, target: str, deliver: Callable[[], None], label: str) -> None:
        """Send a message; ``deliver`` runs at the target if it arrives."""
        self.stats.sent += 1
        if not self.connected(source, target):
            self.stats.blocked += 1
            return
        if self.faults.drop_rate and self.rng.random() < self.faults.drop_rate:
            self.stats.dropped += 1
            return
        copies = 1
        if self.faults.duplicate_rate and self.rng.random() < self.faults.duplicate_rate:
            copies = 2
            self.stats.duplicated += 1
        incarnation = self.alive(target)
        source_incarnation = self.alive(source)
        low = self.faults.delay_ms_min
        span = self.faults.delay_ms_max - low + 1
        for _ in range(copies):
            delay = low + int(self.rng.random() * span)

            def arrive() -> None:
                if self.alive(target) != incarnation or incarnation is None:
                    return  # the target died or restarted: the connection is gone
                if self.alive(source) != source_incarnation:
                    return
                if not self.connected(source, target):
                    self.stats.blocked += 1
                    return
                self.stats.delivered += 1
                deliver()

            self.schedule(delay, arrive, f"{label} {source}->{target}")
