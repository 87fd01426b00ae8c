"""How ``conveyor dev`` and ``conveyor dev stop-broker|start-broker`` talk: files under
``DATA/.dev/``, no sockets.

* ``state.json``: written (atomically) by the supervisor whenever a child starts or exits:
  its own pid, and each child's name, URL, pid and state (``running``, ``exited``: dead,
  to be restarted, or ``held``: stopped on request and kept down).
* ``NAME.hold``: made by ``stop-broker``; while it exists the supervisor does not restart
  that child. ``start-broker`` removes it and makes ``NAME.start``, which asks the
  supervisor to start the child at once (even with ``--no-restart-dead``).

The restart delay is :func:`restart_delay_ms`, a pure function of how many times in a row
the child died soon after starting, so a broker that cannot start (a bad data directory)
is retried at a slowing pace instead of in a tight loop.
"""

from __future__ import annotations

import contextlib
import os
from pathlib import Path
from typing import Final, Literal

import msgspec

ChildStatus = Literal["running", "exited", "held"]
RESTART_DELAY_MS_MIN: Final = 1_000
RESTART_DELAY_MS_MAX: Final = 30_000
STABLE_MS: Final = 30_000  # running this long, a child's next death is not a quick one


class DevChild(msgspec.Struct, frozen=True):
    name: str
    url: str
    state: ChildStatus
    pid: int | None = None
    restarts: int = 0


class DevState(msgspec.Struct, frozen=True):
    supervisor_pid: int
    children: list[DevChild]
    ca: str | None = None  # the CA of an HTTPS dev cluster, to check readiness

    def child(self, name: str) -> DevChild | None:
        return next((c for c in self.children if c.name == name), None)


def restart_delay_ms(quick_exits: int) -> int:
    """1 s after a death, doubling for each further death within ``STABLE_MS`` of its
    start, up to 30 s: 1, 2, 4, 8, 16, 30, 30..."""
    if quick_exits <= 1:
        return RESTART_DELAY_MS_MIN
    return min(RESTART_DELAY_MS_MAX, RESTART_DELAY_MS_MIN << min(quick_exits - 1, 16))


class DevControl:
    """The files of one dev cluster's data directory (see the module docstring)."""

    def __init__(self, data: Path) -> None:
        self.directory = data / ".dev"

    @property
    def state_path(self) -> Path:
        return self.directory / "state.json"

    def write_state(self, state: DevState) -> None:
        self.directory.mkdir(parents=True, exist_ok=True)
        tmp = self.state_path.with_suffix(".tmp")
        tmp.write_bytes(msgspec.json.encode(state))
        os.replace(tmp, self.state_path)

    def read_state(self) -> DevState | None:
        try:
            return msgspec.json.decode(self.state_path.read_bytes(), type=DevState)
        except (OSError, msgspec.DecodeError):
            return None

    def running_supervisor(self) -> int | None:
        """The pid of the ``conveyor dev`` serving this data directory, if one is alive."""
        state = self.read_state()
        if state is None:
            return None
        try:
            os.kill(state.supervisor_pid, 0)
        except ProcessLookupError:
            return None
        except PermissionError:
            return state.supervisor_pid  # alive, another user's
        return state.supervisor_pid

    def _marker(self, name: str, kind: str) -> Path:
        return self.directory / f"{name}.{kind}"

    def hold(self, name: str) -> None:
        self.directory.mkdir(parents=True, exist_ok=True)
        self._marker(name, "hold").touch()

    def held(self, name: str) -> bool:
        return self._marker(name, "hold").exists()

    def request_start(self, name: str) -> None:
        self.directory.mkdir(parents=True, exist_ok=True)
        with contextlib.suppress(FileNotFoundError):
            self._marker(name, "hold").unlink()
        self._marker(name, "start").touch()

    def take_start_request(self, name: str) -> bool:
        try:
            self._marker(name, "start").unlink()
        except FileNotFoundError:
            return False
        return True

    def clear(self) -> None:
        """Forget holds, requests and the state (a new ``conveyor dev`` starts everything)."""
        if not self.directory.is_dir():
            return
        for path in self.directory.iterdir():
            if path.suffix in (".hold", ".start", ".json", ".tmp"):
                path.unlink(missing_ok=True)
