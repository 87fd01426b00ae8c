"""``--local N``: a throwaway cluster (a coordinator and N brokers) for one benchmark run.

Each service is a child process on a free 127.0.0.1 port with its data in a temporary
directory, its output in a log file beside the data (shown when it fails to start). Stopped
by PID (SIGTERM, then SIGKILL after a grace period) and the directory removed. CPU time and
peak RSS of the brokers come from /proc, so a run can report the server's cost too.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import Final

READY_TIMEOUT_S: Final = 60.0
STOP_TIMEOUT_S: Final = 20.0
_CLOCK_TICKS: Final = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class _Service:
    name: str
    argv: list[str]
    url: str
    log_path: Path
    process: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        with self.log_path.open("ab") as log_file:
            self.process = subprocess.Popen(
                self.argv,
                stdout=log_file,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                env=dict(os.environ, PYTHONUNBUFFERED="1"),
                start_new_session=True,  # a Ctrl-C of the benchmark reaches us, not them
            )

    def ready(self) -> bool:
        try:
            with urllib.request.urlopen(self.url + "/readyz", timeout=1) as response:  # noqa: S310 -- our own http URL
                return bool(response.status == 200)
        except OSError:
            return False

    def alive(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def stop(self) -> None:
        process = self.process
        if process is None or process.poll() is not None:
            return
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(STOP_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(5)

    def cpu_s(self) -> float:
        """User + system CPU seconds so far (Linux; 0.0 elsewhere or once it exited)."""
        if self.process is None:
            return 0.0
        try:
            stat = Path(f"/proc/{self.process.pid}/stat").read_text()
        except OSError:
            return 0.0
        fields = stat.rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / _CLOCK_TICKS

    def rss_peak_bytes(self) -> int:
        if self.process is None:
            return 0
        try:
            status = Path(f"/proc/{self.process.pid}/status").read_text()
        except OSError:
            return 0
        for line in status.splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
        return 0


def _pin(service: _Service, index: int) -> None:
    """Keep the broker on one CPU; a no-op where the platform cannot."""
    cpus = sorted(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else []
    if cpus and service.process is not None:
        os.sched_setaffinity(service.process.pid, {cpus[index % len(cpus)]})


@dataclass
class LocalCluster:
    """``with LocalCluster(3) as cluster: cluster.url``; see the module docstring."""

    brokers: int
    flush: str | None = None  # None: each topic's own policy (default always)
    pin_brokers: bool = False  # broker i on CPU (i - 1) mod CPUs (Linux), for scaling runs
    parent_dir: Path | None = None
    root: Path = field(init=False)
    coordinator: _Service = field(init=False)
    broker_services: list[_Service] = field(init=False, default_factory=list)

    @property
    def url(self) -> str:
        return self.coordinator.url

    def __enter__(self) -> LocalCluster:
        self.root = Path(tempfile.mkdtemp(prefix="conveyor-bench-", dir=self.parent_dir))
        try:
            self._start()
        except BaseException:
            self.close()
            raise
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def _start(self) -> None:
        python = [sys.executable, "-m"]
        port = free_port()
        url = f"http://127.0.0.1:{port}"
        self.coordinator = _Service(
            "coordinator",
            [
                *python,
                "conveyor.coordinator",
                "--listen",
                f"127.0.0.1:{port}",
                "--data",
                str(self.root / "coordinator"),
                "--log-level",
                "WARNING",
            ],
            url,
            self.root / "coordinator.log",
        )
        self.coordinator.start()
        self._wait_ready([self.coordinator])
        for broker_id in range(1, self.brokers + 1):
            broker_port = free_port()
            kafka_port = free_port()  # Kafka clients' way in (--client confluent-kafka...)
            flush = [] if self.flush is None else ["--flush", self.flush]
            service = _Service(
                f"broker-{broker_id}",
                [
                    *python,
                    "conveyor.broker",
                    "--id",
                    str(broker_id),
                    "--listen",
                    f"127.0.0.1:{broker_port}",
                    "--coordinator",
                    url,
                    "--data",
                    str(self.root / f"broker-{broker_id}"),
                    "--log-level",
                    "WARNING",
                    "--kafka-listen",
                    f"127.0.0.1:{kafka_port}",
                    *flush,
                ],
                f"http://127.0.0.1:{broker_port}",
                self.root / f"broker-{broker_id}.log",
            )
            service.start()
            self.broker_services.append(service)
            if self.pin_brokers:
                _pin(service, broker_id - 1)
        self._wait_ready(self.broker_services)

    def _wait_ready(self, services: list[_Service]) -> None:
        deadline = time.monotonic() + READY_TIMEOUT_S
        waiting = list(services)
        while waiting:
            for service in list(waiting):
                if not service.alive():
                    raise RuntimeError(f"{service.name} exited at start:\n{self._log(service)}")
                if service.ready():
                    waiting.remove(service)
            if waiting and time.monotonic() > deadline:
                names = ", ".join(s.name for s in waiting)
                raise RuntimeError(f"not ready after {READY_TIMEOUT_S:.0f}s: {names}")
            if waiting:
                time.sleep(0.05)

    @staticmethod
    def _log(service: _Service) -> str:
        try:
            return service.log_path.read_text(errors="replace")[-4000:]
        except OSError:
            return ""

    def broker_cpu_s(self) -> float:
        return sum(service.cpu_s() for service in self.broker_services)

    def broker_rss_peak_bytes(self) -> int:
        return max((service.rss_peak_bytes() for service in self.broker_services), default=0)

    def broker_pids(self) -> list[int]:
        return [s.process.pid for s in self.broker_services if s.process is not None]

    def close(self) -> None:
        """Brokers first (they flush and deregister), then the coordinator; remove data."""
        for service in self.broker_services:
            service.stop()
        if hasattr(self, "coordinator"):
            self.coordinator.stop()
        shutil.rmtree(self.root, ignore_errors=True)
