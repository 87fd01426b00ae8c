"""The faults start once the workload runs (runner.drive): each member's first ok step,
awaited in the history (History.wait_for_each) with a deadline. Before this, a 15 s
transactional run on a loaded CI machine met its first kill while the processors were
still starting, and committed no read-then-write transaction at all."""

from __future__ import annotations

import threading

import pytest

from conveyor.chaos import runner
from conveyor.chaos.history import History
from conveyor.chaos.schedule import FaultEvent


def test_wait_for_each_returns_once_every_member_has_its_step() -> None:
    history = History()
    history.record("consumer-0.0", "fail", "poll")  # not ok: does not count
    history.record("producer-0", "ok", "poll")  # not the step it needs

    def later() -> None:
        history.record("producer-0", "ok", "send")
        history.record("consumer-0.1", "ok", "poll")  # a later incarnation counts

    writer = threading.Timer(0.05, later)
    writer.start()
    try:
        missing = history.wait_for_each({"producer-0": "send", "consumer-0": "poll"}, 30)
    finally:
        writer.join()
    assert missing == []


def test_wait_for_each_names_the_members_missing_at_the_deadline() -> None:
    history = History()
    history.record("producer-0", "ok", "send")
    needed = {"producer-0": "send", "consumer-1": "poll", "consumer-0": "poll"}
    assert history.wait_for_each(needed, 0.05) == ["consumer-0", "consumer-1"]


class _Stuck:
    """A workload whose consumer never answers; the nemesis must not be started."""

    def __init__(self) -> None:
        self.history = History()
        self.started = False

    def start(self) -> None:
        self.started = True
        self.history.record("producer-0", "ok", "send")

    def warm_up(self) -> dict[str, str]:
        return {"producer-0": "send", "consumer-0": "poll"}

    def stop(self, drain_s: float) -> None:
        raise AssertionError("not started: nothing to stop")

    def abort(self) -> None:
        pass

    def crash_consumer(self, member: int) -> None:
        raise AssertionError("no fault may be injected")


def test_drive_injects_no_fault_into_a_workload_that_never_ran(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(runner, "WARM_UP_TIMEOUT_S", 0.05)
    workload = _Stuck()
    stage = runner.Stage(
        cluster=None,  # type: ignore[arg-type]  # never reached: no fault, no heal
        history=workload.history,
        schedule=[FaultEvent(index=0, start_s=0.0, kind="kill-consumer", target=0, hold_s=0.1)],
        skipped={},
    )
    with pytest.raises(runner.NotRunningError, match=r"consumer-0 \(a poll\)"):
        runner.drive(stage, workload, seed=1, duration_s=1.0, drain_s=0.0)
    assert workload.started
    assert [op.f for op in workload.history.ops()] == ["send"]  # no fault, no "running"
