"""The short fixed-seed chaos set (``make chaos-ci``; also part of ``make test``).

Two runs against a real cluster (1 coordinator, 3 brokers on 127.0.0.10-13, RF=3): process
faults, then network and disk faults. Together they inject every fault type at least once;
each run must end with every safety count at 0. Deselect with ``-m 'not chaos'``; long
randomized campaigns are ``make chaos``.

A fault this machine cannot inject (partitions without root/nft, disk-full without tmpfs)
is reported as skipped with the reason by the run itself; the test then still checks the
rest, and says what it skipped.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from conveyor.chaos import checker, runner
from conveyor.chaos.schedule import (
    COOLDOWN_S,
    FAULTS,
    GAP_S_MAX,
    HA_FAULTS,
    HOLD_S_MAX,
    WARMUP_S,
    make_schedule,
)

PROCESS_FAULTS = (
    "kill",
    "kill-leader",
    "kill-coordinator",
    "kill-consumer",
    "pause",
    "pause-coordinator",
)
NETWORK_AND_DISK_FAULTS = (
    "partition",
    "partition-coordinator",
    "partition-split",
    "partition-asym",
    "torn-write",
    "power-loss",
    "corrupt",
    "disk-full",
)
CI_RUNS = ((101, PROCESS_FAULTS), (202, NETWORK_AND_DISK_FAULTS), (303, HA_FAULTS))


def duration_covering(seed: int, faults: tuple[str, ...]) -> float:
    """The shortest whole-second duration whose schedule injects every fault once."""
    worst_s = WARMUP_S + len(faults) * (HOLD_S_MAX + GAP_S_MAX) + COOLDOWN_S
    for duration_s in range(10, int(worst_s) + 2):
        kinds = {
            e.kind
            for e in make_schedule(
                seed, duration_s, faults, brokers=3, partitions=runner.PARTITIONS, consumers=2
            )
        }
        if kinds == set(faults):
            return float(duration_s)
    raise AssertionError("unreachable: the worst case always fits")


def test_the_ci_set_covers_every_fault_type() -> None:
    covered = [fault for _seed, faults in CI_RUNS for fault in faults]
    assert sorted(covered) == sorted(FAULTS)


@pytest.mark.chaos
@pytest.mark.parametrize(("seed", "faults"), CI_RUNS, ids=("process", "network-disk", "ha"))
def test_fixed_seed_run_has_no_safety_anomaly(
    seed: int, faults: tuple[str, ...], tmp_path: Path
) -> None:
    duration_s = duration_covering(seed, faults)
    ha = faults == HA_FAULTS  # three coordinators on etcd, and the two-actives check
    report = runner.run(duration_s, seed, faults, brokers=3, root=tmp_path / "run", ha=ha)
    text = runner.render(report)
    injected = checker.injected_faults(report.ops)
    assert injected | set(report.skipped) == set(faults), text
    assert report.result.sends["ok"] > 0, text
    assert report.result.valid, text
