"""The transactional workload's short fixed-seed run (``make chaos-ci``; also part of
``make test``).

One run of ``conveyor chaos --workload txn`` against a real cluster (1 coordinator, 3
brokers, RF 3) with the faults that matter most to transactions: a processor SIGKILLed
mid-transaction (its restart fences it and aborts what it left open), a partition leader
killed under open transactions (markers to a dead leader), the transaction coordinator
killed (prepared transactions completed on restart). A 15 s run, about 35-40 s in all.
Every safety count must be 0. Longer campaigns: docs/reliability.md.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from conveyor.chaos import checker, txn_run
from conveyor.chaos.schedule import make_schedule
from conveyor.chaos.txn_workload import TXN_PARTITIONS

SEED = 420
FAULTS = ("kill-consumer", "kill-leader", "kill-coordinator")
DURATION_S = 15.0


def test_the_seed_injects_every_fault_within_the_duration() -> None:
    schedule = make_schedule(
        SEED, DURATION_S, FAULTS, brokers=3, partitions=TXN_PARTITIONS, consumers=2
    )
    assert {e.kind for e in schedule} == set(FAULTS)


@pytest.mark.chaos
def test_transactional_run_has_no_anomaly(tmp_path: Path) -> None:
    report = txn_run.run(DURATION_S, SEED, FAULTS, brokers=3, root=tmp_path / "run")
    text = txn_run.render(report)
    injected = checker.injected_faults(report.ops)
    assert injected == set(FAULTS), text
    result = report.result
    assert result.txns["committed"] > 0 and result.txns["aborted"] > 0, text
    assert result.cycles_checked > 0, text  # read-then-write transactions committed
    assert report.in_log > report.committed_in_log, text  # aborted values are in the log
    assert report.valid, text
