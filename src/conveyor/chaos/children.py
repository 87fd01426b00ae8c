"""Workload members that run as child processes (the stream workload's consumers, the
transactional workload's processors): each reports its steps on stdout as JSON lines,
recorded in the history; one SIGKILLed by the nemesis is recorded as a ``crash`` and
replaced by a new incarnation (``consumer-1.2``: member 1, third incarnation).
"""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import FrameType
from typing import Any

from conveyor.chaos.history import History

_stdout_lock = threading.Lock()  # a child's members may report from several threads


def write_line(fields: Mapping[str, Any]) -> None:
    """In a child: report one step on stdout as a JSON line, whole and flushed at once (a
    kill can cut only the last line, which :func:`parse_line` drops)."""
    line = json.dumps(fields)
    with _stdout_lock:
        sys.stdout.write(line + "\n")
        sys.stdout.flush()


def stop_on_sigterm() -> threading.Event:
    """In a child: an event that SIGTERM (the workload asking it to stop) sets."""
    stop = threading.Event()

    def on_term(_signum: int, _frame: FrameType | None) -> None:
        stop.set()

    signal.signal(signal.SIGTERM, on_term)
    return stop


def parse_line(line: str) -> dict[str, Any] | None:
    """One reported step; None for a line cut short by a kill, or not JSON."""
    if not line.endswith("\n"):
        return None
    try:
        raw: dict[str, Any] = json.loads(line)
    except ValueError:
        return None
    return raw


@dataclass
class Incarnations:
    """The child processes of one workload, by member index."""

    history: History
    log_dir: Path  # each member's stderr: {name}.log
    stop: threading.Event  # set: no new incarnation starts
    children: dict[int, subprocess.Popen[str]] = field(default_factory=dict)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def run(
        self, member: int, name: str, argv: Callable[[str], list[str]],
        record_line: Callable[[str, str], None],
    ) -> None:  # fmt: skip
        """Run member ``member`` (``argv(process)`` for each incarnation, ``process``
        being ``{name}.{incarnation}``) until :attr:`stop`, handing each line it reports
        to ``record_line(process, line)``."""
        incarnation = 0
        while not self.stop.is_set():
            process = f"{name}.{incarnation}"
            with self._lock:  # signal() sees every child it must kill
                if self.stop.is_set():
                    return
                with (self.log_dir / f"{name}.log").open("a") as stderr:
                    child = subprocess.Popen(
                        argv(process), stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                        stderr=stderr, text=True, start_new_session=True,
                    )  # fmt: skip
                self.children[member] = child
            assert child.stdout is not None
            for line in child.stdout:
                record_line(process, line)
            child.stdout.close()
            if child.wait() == -signal.SIGKILL:
                self.history.record(process, "info", "crash", {"member": member})
            incarnation += 1

    def signal(self, signum: signal.Signals, member: int | None = None) -> None:
        """Send ``signum`` to member ``member``'s running process, or to every one."""
        with self._lock:
            children = dict(self.children)
        for index, child in children.items():
            if (member is None or index == member) and child.poll() is None:
                child.send_signal(signum)
