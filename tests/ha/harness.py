"""Real processes for the high-availability tests: several coordinators on one etcd prefix
and brokers that know every coordinator. Logs are JSON so that ``chaos/ha.py`` can read
every coordinator's epochs and actions."""

from __future__ import annotations

import json
import signal
import sys
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from conveyor.chaos.ha import HaEvent, parse_log, two_actives
from conveyor.cli.etcd_local import LocalEtcd
from tests.integration.cluster import Service, free_port, wait_for


def status(url: str) -> dict[str, Any] | None:
    try:
        with urllib.request.urlopen(url + "/v1/coordinator", timeout=1) as response:
            found: dict[str, Any] = json.load(response)
            return found
    except (OSError, ValueError):
        return None


@dataclass
class HaCluster:
    root: Path
    etcd: LocalEtcd
    prefix: str
    coordinator_count: int = 3
    broker_count: int = 2
    lease_ttl_ms: int = 2000
    session_timeout_ms: int = 3000
    extra_args: list[str] = field(default_factory=list)  # to every coordinator and broker
    console: bool = False  # serve the web console (tests/ha/test_console_ha.py)
    coordinators: list[Service] = field(default_factory=list)
    brokers: dict[int, Service] = field(default_factory=dict)

    @property
    def urls(self) -> str:
        return ",".join(c.url for c in self.coordinators)

    def coordinator_argv(self, index: int, port: int) -> list[str]:
        return [
            sys.executable, "-m", "conveyor.coordinator",
            "--listen", f"127.0.0.1:{port}",
            "--data", str(self.root / f"coordinator-{index}"),
            "--store", self.etcd.store_url, "--prefix", self.prefix,
            "--lease-ttl-ms", str(self.lease_ttl_ms),
            "--session-timeout-ms", str(self.session_timeout_ms),
            "--heartbeat-interval-ms", "300",
            "--log-format", "json", *([] if self.console else ["--no-console"]),
            *self.extra_args,
        ]  # fmt: skip

    def start(self) -> HaCluster:
        """Start everything and wait until it serves; on failure stop what was started, so
        no process outlives the test (a later test of the worker would fail on its
        Popen's ResourceWarning)."""
        try:
            return self._start()
        except BaseException:
            self.stop()
            raise

    def _start(self) -> HaCluster:
        for index in range(self.coordinator_count):
            port = free_port()
            service = Service(
                f"coordinator-{index}", self.coordinator_argv(index, port), port,
                self.root / f"coordinator-{index}", self.root / f"coordinator-{index}.log",
            )  # fmt: skip
            service.start()
            self.coordinators.append(service)
        for service in self.coordinators:
            service.wait_ready()
        self.wait_active()
        for broker_id in range(1, self.broker_count + 1):
            self.start_broker(broker_id)
        for broker in self.brokers.values():
            # the 60 s every test cluster gets to start (tests/integration/cluster.py): a
            # broker's start took over 30 s with make test's two sessions on a loaded host
            broker.wait_ready()
        return self

    def start_broker(self, broker_id: int) -> Service:
        broker = self.brokers.get(broker_id)
        if broker is None:
            port = free_port()
            # the clients' data path is the brokers' Kafka listeners (docs/client.md)
            kafka = f"127.0.0.1:{free_port()}"
            argv = [
                sys.executable, "-m", "conveyor.broker", "--id", str(broker_id),
                "--listen", f"127.0.0.1:{port}", "--kafka-listen", kafka,
                "--coordinator", self.urls,
                "--data", str(self.root / f"broker-{broker_id}"), *self.extra_args,
            ]  # fmt: skip
            broker = Service(
                f"broker-{broker_id}", argv, port, self.root / f"broker-{broker_id}",
                self.root / f"broker-{broker_id}.log",
            )  # fmt: skip
            self.brokers[broker_id] = broker
        broker.start()
        return broker

    def statuses(self) -> list[dict[str, Any] | None]:
        return [status(c.url) if c.alive() else None for c in self.coordinators]

    def active(self) -> int | None:
        """The index of the one coordinator that says it is active (None: none or two)."""
        found = [i for i, s in enumerate(self.statuses()) if s and s.get("role") == "active"]
        return found[0] if len(found) == 1 else None

    def wait_active(self, timeout_s: float = 20.0, *, other_than: int | None = None) -> int:
        chosen: list[int] = []

        def one() -> bool:
            index = self.active()
            if index is None or index == other_than:
                return False
            chosen.append(index)
            return True

        wait_for(one, timeout_s, "one active coordinator", interval_s=0.02)
        return chosen[-1]

    def epoch(self, index: int) -> int:
        found = status(self.coordinators[index].url)
        assert found is not None
        return int(found.get("epoch", 0))

    def pause(self, index: int) -> None:
        process = self.coordinators[index].process
        assert process is not None
        process.send_signal(signal.SIGSTOP)

    def resume(self, index: int) -> None:
        process = self.coordinators[index].process
        assert process is not None
        process.send_signal(signal.SIGCONT)

    def events(self) -> list[HaEvent]:
        events: list[HaEvent] = []
        for service in self.coordinators:
            text = service.log_path.read_text(errors="replace") if service.log_path.exists() else ""
            events += parse_log(service.name, text.splitlines())
        return events

    def check_no_two_actives(self) -> list[HaEvent]:
        events = self.events()
        problems = two_actives(events)
        assert not problems, "\n".join(problems)
        return events

    def stop(self) -> None:
        for broker in self.brokers.values():
            broker.stop()
        for index, service in enumerate(self.coordinators):
            if service.alive():
                self.resume(index)  # a paused process cannot handle SIGTERM
            service.stop()


def measure(action: Any, condition: Any, timeout_s: float, what: str) -> float:
    """Seconds from ``action()`` until ``condition()`` holds."""
    started = time.monotonic()
    action()
    wait_for(condition, timeout_s, what, interval_s=0.02)
    return time.monotonic() - started
