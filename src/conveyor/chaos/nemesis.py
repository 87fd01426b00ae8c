"""The nemesis: carries out a :mod:`conveyor.chaos.schedule` against a live cluster.

Each fault is recorded in the history as ``fault`` then ``heal`` (process ``nemesis``), so
the checker can measure availability during faults and recovery after each heal.
"""

from __future__ import annotations

import errno
import json
import logging
import os
import random
import signal
import subprocess
import threading
import time
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any, Final, Protocol

import conveyor
from conveyor.chaos import diskfault, netfault
from conveyor.chaos.cluster import ETCD_PARTIES, ChaosCluster, Service
from conveyor.chaos.history import History
from conveyor.chaos.schedule import HA_FAULTS, FaultEvent
from conveyor.chaos.workload import TOPIC, topic_dirs
from conveyor.client.errors import ConveyorError

log = logging.getLogger(__name__)

TMPFS_SIZE: Final = "48m"
REPORTS_LAND_S: Final = 0.3  # after SIGSTOP: replica fetches already sent reach the leader
FILLER_NAME: Final = "chaos-filler"
_Heal = Callable[[], None]


class CrashesConsumers(Protocol):
    """What the nemesis needs of a workload: kill-consumer."""

    def crash_consumer(self, member: int) -> None: ...


class Nemesis:
    """``topic``: the workload's topic, whose leaders and replicas the faults aim at."""

    def __init__(
        self, cluster: ChaosCluster, workload: CrashesConsumers, history: History, seed: int,
        topic: str = TOPIC,
    ) -> None:  # fmt: skip
        self.cluster = cluster
        self.workload = workload
        self.history = history
        self.topic = topic
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
        if kind in HA_FAULTS:
            return self._ha_fault(kind, target)
        return self._single_fault(kind, target)

    def _single_fault(self, kind: str, target: int) -> _Heal:
        if kind in ("kill", "kill-leader", "kill-coordinator"):
            return self._kill(self._victim(kind, target))
        if kind == "kill-consumer":
            self.workload.crash_consumer(target)
            return _nothing
        if kind in ("pause", "pause-coordinator"):
            service = self._victim(kind, target)
            service.signal(signal.SIGSTOP)
            return lambda: service.signal(signal.SIGCONT)
        if kind.startswith("partition"):
            netfault.apply(self._cuts(kind, target))
            return netfault.heal
        if kind in ("torn-write", "power-loss", "corrupt"):
            return self._disk_fault(kind, self.cluster.brokers[target])
        return self._fill_disk(self.cluster.brokers[target])  # disk-full

    def _ha_fault(self, kind: str, target: int) -> _Heal:
        """The faults of several coordinators on etcd (``--ha``)."""
        etcd = self.cluster.etcd
        if etcd is None:
            raise RuntimeError(f"{kind} needs --ha")
        if kind == "kill-etcd":
            member = etcd.members[target]
            member.kill()
            return lambda: etcd.start_member(member)
        if kind == "etcd-quorum-loss":
            down = [etcd.members[(target + i) % 3] for i in (1, 2)]
            for member in down:
                member.kill()

            def restart() -> None:
                for member in down:
                    etcd.start_member(member)

            return restart
        active = self.cluster.active()
        if active is None:
            raise RuntimeError("no coordinator is active now")
        if kind == "kill-active-coordinator":
            return self._kill(active)
        if kind == "pause-active-coordinator":
            active.signal(signal.SIGSTOP)
            return lambda: active.signal(signal.SIGCONT)
        party = self.cluster.party_of(active)
        netfault.apply(netfault.split([party], ETCD_PARTIES))  # partition-coordinator-etcd
        return netfault.heal

    def _cuts(self, kind: str, target: int) -> frozenset[netfault.Cut]:
        parties = self.cluster.parties()
        brokers = [p for p in parties if p != 0]
        if kind == "partition-split":
            return netfault.split([0], brokers)
        if kind == "partition-asym":
            return netfault.one_way(target, parties)
        return netfault.isolate(target, [netfault.HARNESS, *parties])

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
        # the coordinator's view (transport="http"): it names the leader it elected, and
        # answers while the brokers a fault paused would hold a Kafka read for its timeout
        with conveyor.Admin(self.cluster.url, transport="http") as admin:
            leader = admin.describe_topic(self.topic).partitions[partition].leader
        if leader is None:
            raise RuntimeError(f"partition {partition} has no leader to kill")
        return self.cluster.brokers[leader]

    def _kill(self, service: Service) -> _Heal:
        service.kill()
        return service.start

    def _disk_fault(self, kind: str, broker: Service) -> _Heal:
        """SIGKILL ``broker``, change its files as the fault would leave them, restart on
        heal. What was done is logged and returned in the history's fault value."""
        hosted = _hosted(broker, self.topic) if kind != "torn-write" else []
        followed = [p for p in hosted if p["role"] == "follower" and p["log_end_offset"]]
        if kind == "corrupt" and not followed:
            raise RuntimeError(f"{broker.name} follows no partition with data")
        cuts = self._durable_offsets(broker, followed) if kind == "power-loss" else {}
        broker.kill()
        done: list[str] = []
        if kind == "power-loss":
            for name, durable in sorted(cuts.items()):
                dropped = diskfault.lose_unsynced(broker.data_dir / name, durable)
                done.append(f"{name}@{durable}:-{dropped}B")
        elif kind == "corrupt":
            p = self.rng.choice(followed)
            directory = broker.data_dir / f"{p['topic']}-{p['partition']}"
            done.append(f"{directory.name}: {diskfault.corrupt(directory, self.rng)}")
        else:
            directories = topic_dirs(broker.data_dir, self.topic)
            if directories:
                directory = self.rng.choice(directories)
                done.append(f"{directory.name}: +{diskfault.tear_tail(directory, self.rng)}B")
        log.info("%s on %s: %s", kind, broker.name, "; ".join(done) or "nothing to change")
        self.history.record("nemesis", "info", "disk", {"fault": kind, "changes": done})
        return broker.start

    def _durable_offsets(self, broker: Service, followed: list[dict[str, Any]]) -> dict[str, int]:
        """For each replica ``broker`` follows: the durable offset it last reported to its
        leader, which it reports only after fsync. ``broker`` is frozen first (SIGSTOP) and
        its last reports are given time to land, so the value cannot move before the kill;
        the leader's high watermark never exceeds it, so a cut there drops everything
        unsynced and nothing acknowledged. Replicas it leads are left whole: their exact
        flushed offset is not exposed (see docs/reliability.md)."""
        broker.signal(signal.SIGSTOP)
        self.stopped.wait(REPORTS_LAND_S)
        cuts: dict[str, int] = {}
        for p in followed:
            leader = self._leader_service(int(p["partition"]))
            if leader is None or leader is broker:
                continue
            durable = _reported_durable(leader, p["topic"], int(p["partition"]), broker)
            if durable is not None:
                cuts[f"{p['topic']}-{p['partition']}"] = durable
        return cuts

    def _leader_service(self, partition: int) -> Service | None:
        try:
            return self._leader_of(partition)
        except (RuntimeError, ConveyorError, OSError):
            return None

    def _fill_disk(self, broker: Service) -> _Heal:
        if not os.path.ismount(broker.data_dir):
            raise RuntimeError(f"{broker.data_dir} is not a tmpfs mount (needs root)")
        return fill_disk(broker.data_dir)


