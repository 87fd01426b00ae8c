"""Real coordinator and broker processes for a chaos run, each on its own loopback address.

The coordinator listens on 127.0.0.10 and broker N on 127.0.0.(10+N), so that network
faults can match one service by address. Outbound connections on loopback leave from
127.0.0.1 whatever the listening address, so (as root) each service also runs with its own
group id, which :mod:`conveyor.chaos.netfault` uses to tell who opened a connection.
"""

from __future__ import annotations

import json
import logging
import os
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
from conveyor.cli.child import ChildProcess
from conveyor.cli.etcd_local import LocalEtcd

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
class Service(ChildProcess):
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
        self.spawn(self.argv, dict(os.environ, PYTHONUNBUFFERED="1"))

    def ready(self) -> bool:
        return self.alive() and http_ok(self.url + "/readyz")


def _gid(party: int) -> int | None:
    return gid_of(party) if os.geteuid() == 0 else None


# --ha: parties (netfault indexes) of the standby coordinators and the etcd members
STANDBY_PARTIES: Final = (50, 51)
ETCD_PARTIES: Final = (40, 41, 42)
HA_LEASE_TTL_MS: Final = 2000


@dataclass
class ChaosCluster:
    root: Path
    broker_count: int = 3
    coordinator: Service | None = None
    brokers: dict[int, Service] = field(default_factory=dict)
    # --ha: three coordinators on a 3-member etcd (coordinator is the first of them)
    ha: bool = False
    coordinators: list[Service] = field(default_factory=list)
    etcd: LocalEtcd | None = None

    @property
    def url(self) -> str:
        """The coordinators' URLs, comma-separated (clients find the active one)."""
        assert self.coordinator is not None
        return ",".join(c.url for c in self.coordinators) or self.coordinator.url

    def parties(self) -> list[int]:
        """Service indexes as :mod:`conveyor.chaos.netfault` names them."""
        extra = [*STANDBY_PARTIES, *ETCD_PARTIES] if self.ha else []
        return [0, *self.brokers, *extra]

    def services(self) -> list[Service]:
        return [*self.coordinators, *self.brokers.values()]

    def _coordinator(self, index: int, party: int) -> Service:
        python = [sys.executable, "-m"]
        host = address_of(party)
        port = free_port(host)
        name = "coordinator" if index == 0 else f"coordinator-{index}"
        argv = [*python, "conveyor.coordinator", "--listen", f"{host}:{port}",
                "--data", str(self.root / name),
                "--session-timeout-ms", str(SESSION_TIMEOUT_MS),
                "--heartbeat-interval-ms", str(HEARTBEAT_INTERVAL_MS),
                # the consumers' 3 s session: over Kafka (KIP-848) the coordinator sets it
                # (a member's own session_timeout_ms is not on the wire), 10 s by default
                "--group-consumer-session-timeout-ms", str(SESSION_TIMEOUT_MS)]  # fmt: skip
        if self.etcd is not None:
            argv += ["--store", self.etcd.store_url, "--prefix", "/conveyor/chaos",
                     "--lease-ttl-ms", str(HA_LEASE_TTL_MS), "--log-format", "json"]  # fmt: skip
        return Service(
            name, host, port, argv, self.root / name, self.root / f"{name}.log", _gid(party)
        )

    def start(self) -> None:
        python = [sys.executable, "-m"]
        if self.ha:
            self.etcd = LocalEtcd(
                self.root / "etcd", 3, hosts=[address_of(p) for p in ETCD_PARTIES],
                gids=[_gid(p) for p in ETCD_PARTIES],
            )  # fmt: skip
            self.etcd.start()
            for index, party in enumerate((0, *STANDBY_PARTIES)):
                self.coordinators.append(self._coordinator(index, party))
            for service in self.coordinators:
                service.start()
        else:
            self.coordinators = []
            self.coordinators.append(self._coordinator(0, 0))
            self.coordinators[0].start()
        self.coordinator = self.coordinators[0]
        for broker_id in range(1, self.broker_count + 1):
            host = address_of(broker_id)
            port = free_port(host)
            # the workloads' clients speak Kafka to the brokers (docs/client.md): a fixed
            # port, so a restarted broker is found where it was
            kafka = f"{host}:{free_port(host)}"
            self.brokers[broker_id] = Service(
                f"broker-{broker_id}", host, port,
                [*python, "conveyor.broker", "--id", str(broker_id),
                 "--listen", f"{host}:{port}", "--kafka-listen", kafka,
                 "--coordinator", self.url,
                 "--data", str(self.root / f"broker-{broker_id}"),
                 "--cleaner-backoff-ms", "500"],
                self.root / f"broker-{broker_id}", self.root / f"broker-{broker_id}.log",
                _gid(broker_id),
            )  # fmt: skip
        for coordinator in self.coordinators:
            if not wait_for(coordinator.ready, READY_TIMEOUT_S):
                raise RuntimeError(f"{coordinator.name} not ready:\n{coordinator.tail()}")
        if self.ha and not wait_for(lambda: self.active() is not None, READY_TIMEOUT_S):
            raise RuntimeError(f"no coordinator active:\n{self.coordinator.tail()}")
        for broker in self.brokers.values():
            broker.start()
        self.wait_ready()

    def parties_for(self, broker_count: int) -> list[int]:
        """Every party of the cluster to be started (the nftables marks come first)."""
        extra = [*STANDBY_PARTIES, *ETCD_PARTIES] if self.ha else []
        return [0, *range(1, broker_count + 1), *extra]

    def party_of(self, coordinator: Service) -> int:
        """A coordinator's netfault party: 0 for the first, then ``STANDBY_PARTIES``."""
        return (0, *STANDBY_PARTIES)[self.coordinators.index(coordinator)]

    def active(self) -> Service | None:
        """The coordinator that says it is active (with --ha), if exactly one does."""
        found = [c for c in self.coordinators if c.alive() and _role(c) == "active"]
        return found[0] if len(found) == 1 else None

    def wait_ready(self, timeout_s: float = READY_TIMEOUT_S) -> None:
        if self.etcd is not None:
            for member in self.etcd.members:
                if not member.alive():
                    self.etcd.start_member(member)
            self.etcd.wait_healthy(timeout_s)
        for service in self.services():
            if not service.alive():
                service.start()
            if not wait_for(service.ready, timeout_s):
                raise RuntimeError(f"{service.name} not ready:\n{service.tail()}")

    def stop(self) -> None:
        for broker in self.brokers.values():
            broker.stop()
        for coordinator in self.coordinators:
            coordinator.stop()
        if self.etcd is not None:
            self.etcd.stop()


def _role(service: Service) -> str | None:
    try:
        with urllib.request.urlopen(service.url + "/v1/coordinator", timeout=1) as answer:  # noqa: S310 -- our own URL
            role = json.load(answer).get("role")
            return role if isinstance(role, str) else None
    except (OSError, ValueError):
        return None
