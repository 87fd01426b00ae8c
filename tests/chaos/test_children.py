"""Child-process members (chaos/children.py): each incarnation's reported lines recorded,
a line cut short dropped, a SIGKILLed incarnation recorded as a crash and replaced."""

from __future__ import annotations

import json
import signal
import sys
import threading
from pathlib import Path

from conveyor.chaos.children import Incarnations, parse_line
from conveyor.chaos.cluster import wait_for
from conveyor.chaos.history import History

STEP = json.dumps({"type": "ok", "f": "poll", "value": {"n": 1}, "error": None})
# prints a step, then a step cut short (no newline) and exits
FIRST = f"import sys; sys.stdout.write({STEP!r} + '\\n' + {STEP[:20]!r})"
SECOND = "import time; print('not json', flush=True); time.sleep(60)"


def test_incarnations_record_steps_and_crashes(tmp_path: Path) -> None:
    history = History()
    stop = threading.Event()
    members = Incarnations(history, tmp_path, stop)

    def argv(process: str) -> list[str]:
        return [sys.executable, "-c", FIRST if process.endswith(".0") else SECOND]

    def record_line(process: str, line: str) -> None:
        raw = parse_line(line)
        if raw is not None:
            history.record(process, raw["type"], raw["f"], raw["value"], raw["error"])

    runner = threading.Thread(target=members.run, args=(3, "member-3", argv, record_line))
    runner.start()
    try:
        assert wait_for(lambda: 3 in members.children and members.children[3].args[2] == SECOND, 30)
    finally:
        stop.set()
        members.signal(signal.SIGKILL, 3)
        runner.join(30)
    ops = [(op.process, op.type, op.f, op.value) for op in history.ops()]
    assert ops == [
        ("member-3.0", "ok", "poll", {"n": 1}),
        ("member-3.1", "info", "crash", {"member": 3}),
    ]
    assert (tmp_path / "member-3.log").exists()


def test_parse_line_drops_what_a_kill_cut() -> None:
    assert parse_line(STEP + "\n") == json.loads(STEP)
    assert parse_line(STEP) is None
    assert parse_line("{not json\n") is None
