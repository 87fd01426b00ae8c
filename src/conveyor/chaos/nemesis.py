"""The nemesis: carries out a :mod:`conveyor.chaos.schedule` against a live cluster.

Each fault is recorded in the history as ``fault`` then ``heal`` (process ``nemesis``), so
the checker can measure availability during faults and recovery after each heal.
"""

from __future__ import annotations

import logging
import os
import random
import signal
import subprocess
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Final

import conveyor
from conveyor.chaos import netfault
from conveyor.chaos.cluster import ChaosCluster, Service, address_of
from conveyor.chaos.history import History
from conveyor.chaos.schedule import FaultEvent
from conveyor.chaos.workload import TOPIC, Workload
from conveyor.client.errors import ConveyorError

log = logging.getLogger(__name__)

TMPFS_SIZE: Final = "48m"
FILLER_NAME: Final = "chaos-filler"
_Heal = Callable[[], None]


class Nemesis:
    def __init__(
        self, cluster: ChaosCluster, workload: Workload, history: History, seed: int
    ) -> None:
        self.cluster = cluster
        self.workload = workload
        self.history = history
        self.rng = random.Random(seed ^ 0x5EED)  # byte choices for torn writes
        self.stopped = threading.Event()

    def run(self, events: list[FaultEvent], start: float) -> None:
        """Apply ``events`` at their times (seconds after ``start``, monotonic)."""
        for event in events:
            if self.stopped.wait(max(0.0, start + event.start_s - time.monotonic())):
                return
            self.apply(event)

    def apply(self, event: FaultEvent) -> None:
        value = {"id": event.id, "fault": event.kind, "target": event.target}
        self.history.record("nemesis", "invoke", "fault", value)
        try:
            heal = self._begin(event)
        except (OSError, RuntimeError, ConveyorError, subprocess.SubprocessError) as e:
            self.history.record("nemesis", "fail", "fault", value, error=repr(e))
            return
        self.history.record("nemesis", "ok", "fault", value)
        self.stopped.wait(event.hold_s)
        self.history.record("nemesis", "invoke", "heal", value)
        try:
            heal()
        finally:
            self.history.record("nemesis", "ok", "heal", value)

    def _begin(self, event: FaultEvent) -> _Heal:
        kind, target = event.kind, event.target
        if kind in ("kill", "kill-leader", "kill-coordinator"):
            return self._kill(self._victim(kind, target))
        if kind == "kill-consumer":
            self.workload.crash_consumer(target)
            return _nothing
        if kind in ("pause", "pause-coordinator"):
            service = self._victim(kind, target)
            service.signal(signal.SIGSTOP)
            return lambda: service.signal(signal.SIGCONT)
        if kind in ("partition", "partition-coordinator"):
            netfault.isolate([address_of(target)])
            return netfault.heal
        if kind == "torn-write":
            return self._torn_write(self.cluster.brokers[target])
        return self._fill_disk(self.cluster.brokers[target])  # disk-full

    def _victim(self, kind: str, target: int) -> Service:
        if kind == "kill-leader":
            return self._leader_of(target)
        if target == 0:
            return self._coordinator()
        return self.cluster.brokers[target]

    def _coordinator(self) -> Service:
        assert self.cluster.coordinator is not None
        return self.cluster.coordinator

    def _leader_of(self, partition: int) -> Service:
        with conveyor.Admin(self.cluster.url) as admin:
            leader = admin.describe_topic(TOPIC).partitions[partition].leader
        if leader is None:
            raise RuntimeError(f"partition {partition} has no leader to kill")
        return self.cluster.brokers[leader]

    def _kill(self, service: Service) -> _Heal:
        service.kill()
        return service.start

    def _torn_write(self, broker: Service) -> _Heal:
        """SIGKILL, then append the first bytes of a real batch (a plausible header with a
        short body) to the newest segment of one partition, as a write cut by a crash."""
        broker.kill()
        segments = sorted(broker.data_dir.rglob("*.log"), key=lambda p: (p.parent, p.name))
        segments = [s for s in segments if s.stat().st_size > 0]
        if segments:
            victim = self.rng.choice(segments)
            head = victim.read_bytes()[:4096]
            cut = self.rng.randrange(1, max(2, min(len(head), 200)))
            with victim.open("ab") as out:
                out.write(head[:cut])
            log.info("torn write: appended %d bytes to %s", cut, victim)
        return broker.start

    def _fill_disk(self, broker: Service) -> _Heal:
        filler = broker.data_dir / FILLER_NAME
        if not os.path.ismount(broker.data_dir):
            raise RuntimeError(f"{broker.data_dir} is not a tmpfs mount (needs root)")
        chunk = b"\0" * (1 << 20)
        with filler.open("wb") as out:
            try:
                while True:
                    out.write(chunk)
                    out.flush()
            except OSError:
                pass  # ENOSPC: the disk is full, which is the fault
        return lambda: filler.unlink(missing_ok=True)


def _nothing() -> None:
    return None


def mount_tmpfs(directory: Path) -> bool:
    """Mount a small tmpfs on ``directory`` (root only); whether it is mounted."""
    directory.mkdir(parents=True, exist_ok=True)
    if os.geteuid() != 0:
        return False
    result = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", f"size={TMPFS_SIZE}", "tmpfs", str(directory)],
        capture_output=True, text=True, timeout=10, check=False,
    )  # fmt: skip
    return result.returncode == 0


def unmount(directory: Path) -> None:
    if os.path.ismount(directory):
        subprocess.run(["umount", "-l", str(directory)], timeout=10, check=False)
