"""Start-up and exit work of Conveyor's processes (docs/testing.md, "Less CPU per process"):
the entry points exit with their status after ``conveyor/_process.py``'s freeze, and a
coordinator's start does not import the client package."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest


def _run(code: str, cwd: Path | None = None) -> str:
    result = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        cwd=cwd,
    )
    assert result.returncode == 0, result.stderr
    return result.stdout.strip()


@pytest.mark.parametrize(
    ("module", "args", "status"),
    [
        ("conveyor", ["--version"], 0),
        ("conveyor", ["no-such-command"], 2),
        ("conveyor.broker", ["--listen", "nowhere"], 2),
        ("conveyor.coordinator", ["--listen", "nowhere"], 2),
    ],
)
def test_the_entry_points_exit_with_their_status(module: str, args: list[str], status: int) -> None:
    result = subprocess.run(
        [sys.executable, "-m", module, *args],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == status, result.stderr


def test_a_coordinator_with_its_console_imports_no_client() -> None:
    """The console imports the client package (every client module) only for an offset
    reset: about 0.13 s of CPU at each coordinator start otherwise."""
    out = _run(
        "import sys\n"
        "import conveyor.coordinator.cli, conveyor.coordinator.http, conveyor.console\n"
        "print(sorted(m for m in ('conveyor.client',) if m in sys.modules))\n"
        "from conveyor.console import forms\n"
        "print(forms.reset_target({'topic': 't', 'to': 'time', 'time': '2026-01-01T00:00:00Z'}))\n"
    )
    assert out == "[]\n('t', Timestamp(timestamp_ms=1767225600000))"
