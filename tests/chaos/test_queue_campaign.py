"""The queue workload's short fixed-seed run (``make chaos-ci``; also part of ``make test``).

One run of ``conveyor chaos --workload queue`` against a real cluster (1 coordinator, 3
brokers, RF 3): members of a key-ordered and an unordered share group crashed, a partition
leader killed and a broker paused while they receive, accept, release and reject, with
dead letters. Every safety count must be 0, and every record must end settled (accepted
or dead-lettered) in both groups. Longer campaigns: docs/reliability.md.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from conveyor.chaos import checker, runner

SEED = 411
FAULTS = ("kill-consumer", "kill-leader", "pause")
DURATION_S = 20.0  # seed 411 injects each of FAULTS by then (see test_campaign.py)


@pytest.mark.chaos
def test_queue_run_has_no_safety_anomaly(tmp_path: Path) -> None:
    report = runner.run(
        DURATION_S, SEED, FAULTS, brokers=3, root=tmp_path / "run", workload_name="queue"
    )
    text = runner.render(report)
    injected = checker.injected_faults(report.ops)
    assert injected == set(FAULTS), text
    assert report.result.valid, text
    counts = report.result.counts
    assert report.result.sends["ok"] > 0, text
    assert counts["dead-lettered"] > 0, text  # rejects and releases past the limit
    assert counts["unsettled"] == 0, text  # every record ended accepted or dead-lettered
    assert counts["dlq-unread"] == 0, text