def _reported_durable(leader: Service, topic: str, partition: int, follower: Service) -> int | None:
    """From one scrape of the leader's metrics: its log end offset minus the follower's
    lag, i.e. the durable offset the follower last reported (one snapshot, so consistent)."""
    follower_id = follower.name.removeprefix("broker-")
    with urllib.request.urlopen(leader.url + "/metrics", timeout=2) as response:  # noqa: S310
        text = response.read().decode()
    tp = f'partition="{partition}",topic="{topic}"'
    end = lag = None
    for line in text.splitlines():
        if line.startswith("conveyor_broker_partition_log_end_offset{") and _labels(line, tp):
            end = int(float(line.rsplit(" ", 1)[1]))
        if line.startswith("conveyor_broker_replica_lag_messages{") and _labels(
            line, tp, f'follower="{follower_id}"'
        ):
            lag = int(float(line.rsplit(" ", 1)[1]))
    return None if end is None or lag is None else end - lag


def _labels(line: str, *wanted: str) -> bool:
    labels = line[line.index("{") + 1 : line.index("}")].split(",")
    return all(all(w in labels for w in want.split(",")) for want in wanted)


def _hosted(broker: Service, topic: str) -> list[dict[str, Any]]:
    """The broker's partition replicas of ``topic``, as it reports them."""
    with urllib.request.urlopen(broker.url + "/v1/partitions", timeout=2) as response:  # noqa: S310
        partitions: list[dict[str, Any]] = json.load(response)["partitions"]
    return [p for p in partitions if p["topic"] == topic]


def _nothing() -> None:
    return None


def fill_disk(directory: Path) -> _Heal:
    """Fill ``directory``'s file system with one file until it is full; the heal deletes
    it. Unbuffered: a buffered file kept the bytes of its last short write and raised
    ENOSPC again on close, so the fault was recorded as failed and never healed, and the
    broker's disk stayed full for the rest of the run (seed 37)."""
    filler = directory / FILLER_NAME
    chunk = bytes(1 << 20)
    with filler.open("wb", buffering=0) as out:
        try:
            while True:
                out.write(chunk)  # a short write returns its count; a full disk raises
        except OSError as exc:
            if exc.errno not in (errno.ENOSPC, errno.EDQUOT):
                filler.unlink(missing_ok=True)
                raise
    return lambda: filler.unlink(missing_ok=True)


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
