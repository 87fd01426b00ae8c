"""The child processes of ``conveyor dev``: start, stream logs, watch, restart, stop.

Each child runs in its own session, so Ctrl-C reaches only the supervisor, which then stops
them in order: brokers first so they flush and deregister, then the coordinator. A child
that dies is reported with how it ended, and (``--restart-dead``, the default) started
again after :func:`~conveyor.cli.dev_control.restart_delay_ms`; the others keep running,
so a replicated cluster shows failover instead of stopping. ``conveyor dev stop-broker N``
keeps a broker down until ``start-broker N`` (``dev_control.py``).
"""

from __future__ import annotations

import os
import signal
import subprocess
import threading
import time
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import IO

from conveyor.cli.dev_control import (
    STABLE_MS,
    ChildStatus,
    DevChild,
    DevControl,
    DevState,
    restart_delay_ms,
)
from conveyor.cli.output import print_line

READY_TIMEOUT_S = 60.0
STOP_TIMEOUT_S = 20.0
_COLORS = ("cyan", "green", "magenta", "yellow", "blue", "red")


@dataclass
class Child:
    name: str
    url: str
    argv: list[str]
    color: str = "cyan"
    process: subprocess.Popen[bytes] | None = None
    started_s: float = 0.0
    quick_exits: int = 0  # deaths in a row within STABLE_MS of their start
    restart_at_s: float | None = None
    restarts: int = 0
    awaiting_ready: bool = False
    ready_path: str = "/readyz"  # etcd members: /health

    @property
    def pid(self) -> int | None:
        return None if self.process is None else self.process.pid


def exit_text(returncode: int) -> str:
    """``status 1`` or ``killed by SIGKILL``."""
    if returncode < 0:
        try:
            return f"killed by {signal.Signals(-returncode).name}"
        except ValueError:
            return f"killed by signal {-returncode}"
    return f"status {returncode}"


def _stream(name: str, color: str, pipe: IO[bytes]) -> None:
    from rich.console import Console
    from rich.text import Text

    console = Console(highlight=False, soft_wrap=True)
    width = 12
    for raw in iter(pipe.readline, b""):
        line = Text(f"{name:<{width}}| ", style=color)
        line.append(raw.decode(errors="replace").rstrip("\n"))
        console.print(line)


def ready(url: str, ca: Path | None = None, path: str = "/readyz") -> bool:
    context = None
    if ca is not None:
        from conveyor.transport.tls import TLSConfig

        context = TLSConfig(cafile=str(ca)).client_context()
    try:
        with urllib.request.urlopen(  # noqa: S310 -- our own URL
            url + path, timeout=1, context=context
        ) as response:
            return bool(response.status == 200)
    except OSError:
        return False


class Supervisor:
    """Owns the children; :meth:`tick` is called every fraction of a second."""

    def __init__(
        self,
        children: list[Child],
        env: dict[str, str],
        control: DevControl,
        *,
        restart_dead: bool,
        ca: Path | None,
    ) -> None:
        self.children = children
        self.env = dict(os.environ, PYTHONUNBUFFERED="1", **env)
        self.control = control
        self.restart_dead = restart_dead
        self.ca = ca
        for i, child in enumerate(children):
            child.color = _COLORS[i % len(_COLORS)]

    def start_all(self) -> None:
        self.control.clear()
        for child in self.children:
            self._start(child)
        self.publish()

    def _start(self, child: Child) -> None:
        child.process = subprocess.Popen(
            child.argv,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            env=self.env,
            start_new_session=True,
        )
        child.started_s = time.monotonic()
        child.restart_at_s = None
        assert child.process.stdout is not None
        threading.Thread(
            target=_stream, args=(child.name, child.color, child.process.stdout), daemon=True
        ).start()

    def wait_ready(self) -> str | None:
        """None when every child answers ``/readyz``, else why not."""
        deadline = time.monotonic() + READY_TIMEOUT_S
        pending = list(self.children)
        while pending and time.monotonic() < deadline:
            for child in list(pending):
                assert child.process is not None
                if child.process.poll() is not None:
                    return f"{child.name} exited with {exit_text(child.process.returncode)}"
                if ready(child.url, None if child.ready_path != "/readyz" else self.ca,
                         child.ready_path):  # fmt: skip
                    pending.remove(child)
            time.sleep(0.1)
        if not pending:
            return None
        return f"not ready after {READY_TIMEOUT_S:.0f}s: " + ", ".join(c.name for c in pending)

    def status(self, child: Child) -> ChildStatus:
        if child.process is not None:
            return "running"
        return "held" if self.control.held(child.name) else "exited"

    def publish(self) -> None:
        self.control.write_state(
            DevState(
                supervisor_pid=os.getpid(),
                children=[
                    DevChild(c.name, c.url, self.status(c), c.pid, c.restarts)
                    for c in self.children
                ],
                ca=None if self.ca is None else str(self.ca.resolve()),
            )
        )

    def tick(self) -> None:
        now_s = time.monotonic()
        changed = False
        for child in self.children:
            if child.process is not None and child.process.poll() is not None:
                self._died(child, now_s)
                changed = True
            if child.process is None and self._should_start(child, now_s):
                self._start(child)
                child.restarts += 1
                child.awaiting_ready = True
                print_line(f"[green]{child.name} started again (pid {child.pid})[/green]")
                changed = True
            if (
                child.awaiting_ready
                and child.process is not None
                and ready(
                    child.url, None if child.ready_path != "/readyz" else self.ca, child.ready_path
                )
            ):
                child.awaiting_ready = False
                print_line(f"[green]{child.name} is ready again[/green]")
        if changed:
            self.publish()

    def _died(self, child: Child, now_s: float) -> None:
        assert child.process is not None
        how = exit_text(child.process.returncode)
        child.process = None
        child.awaiting_ready = False
        quick = (now_s - child.started_s) * 1000 < STABLE_MS
        child.quick_exits = child.quick_exits + 1 if quick else 1
        delay_ms = restart_delay_ms(child.quick_exits)
        broker_id = child.name.removeprefix("broker-")
        command = (
            f"`conveyor dev start-broker {broker_id}` starts it"
            if broker_id.isdigit()
            else "restart `conveyor dev` to start it"
        )
        if self.control.held(child.name):
            then = f"stopped on request; {command} again"
        elif self.restart_dead:
            child.restart_at_s = now_s + delay_ms / 1000
            then = f"the others keep running; restarting it in {delay_ms / 1000:.0f}s"
        else:
            then = f"the others keep running; not restarting it (--no-restart-dead): {command}"
        print_line(f"[red]{child.name} exited ({how}): {then}[/red]")

    def _should_start(self, child: Child, now_s: float) -> bool:
        if self.control.held(child.name):
            return False
        if self.control.take_start_request(child.name):
            return True
        return child.restart_at_s is not None and now_s >= child.restart_at_s

    def stop_all(self) -> None:
        # Brokers first (they flush their logs), the coordinator last.
        for group in (self.children[1:], self.children[:1]):
            for child in group:
                if child.process is not None and child.process.poll() is None:
                    child.process.send_signal(signal.SIGTERM)
            for child in group:
                if child.process is None:
                    continue
                try:
                    child.process.wait(STOP_TIMEOUT_S)
                except subprocess.TimeoutExpired:
                    print_line(
                        f"[red]{child.name} did not stop in {STOP_TIMEOUT_S:.0f}s: killing it[/red]"
                    )
                    child.process.kill()
                    child.process.wait()
        self.control.clear()
