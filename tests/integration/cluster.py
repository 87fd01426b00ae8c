"""Start real coordinator and broker processes on 127.0.0.1 for integration tests.

Each process gets a free port and its own data directory; its stderr goes to a log file
beside the data, printed when a wait fails, so a failing test shows what the services said.
"""

from __future__ import annotations

import os
import random
import signal
import socket
import ssl
import subprocess
import sys
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from tests.waiting import wait_for

__all__ = ["Cluster", "DevRun", "conveyor_dev", "free_port", "http_ok", "wait_for"]

# Set (by tests/integration/conftest.py under CONVEYOR_TEST_TLS=1) to a certs directory:
# every Cluster then serves HTTPS with mutual TLS on internal routes.
TLS_DIR_ENV = "CONVEYOR_TEST_TLS_DIR"
# A service answers /readyz within a second or two on a quiet machine; the deadline is for
# a loaded one (CI runners, parallel test workers), where a start can take far longer.
READY_TIMEOUT_S = 60.0


# Ports for the services tests start: below the kernel's ephemeral range (32768 and up,
# where every outgoing connection takes its port, so a port found free there can be taken
# before the service binds it), one slice per pytest-xdist worker (parallel workers never
# hand out the same port), handed out in turn within the slice and checked free. Two
# pytest sessions side by side (make test: every suite, and the HTTPS pass) each get their
# own part of the range, CONVEYOR_TEST_PORTS=FIRST-END: their workers gw0, gw1... would
# otherwise share slices, and one session's port, checked free, was bound by the other's
# service before its own service bound it ("address already in use").
_PORT_GAP = 8


def _port_range() -> tuple[int, int]:
    first, _, end = os.environ.get("CONVEYOR_TEST_PORTS", "20000-32000").partition("-")
    return int(first), int(end)


def _port_slice() -> range:
    ports_first, ports_end = _port_range()
    worker = os.environ.get("PYTEST_XDIST_WORKER", "gw0").removeprefix("gw")
    workers = int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1"))
    index = int(worker) if worker.isdigit() else 0
    size = (ports_end - ports_first) // max(workers, 1)
    first = ports_first + size * (index % max(workers, 1))
    return range(first, first + size)


_PORTS = _port_slice()
_cursor = [_PORTS.start + random.randrange(len(_PORTS))]  # the next port to try


def free_port() -> int:
    return free_port_block(1)


def free_port_block(count: int) -> int:
    """A base port with ``count`` consecutive free ports (conveyor dev uses PORT..PORT+N)."""
    for _ in range(len(_PORTS)):
        base = _cursor[0]
        if base + count > _PORTS.stop:
            base = _PORTS.start
        # a gap after each block: a test that takes one port for `conveyor dev --port P`
        # and the next for something else must not get P+1, which dev gives broker 1
        _cursor[0] = base + count + _PORT_GAP
        sockets = []
        try:
            for port in range(base, base + count):
                s = socket.socket()
                sockets.append(s)
                s.bind(("127.0.0.1", port))
            return base
        except OSError:
            continue
        finally:
            for s in sockets:
                s.close()
    raise RuntimeError(f"no block of {count} free ports in {_PORTS}")


def http_ok(url: str, context: ssl.SSLContext | None = None) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=1, context=context) as response:
            return bool(response.status == 200)
    except OSError:
        return False


