"""The deterministic simulation (``make sim``): the whole cluster in one process, with the
real coordinator and broker cores, a manual clock, a seeded RNG, a network that delays,
drops, duplicates and partitions, crashes that lose unflushed writes; the guarantees of
``history.py`` checked after every step.

CI runs 500 seeds here (``make sim-soak`` runs 100,000, docs/reliability.md), and
proves the checks have teeth: with a rule broken on purpose (``mutations.py``) a seed
breaks a guarantee within a bounded number of seeds.
"""

from __future__ import annotations

from dataclasses import replace

import pytest

from conveyor.protocol.replica import TopicPartition
from tests.sim.history import History, InvariantError, check_final
from tests.sim.mutations import MUTATIONS, mutated
from tests.sim.network import NetworkFaults
from tests.sim.nodes import SESSION_TIMEOUT_MS
from tests.sim.run import default_jobs, replay, run_seeds, shrink
from tests.sim.scenario import Fault, scenario_for
from tests.sim.world import run_seed

# A few seconds of make test's 20 minutes (~21 ms of CPU a seed); the soak is make sim-soak.
CI_SEEDS = 500  # the issue asks for at least 500 in CI
# A broken rule must be caught within this many seeds (the first hits are at seeds 3-5;
# the bound leaves room for the scenarios to change).
MUTATION_SEEDS_MAX = 200


def test_ci_seeds_keep_every_guarantee() -> None:
    summary = run_seeds(range(CI_SEEDS), jobs=default_jobs())
    assert not summary.failures, summary.report()
    assert summary.seeds == CI_SEEDS
    # the faults really happened, and the cluster really worked meanwhile
    kinds = ("crash", "crash-leader", "crash-coordinator", "isolate", "split", "slow-disk")
    for kind in (*kinds, "dropped", "duplicated"):
        assert summary.faults[kind] > 0, f"no {kind} in {CI_SEEDS} seeds"
    assert summary.acked > 10 * CI_SEEDS


def test_writes_go_on_while_the_coordinator_is_down_and_its_restart_forgets_nothing() -> None:
    """The data path needs no coordinator: with it down for longer than a broker session,
    the leader keeps acknowledging; restarted, it replays its store (the run would break
    "coordinator forgot a decision" otherwise) and expires nobody for its own silence."""
    down_ms = SESSION_TIMEOUT_MS + 1000
    scenario = replace(
        scenario_for(39),
        faults=(Fault("crash-coordinator", 1200, down_ms, 0),),
        network=NetworkFaults(delay_ms_min=1, delay_ms_max=3),
    )
    result = run_seed(39, scenario, trace=True)
    assert result.ok, result.violation
    lines = [line.split(maxsplit=2) for line in result.trace]  # ms, node, what
    events = [(int(ms), node, what) for ms, node, what in lines]
    assert (1200, "c", "crashed: soft state lost") in events
    (restarted_ms,) = [ms for ms, node, what in events if what.startswith("restarted:")]
    assert restarted_ms == 1200 + down_ms
    acked = [ms for ms, node, what in events if what.startswith("acked ")]
    assert len([ms for ms in acked if 1200 < ms < restarted_ms]) > 20
    assert not [line for line in result.trace if "declared dead" in line]


def test_a_partition_the_cluster_forgot_is_lost() -> None:
    history = History()
    history.ack(TopicPartition("t", 1), 0, b"v")
    with pytest.raises(InvariantError, match="partition lost"):
        check_final(history, {TopicPartition("t", 0): [[], []]})


@pytest.mark.parametrize(
    ("seed", "found"),
    [
        (8752, "a restarted coordinator knew no incarnation: a restarted leader kept its epoch"),
        (10025, "a passed fetch backoff kept asking for a tick at once: a busy loop"),
        (10139, "the same busy loop"),
        (14254, "the sole in-sync leader restarted and kept its epoch: replicas diverged"),
    ],
)
def test_the_seeds_the_soak_broke_keep_every_guarantee(seed: int, found: str) -> None:
    result = run_seed(seed)
    assert result.ok, f"{found}: {result.violation}"


def test_a_seed_replays_exactly() -> None:
    first = run_seed(7, trace=True)
    second = run_seed(7, trace=True)
    assert first.trace == second.trace
    assert (first.steps, first.sim_ms, first.acked) == (second.steps, second.sim_ms, second.acked)


@pytest.mark.parametrize("mutation", sorted(MUTATIONS))
def test_a_broken_rule_is_caught(mutation: str) -> None:
    summary = run_seeds(range(MUTATION_SEEDS_MAX), mutation=mutation, stop_at_first=True)
    assert summary.failures, f"{mutation}: no guarantee broken in {MUTATION_SEEDS_MAX} seeds"


def test_a_failure_found_in_a_worker_process_is_reported() -> None:
    # the soak found its first failing seed this way: a violation that could not be
    # unpickled took the whole pool down instead of being reported
    summary = run_seeds(range(8), jobs=2, mutation="ack-before-isr")
    assert summary.seeds == 8
    assert summary.failures


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
