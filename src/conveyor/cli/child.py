"""A child process of a local cluster: ``conveyor dev --ha``'s etcd members, the tests'
and the chaos suite's services (``cli/etcd_local.py``, ``chaos/cluster.py``).

Each runs in a session of its own (a Ctrl-C on the terminal reaches it through its parent,
which stops it in order), writes stdout and stderr to its log file, and may run with a group
id of its own (root only: the chaos suite's nftables marks tell connections apart by it,
``chaos/netfault.py``). A paused one (SIGSTOP) is continued before it is told to stop, as a
stopped process cannot handle SIGTERM.
"""

from __future__ import annotations

import signal
import subprocess
from collections.abc import Mapping
from pathlib import Path


class ChildProcess:
    """Mixin for a dataclass with the fields below; the subclass says what to run."""

    name: str
    log_path: Path
    gid: int | None
    process: subprocess.Popen[bytes] | None
    paused: bool

    def spawn(self, argv: list[str], env: Mapping[str, str] | None = None) -> None:
        with self.log_path.open("ab") as log_file:
            self.process = subprocess.Popen(
                argv, stdout=log_file, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                env=env, start_new_session=True, group=self.gid,
                extra_groups=None if self.gid is None else [],
            )  # fmt: skip
        self.paused = False

    def alive(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def signal(self, signum: signal.Signals) -> None:
        """Send ``signum`` if it runs (SIGSTOP pauses it, anything else resumes it)."""
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signum)
            self.paused = signum == signal.SIGSTOP

    def kill(self) -> None:
        """SIGKILL, as a crash or power loss would; waits until the process is gone."""
        if self.process is not None and self.process.poll() is None:
            self.process.kill()
            self.process.wait(10)
        self.paused = False

    def stop(self, timeout_s: float = 10.0) -> None:
        """SIGTERM (after SIGCONT when paused), then SIGKILL if it outlives ``timeout_s``."""
        if self.process is None or self.process.poll() is not None:
            return
        if self.paused:
            self.process.send_signal(signal.SIGCONT)
            self.paused = False
        self.process.terminate()
        try:
            self.process.wait(timeout_s)
        except subprocess.TimeoutExpired:
            self.kill()

    def tail(self, chars: int = 4000) -> str:
        try:
            return self.log_path.read_text(errors="replace")[-chars:]
        except FileNotFoundError:
            return ""