@dataclass
class Service:
    name: str
    argv: list[str]
    port: int
    data_dir: Path
    log_path: Path
    process: subprocess.Popen[bytes] | None = None
    ca: Path | None = None  # set when the service serves HTTPS
    kafka_port: int | None = None  # a broker's Kafka listener (TLS when ``ca`` is set)
    env: dict[str, str] = field(default_factory=dict)  # over the test process's environment
    _terminated: bool = field(default=False, repr=False)  # SIGTERM sent to this process

    @property
    def url(self) -> str:
        scheme = "http" if self.ca is None else "https"
        return f"{scheme}://127.0.0.1:{self.port}"

    def ssl_context(self) -> ssl.SSLContext | None:
        if self.ca is None:
            return None
        return ssl.create_default_context(cafile=str(self.ca))

    def start(self) -> None:
        self.data_dir.mkdir(parents=True, exist_ok=True)
        log_file = self.log_path.open("ab")
        env = dict(os.environ, PYTHONUNBUFFERED="1", **self.env)
        self._terminated = False
        self.process = subprocess.Popen(
            self.argv, stdout=log_file, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, env=env
        )
        log_file.close()

    def wait_ready(self, timeout_s: float = READY_TIMEOUT_S) -> None:
        try:
            wait_for(
                lambda: self.alive() and http_ok(self.url + "/readyz", self.ssl_context()),
                timeout_s,
                f"{self.name} ready",
            )
        except TimeoutError:
            raise TimeoutError(f"{self.name} not ready; its log:\n{self.log()}") from None

    def alive(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def log(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")[-6000:]
        except FileNotFoundError:
            return ""

    def terminate(self) -> None:
        """SIGTERM without waiting (``stop`` waits): lets a cluster stop its brokers at once.
        Sent once per process: a second one during its shutdown would kill it (the
        services restore the default handler once they are stopping)."""
        if self.process is not None and self.process.poll() is None and not self._terminated:
            self._terminated = True
            self.process.send_signal(signal.SIGTERM)

    def stop(self, timeout_s: float = 15.0) -> int | None:
        """SIGTERM and wait (graceful); SIGKILL if it does not exit in time."""
        if self.process is None or self.process.poll() is not None:
            return None if self.process is None else self.process.returncode
        self.terminate()
        try:
            return self.process.wait(timeout_s)
        except subprocess.TimeoutExpired:
            self.process.kill()
            return self.process.wait(5)

    def kill(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.kill()
            self.process.wait(5)


@dataclass
class Cluster:
    root: Path
    broker_count: int = 1
    coordinator_args: list[str] = field(default_factory=list)
    broker_args: list[str] = field(default_factory=list)
    coordinator: Service | None = None
    brokers: dict[int, Service] = field(default_factory=dict)
    # HTTPS everywhere with certificates from ``conveyor certs init`` in this directory,
    # and mutual TLS on internal routes (brokers present the server certificate).
    tls_dir: Path | None = None
    internal_mtls: bool = True
    # every broker serves the Kafka protocol on a free port; False: --kafka-listen off;
    # "default": no Kafka flag (the broker's own choice, listed by the coordinator)
    kafka: bool | Literal["default"] = True
    # Variables for every service it starts, never the test process's own environment
    # (CONVEYOR_CLUSTER_SECRET, say: other tests in the process must not see it).
    env: dict[str, str] = field(default_factory=dict)

    def tls_argv(self) -> list[str]:
        if self.tls_dir is None:
            return []
        d = self.tls_dir
        return [
            "--tls-cert",
            str(d / "server.pem"),
            "--tls-key",
            str(d / "server-key.pem"),
            "--ca",
            str(d / "ca.pem"),
            *(["--internal-mtls"] if self.internal_mtls else []),
        ]

    @property
    def ca(self) -> Path | None:
        return None if self.tls_dir is None else self.tls_dir / "ca.pem"

    @property
    def url(self) -> str:
        assert self.coordinator is not None
        return self.coordinator.url

    @property
    def bootstrap(self) -> str:
        """Kafka clients' ``bootstrap.servers``: every broker's Kafka listener."""
        return ",".join(
            f"127.0.0.1:{b.kafka_port}" for b in self.brokers.values() if b.kafka_port is not None
        )

    def start(self) -> Cluster:
        """Start everything and wait until it serves; on failure stop what was started
        (else its processes outlive the fixture and their ``Popen`` objects warn in a
        later, innocent test), then raise."""
        try:
            self._start()
        except BaseException:
            self.stop()
            raise
        return self

    def _start(self) -> None:
        if self.tls_dir is None and os.environ.get(TLS_DIR_ENV):
            # The suite's HTTPS mode; no mutual TLS, since tests play brokers with plain
            # clients (test_tls.py covers mutual TLS).
            self.tls_dir = Path(os.environ[TLS_DIR_ENV])
            self.internal_mtls = False
        port = free_port()
        self.coordinator = Service(
            "coordinator",
            [
                sys.executable,
                "-m",
                "conveyor.coordinator",
                "--listen",
                f"127.0.0.1:{port}",
                "--data",
                str(self.root / "coordinator"),
                *self.tls_argv(),
                *self.coordinator_args,
            ],
            port,
            self.root / "coordinator",
            self.root / "coordinator.log",
            ca=self.ca,
            env=self.env,
        )
        self.coordinator.start()
        self.coordinator.wait_ready()
        for broker_id in range(1, self.broker_count + 1):
            self.add_broker(broker_id, wait=False)
        for broker in self.brokers.values():
            broker.wait_ready()

    def add_broker(self, broker_id: int, wait: bool = True) -> Service:
        port = free_port()
        kafka_port = free_port() if self.kafka is True else None
        kafka_argv = ["--kafka-listen", "off" if kafka_port is None else f"127.0.0.1:{kafka_port}"]
        if self.kafka == "default":
            kafka_argv = []
        broker = Service(
            f"broker-{broker_id}",
            [
                sys.executable,
                "-m",
                "conveyor.broker",
                "--id",
                str(broker_id),
                "--listen",
                f"127.0.0.1:{port}",
                "--coordinator",
                self.url,
                "--data",
                str(self.root / f"broker-{broker_id}"),
                *self.tls_argv(),
                *kafka_argv,
                *self.broker_args,
            ],
            port,
            self.root / f"broker-{broker_id}",
            self.root / f"broker-{broker_id}.log",
            ca=self.ca,
            kafka_port=kafka_port,
            env=self.env,
        )
        self.brokers[broker_id] = broker
        broker.start()
        if wait:
            broker.wait_ready()
        return broker

    def restart(self) -> None:
        """Stop everything gracefully and start again on the same ports and data."""
        self.stop()
        assert self.coordinator is not None
        self.coordinator.start()
        self.coordinator.wait_ready()
        for broker in self.brokers.values():
            broker.start()
        for broker in self.brokers.values():
            broker.wait_ready()

    def stop(self) -> None:
        # Every broker's graceful shutdown at once (each takes about half a second, most of
        # it the interpreter's exit), then the coordinator's, as before.
        for broker in self.brokers.values():
            broker.terminate()
        for broker in self.brokers.values():
            broker.stop()
        if self.coordinator is not None:
            self.coordinator.stop()

    def logs(self) -> str:
        services = [self.coordinator, *self.brokers.values()]
        return "\n".join(f"==== {s.name}\n{s.log()}" for s in services if s is not None)


@dataclass(frozen=True)
class DevRun:
    port: int  # the coordinator's; broker 1 is on port + 1
    data: Path
    log_path: Path

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")


@contextmanager
def conveyor_dev(tmp_path: Path, *dev_args: str) -> Iterator[DevRun]:
    """``conveyor dev --brokers 1 DEV_ARGS`` on free ports, its data in ``tmp_path/dev``
    and its output in ``tmp_path/dev.log``; stopped as its user stops it (Ctrl-C: SIGINT)."""
    run = DevRun(free_port_block(2), tmp_path / "dev", tmp_path / "dev.log")
    argv = [sys.executable, "-m", "conveyor", "dev", "--brokers", "1", *dev_args]
    argv += ["--port", str(run.port), "--data", str(run.data)]
    with run.log_path.open("ab") as log:
        dev = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
    try:
        yield run
    finally:
        if dev.poll() is None:
            dev.send_signal(signal.SIGINT)
            dev.wait(60)
