"""``conveyor dev``'s control files and restart pacing (the supervisor itself runs in
tests/integration/test_dev.py)."""

from __future__ import annotations

import os
from pathlib import Path

from conveyor.cli.dev_control import DevChild, DevControl, DevState, restart_delay_ms
from conveyor.cli.dev_supervisor import exit_text


def test_restart_delay_doubles_for_quick_deaths_up_to_30s() -> None:
    assert [restart_delay_ms(n) for n in range(8)] == [
        1000, 1000, 2000, 4000, 8000, 16000, 30000, 30000,
    ]  # fmt: skip
    assert restart_delay_ms(10_000) == 30_000


def test_hold_start_request_and_state(tmp_path: Path) -> None:
    control = DevControl(tmp_path)
    assert control.read_state() is None and control.running_supervisor() is None
    control.hold("broker-2")
    assert control.held("broker-2") and not control.held("broker-1")
    assert not control.take_start_request("broker-2")
    control.request_start("broker-2")  # lifts the hold and asks for a start, once
    assert not control.held("broker-2")
    assert control.take_start_request("broker-2")
    assert not control.take_start_request("broker-2")
    state = DevState(os.getpid(), [DevChild("broker-2", "http://x", "held", None)])
    control.write_state(state)
    assert control.read_state() == state
    assert control.running_supervisor() == os.getpid()
    control.hold("broker-1")
    control.clear()
    assert control.read_state() is None and not control.held("broker-1")


def test_exit_text() -> None:
    assert exit_text(1) == "status 1"
    assert exit_text(-9) == "killed by SIGKILL"
    assert exit_text(-200) == "killed by signal 200"
