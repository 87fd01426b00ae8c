"""Real coordinator and broker processes for a chaos run, each on its own loopback address.

The coordinator listens on 127.0.0.10 and broker N on 127.0.0.(10+N), so that network
faults can match one service by address. Outbound connections on loopback leave from
127.0.0.1 whatever the listening address, so (as root) each service also runs with its own
group id, which :mod:`conveyor.chaos.netfault` uses to tell who opened a connection.
"""

from __future__ import annotations

import logging
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Final

from conveyor.chaos.netfault import address_of, gid_of

log = logging.getLogger(__name__)

READY_TIMEOUT_S: Final = 30.0
SESSION_TIMEOUT_MS: Final = 3000
HEARTBEAT_INTERVAL_MS: Final = 500


def free_port(host: str) -> int:
    with socket.socket() as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


def wait_for(condition: Callable[[], bool], timeout_s: float, interval_s: float = 0.05) -> bool:
    """Poll ``condition`` until true or ``timeout_s`` passes; whether it became true."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(interval_s)
    return False


def http_ok(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=1) as response:  # noqa: S310 -- our own URL
            return bool(response.status == 200)
    except OSError:
        return False


@dataclass
class Service:
    name: str
    host: str
    port: int
    argv: list[str]
    data_dir: Path
    log_path: Path
    gid: int | None = None  # the group id to run with (root only): marks its connections
    process: subprocess.Popen[bytes] | None = None
    paused: bool = False

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    def start(self) -> None:
        self.data_dir.mkdir(parents=True, exist_ok=True)
        with self.log_path.open("ab") as log_file:
            env = dict(os.environ, PYTHONUNBUFFERED="1")
            self.process = subprocess.Popen(
                self.argv, stdout=log_file, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                env=env, start_new_session=True, group=self.gid,
                extra_groups=None if self.gid is None else [],
            )  # fmt: skip
        self.paused = False

    def alive(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def ready(self) -> bool:
        return self.alive() and http_ok(self.url + "/readyz")

    def signal(self, signum: signal.Signals) -> None:
        if self.alive():
            assert self.process is not None
            self.process.send_signal(signum)
            self.paused = signum == signal.SIGSTOP

    def kill(self) -> None:
        """SIGKILL, as a crash or power loss would; waits until the process is gone."""
        if self.process is not None and self.process.poll() is None:
            self.process.kill()
            self.process.wait(10)
        self.paused = False

    def stop(self, timeout_s: float = 10.0) -> None:
        if self.process is None or self.process.poll() is not None:
            return
        if self.paused:
            self.process.send_signal(signal.SIGCONT)
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


def _gid(party: int) -> int | None:
    return gid_of(party) if os.geteuid() == 0 else None


@dataclass
class ChaosCluster:
    root: Path
    broker_count: int = 3
    coordinator: Service | None = None
    brokers: dict[int, Service] = field(default_factory=dict)

    @property
    def url(self) -> str:
        assert self.coordinator is not None
        return self.coordinator.url

    def parties(self) -> list[int]:
        """Service indexes as :mod:`conveyor.chaos.netfault` names them."""
        return [0, *self.brokers]

    def services(self) -> list[Service]:
        return [s for s in (self.coordinator, *self.brokers.values()) if s is not None]

    def start(self) -> None:
        python = [sys.executable, "-m"]
        host = address_of(0)
        port = free_port(host)
        self.coordinator = Service(
            "coordinator", host, port,
            [*python, "conveyor.coordinator", "--listen", f"{host}:{port}",
             "--data", str(self.root / "coordinator"),
             "--session-timeout-ms", str(SESSION_TIMEOUT_MS),
             "--heartbeat-interval-ms", str(HEARTBEAT_INTERVAL_MS)],
            self.root / "coordinator", self.root / "coordinator.log", _gid(0),
        )  # fmt: skip
        self.coordinator.start()
        for broker_id in range(1, self.broker_count + 1):
            host = address_of(broker_id)
            port = free_port(host)
            self.brokers[broker_id] = Service(
                f"broker-{broker_id}", host, port,
                [*python, "conveyor.broker", "--id", str(broker_id),
                 "--listen", f"{host}:{port}", "--coordinator", self.url,
                 "--data", str(self.root / f"broker-{broker_id}")],
                self.root / f"broker-{broker_id}", self.root / f"broker-{broker_id}.log",
                _gid(broker_id),
            )  # fmt: skip
        if not wait_for(self.coordinator.ready, READY_TIMEOUT_S):
            raise RuntimeError(f"coordinator not ready:\n{self.coordinator.tail()}")
        for broker in self.brokers.values():
            broker.start()
        self.wait_ready()

    def wait_ready(self, timeout_s: float = READY_TIMEOUT_S) -> None:
        for service in self.services():
            if not service.alive():
                service.start()
            if not wait_for(service.ready, timeout_s):
                raise RuntimeError(f"{service.name} not ready:\n{service.tail()}")

    def stop(self) -> None:
        for broker in self.brokers.values():
            broker.stop()
        if self.coordinator is not None:
            self.coordinator.stop()
