"""The deterministic simulation (``make sim``): the whole cluster in one process, with the
real coordinator and broker cores, a manual clock, a seeded RNG, a network that delays,
drops, duplicates and partitions, crashes that lose unflushed writes; the guarantees of
``history.py`` checked after every step.

CI runs 500 seeds here (``make sim SEEDS=100000`` is the soak, docs/reliability.md), and
proves the checks have teeth: with a rule broken on purpose (``mutations.py``) a seed
breaks a guarantee within a bounded number of seeds.
"""

from __future__ import annotations

import pytest

from tests.sim.mutations import MUTATIONS, mutated
from tests.sim.run import default_jobs, replay, run_seeds, shrink
from tests.sim.scenario import scenario_for
from tests.sim.world import run_seed

CI_SEEDS = 500
# A broken rule must be caught within this many seeds (the first hits are at seeds 3-5;
# the bound leaves room for the scenarios to change).
MUTATION_SEEDS_MAX = 200


def test_500_seeds_keep_every_guarantee() -> None:
    summary = run_seeds(range(CI_SEEDS), jobs=default_jobs())
    assert not summary.failures, summary.report()
    assert summary.seeds == CI_SEEDS
    # the faults really happened, and the cluster really worked meanwhile
    for kind in ("crash", "crash-leader", "isolate", "split", "slow-disk", "dropped", "duplicated"):
        assert summary.faults[kind] > 0, f"no {kind} in {CI_SEEDS} seeds"
    assert summary.acked > 10 * CI_SEEDS


def test_a_seed_replays_exactly() -> None:
    first = run_seed(7, trace=True)
    second = run_seed(7, trace=True)
    assert first.trace == second.trace
    assert (first.steps, first.sim_ms, first.acked) == (second.steps, second.sim_ms, second.acked)


@pytest.mark.parametrize("mutation", sorted(MUTATIONS))
def test_a_broken_rule_is_caught(mutation: str) -> None:
    summary = run_seeds(range(MUTATION_SEEDS_MAX), mutation=mutation, stop_at_first=True)
    assert summary.failures, f"{mutation}: no guarantee broken in {MUTATION_SEEDS_MAX} seeds"


def test_a_failure_shrinks_to_a_smaller_scenario_that_still_fails() -> None:
    summary = run_seeds(range(MUTATION_SEEDS_MAX), mutation="ack-before-isr", stop_at_first=True)
    seed = summary.failures[0][0]
    original = scenario_for(seed)
    smallest = shrink(seed, original, "ack-before-isr")
    assert len(smallest.faults) <= len(original.faults)
    with mutated("ack-before-isr"):
        assert not run_seed(seed, smallest).ok
    result, text = replay(seed, "ack-before-isr")
    assert not result.ok and "violation:" in text and "trace" in text
