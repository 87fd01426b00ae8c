"""Running seeds: many at once (``run_seeds``), or one replayed with its minimal trace.

A failing seed is shrunk before it is shown: faults are dropped one at a time, and the
network made reliable, as long as the run still breaks a guarantee; the smallest failing
scenario is then replayed with the full trace. Runs are deterministic, so the printed
command replays exactly what was seen.
"""

from __future__ import annotations

import multiprocessing
import os
import time
from collections import Counter
from collections.abc import Iterable
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field, replace

from tests.sim.mutations import mutated
from tests.sim.network import NetworkFaults
from tests.sim.scenario import Scenario, scenario_for
from tests.sim.world import RunResult, run_seed

TRACE_SHOWN_LINES = 120


@dataclass
class Summary:
    seeds: int = 0
    failures: list[tuple[int, str]] = field(default_factory=list)
    faults: Counter[str] = field(default_factory=Counter)
    steps: int = 0
    sim_ms: int = 0
    acked: int = 0
    consumed: int = 0
    seconds: float = 0.0

    def add(self, result: RunResult) -> None:
        self.seeds += 1
        if result.violation is not None:
            self.failures.append((result.seed, str(result.violation)))
        self.faults.update(result.faults)
        self.steps += result.steps
        self.sim_ms += result.sim_ms
        self.acked += result.acked
        self.consumed += result.consumed

    def report(self) -> str:
        faults = ", ".join(f"{k} {v:,}" for k, v in sorted(self.faults.items()))
        per_seed_ms = self.seconds / max(1, self.seeds) * 1000
        lines = [
            f"{self.seeds:,} seeds in {self.seconds:.1f} s ({per_seed_ms:.0f} ms/seed): "
            f"{len(self.failures)} broke a guarantee",
            f"simulated {self.sim_ms / 1000:,.0f} s of cluster time, {self.steps:,} steps, "
            f"{self.acked:,} acknowledged writes, {self.consumed:,} records consumed",
            f"faults: {faults}",
        ]
        lines += [f"  seed {seed}: {violation}" for seed, violation in self.failures[:20]]
        return "\n".join(lines)


@dataclass(frozen=True)
class _Job:
    seed: int
    mutation: str | None


def _run(job: _Job) -> RunResult:
    with mutated(job.mutation):
        result = run_seed(job.seed)
    return replace(result, trace=[])  # traces stay in the worker: only summaries travel


def run_seeds(
    seeds: Iterable[int], *, jobs: int = 1, mutation: str | None = None, stop_at_first: bool = False
) -> Summary:
    summary = Summary()
    started = time.perf_counter()
    work = [_Job(seed, mutation) for seed in seeds]
    if jobs <= 1:
        for job in work:
            summary.add(_run(job))
            if stop_at_first and summary.failures:
                break
    else:
        # forkserver, not fork: the xdist worker that runs this has threads (clients'
        # loops) and objects of earlier tests; a forked child collected them and crashed
        # (a segfault while garbage-collecting, seen once in make test)
        context = multiprocessing.get_context("forkserver")
        with ProcessPoolExecutor(max_workers=jobs, mp_context=context) as pool:
            for result in pool.map(_run, work, chunksize=16):
                summary.add(result)
                if stop_at_first and summary.failures:
                    break
    summary.seconds = time.perf_counter() - started
    return summary


def shrink(seed: int, scenario: Scenario, mutation: str | None = None) -> Scenario:
    """The smallest scenario (fewest faults, a reliable network if possible) with which the
    seed still breaks a guarantee."""
    with mutated(mutation):
        reliable = replace(
            scenario, network=replace(scenario.network, drop_rate=0.0, duplicate_rate=0.0)
        )
        if not run_seed(seed, reliable).ok:
            scenario = reliable
        index = 0
        while index < len(scenario.faults):
            candidate = scenario.without(index)
            if not run_seed(seed, candidate).ok:
                scenario = candidate
            else:
                index += 1
    return scenario


def replay(
    seed: int, mutation: str | None = None, *, minimize: bool = True
) -> tuple[RunResult, str]:
    """Run one seed; when it breaks a guarantee, shrink it and return the minimal trace."""
    scenario = scenario_for(seed)
    with mutated(mutation):
        first = run_seed(seed, scenario)
    if first.ok or not minimize:
        return first, _text(first)
    smallest = shrink(seed, scenario, mutation)
    with mutated(mutation):
        result = run_seed(seed, smallest, trace=True)
    return result, _text(result)


def _text(result: RunResult) -> str:
    lines = [
        f"seed {result.seed}: {'ok' if result.ok else 'BROKE A GUARANTEE'}",
        result.scenario.describe(),
    ]
    if result.violation is not None:
        lines.append(f"violation: {result.violation}")
        shown = result.trace[-TRACE_SHOWN_LINES:]
        lines.append(f"trace (last {len(shown)} of {len(result.trace)} lines; ms, node, what):")
        lines += shown
    lines.append(
        f"{result.steps:,} steps, {result.sim_ms:,} ms simulated, {result.acked} writes "
        f"acknowledged, {result.consumed} records consumed"
    )
    return "\n".join(lines)


def default_jobs() -> int:
    return max(1, min(2, os.cpu_count() or 1))


__all__ = ["NetworkFaults", "Summary", "default_jobs", "replay", "run_seeds", "shrink"]
