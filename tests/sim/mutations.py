"""Deliberately broken rules, to show the simulation has teeth (test-only switches).

Each mutation swaps one rule of the real code for a broken one while it is active; the
simulation must find a broken guarantee within a bounded number of seeds
(``test_sim.py``). Nothing in ``src/`` knows about them: the switch is this module
replacing a function where the code looks it up.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Collection, Iterator, Mapping
from typing import Any

from conveyor.broker import follower
from conveyor.broker import replica as replica_rules
from conveyor.coordinator import election
from conveyor.coordinator.election import Election
from conveyor.protocol.messages import BrokerId
from tests.sim import nodes


def _ack_before_isr(**kwargs: Any) -> int:
    """The high watermark from the leader alone: writes are acknowledged before the ISR
    holds them."""
    previous: int = kwargs["previous"]
    return min(max(previous, kwargs["leader_durable_offset"]), kwargs["log_end_offset"])


def _elect_outside_isr(
    replicas: tuple[BrokerId, ...],
    isr: tuple[BrokerId, ...],
    alive: Collection[BrokerId],
    unclean_allowed: bool,
) -> Election:
    """Any live replica may lead, in sync or not (and it is not even called unclean)."""
    for broker in replicas:
        if broker in alive:
            return Election(broker, False, f"broker {broker} is alive (mutation)")
    return Election(None, False, "nobody alive")


def _never_truncate(
    *, leader_end_offset_for_epoch: int, follower_end_offset_for_epoch: int, follower_log_end: int
) -> int:
    """A follower of a new leader keeps its whole log, even what the leader never had."""
    return follower_log_end


# how far behind its answers the broken coordinator store is when the process dies
STORE_LAG_MS = 500


def _answer_before_stored(
    stored: list[tuple[int, bytes]], crash_ms: int
) -> list[tuple[int, bytes]]:
    """The coordinator answers before its store is durable: a crash loses the decisions of
    its last moments, which brokers had already acted on (an ISR change, a new leader)."""
    return [(at_ms, entry) for at_ms, entry in stored if at_ms <= crash_ms - STORE_LAG_MS]


MUTATIONS: Mapping[str, tuple[Any, str, Callable[..., Any]]] = {
    "ack-before-isr": (replica_rules, "high_watermark", _ack_before_isr),
    "elect-outside-isr": (election, "elect_leader", _elect_outside_isr),
    "no-truncation": (follower, "truncation_offset", _never_truncate),
    "coordinator-answers-before-stored": (nodes, "stored_after_crash", _answer_before_stored),
}


@contextlib.contextmanager
def mutated(name: str | None) -> Iterator[None]:
    """Run with the named rule broken (None: the real rules)."""
    if name is None:
        yield
        return
    module, attribute, broken = MUTATIONS[name]
    original = getattr(module, attribute)
    setattr(module, attribute, broken)
    try:
        yield
    finally:
        setattr(module, attribute, original)
