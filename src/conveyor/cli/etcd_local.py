"""Local etcd members as child processes: for ``conveyor dev --ha``, the tests and the chaos
suite. Not for production (docs/deployment.md runs etcd as its own service).

Each member gets its own data directory, log file and free ports on its host (loopback);
the cluster is bootstrapped with a static ``--initial-cluster`` list. Settings that matter
to the coordinator: ``--max-txn-ops`` and ``--max-request-bytes`` at etcd's defaults (the
metadata store is built to fit them), revision auto-compaction so that the history of
rewritten keys does not grow without bound, and etcd's default heartbeat (100 ms) and
election timeout (1000 ms).
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import ssl
import subprocess
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Final

from conveyor.cli.child import ChildProcess

READY_TIMEOUT_S: Final = 30.0


def etcd_binary() -> str | None:
    """The ``etcd`` executable, or None (scripts/system-deps/45-etcd.sh installs it)."""
    return shutil.which("etcd")


def _free_port(host: str) -> int:
    with socket.socket() as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


@dataclass
class EtcdMember(ChildProcess):
    name: str
    host: str
    client_port: int
    peer_port: int
    data_dir: Path
    log_path: Path
    gid: int | None = None  # run with this group id (root only): the chaos suite's marks
    process: subprocess.Popen[bytes] | None = None
    paused: bool = False
    # (certificate, key, CA): clients connect over TLS and must present a certificate
    # signed by the CA (etcd's --client-cert-auth); peers stay on plain HTTP
    tls: tuple[Path, Path, Path] | None = None

    @property
    def client_url(self) -> str:
        scheme = "https" if self.tls else "http"
        return f"{scheme}://{self.host}:{self.client_port}"

    @property
    def peer_url(self) -> str:
        return f"http://{self.host}:{self.peer_port}"

    def argv(self, initial_cluster: str, state: str) -> list[str]:
        return [
            etcd_binary() or "etcd",
            "--name", self.name,
            "--data-dir", str(self.data_dir),
            "--listen-client-urls", self.client_url,
            "--advertise-client-urls", self.client_url,
            "--listen-peer-urls", self.peer_url,
            "--initial-advertise-peer-urls", self.peer_url,
            "--initial-cluster", initial_cluster,
            "--initial-cluster-state", state,
            "--initial-cluster-token", "conveyor-local",
            "--auto-compaction-mode", "revision",
            "--auto-compaction-retention", "10000",
            "--logger", "zap",
            "--log-level", "warn",
            *self._tls_argv(),
        ]  # fmt: skip

    def _tls_argv(self) -> list[str]:
        if self.tls is None:
            return []
        cert, key, ca = self.tls
        return [
            "--cert-file", str(cert), "--key-file", str(key),
            "--trusted-ca-file", str(ca), "--client-cert-auth",
        ]  # fmt: skip

    def start(self, initial_cluster: str) -> None:
        state = "existing" if (self.data_dir / "member").exists() else "new"
        self.data_dir.parent.mkdir(parents=True, exist_ok=True)
        self.spawn(self.argv(initial_cluster, state))

    def healthy(self) -> bool:
        """The member answers and sees a leader (``/health`` is true only with quorum)."""
        context = None
        if self.tls is not None:
            cert, key, ca = self.tls
            context = ssl.create_default_context(cafile=str(ca))
            context.load_cert_chain(str(cert), str(key))  # etcd asks every client for one
        try:
            with urllib.request.urlopen(  # noqa: S310 -- our own member
                self.client_url + "/health", timeout=1, context=context
            ) as response:
                return bool(json.load(response).get("health") == "true")
        except (OSError, ValueError):
            return False


@dataclass
class LocalEtcd:
    """``count`` members on ``hosts`` (one per member; default all on 127.0.0.1)."""

    root: Path
    count: int = 3
    hosts: list[str] = field(default_factory=list)
    gids: list[int | None] = field(default_factory=list)
    members: list[EtcdMember] = field(default_factory=list)

    def __post_init__(self) -> None:
        hosts = self.hosts or ["127.0.0.1"] * self.count
        gids = self.gids or [None] * self.count
        if not self.members:
            for index in range(self.count):
                host, name = hosts[index], f"etcd-{index}"
                member = EtcdMember(
                    name, host, _free_port(host), _free_port(host),
                    self.root / name, self.root / f"{name}.log", gids[index],
                )  # fmt: skip
                self.members.append(member)

    @property
    def initial_cluster(self) -> str:
        return ",".join(f"{m.name}={m.peer_url}" for m in self.members)

    @property
    def endpoints(self) -> str:
        """The client URLs, comma-separated, as ``--store etcd://`` takes them."""
        return ",".join(f"{m.host}:{m.client_port}" for m in self.members)

    @property
    def store_url(self) -> str:
        scheme = "etcds" if any(m.tls for m in self.members) else "etcd"
        return f"{scheme}://{self.endpoints}"

    def start(self, timeout_s: float = READY_TIMEOUT_S) -> None:
        if etcd_binary() is None:
            raise RuntimeError("etcd is not installed (scripts/system-deps/45-etcd.sh)")
        for member in self.members:
            if not member.alive():
                member.start(self.initial_cluster)
        self.wait_healthy(timeout_s)

    def start_member(self, member: EtcdMember) -> None:
        member.start(self.initial_cluster)

    def wait_healthy(self, timeout_s: float = READY_TIMEOUT_S) -> None:
        """Until every running member reports a leader."""
        deadline = time.monotonic() + timeout_s
        running = [m for m in self.members if m.alive()]
        while time.monotonic() < deadline:
            if all(m.healthy() for m in running):
                return
            dead = [m for m in running if not m.alive()]
            if dead:
                raise RuntimeError(f"etcd member {dead[0].name} exited:\n{dead[0].tail()}")
            time.sleep(0.1)
        raise RuntimeError(f"etcd not healthy after {timeout_s} s:\n{running[0].tail()}")

    def leader(self) -> EtcdMember | None:
        """The member the running members agree leads (from ``/v3/maintenance/status``)."""
        for member in self.members:
            if not member.alive() or member.paused:
                continue
            try:
                request = urllib.request.Request(  # noqa: S310
                    member.client_url + "/v3/maintenance/status", data=b"{}", method="POST"
                )
                with urllib.request.urlopen(request, timeout=1) as response:  # noqa: S310
                    status = json.load(response)
            except (OSError, ValueError):
                continue
            leader_id, own_id = status.get("leader"), status.get("header", {}).get("member_id")
            if leader_id and leader_id == own_id:
                return member
        return None

    def stop(self) -> None:
        for member in self.members:
            member.stop()

    def __enter__(self) -> LocalEtcd:
        self.start()
        return self

    def __exit__(self, *_: object) -> None:
        self.stop()


def fixed_members(root: Path, host: str, first_port: int, count: int = 3) -> LocalEtcd:
    """Members on fixed ports (``first_port``, +1 for its peer, +2 for the next...): a
    member's data directory remembers its peer URL, so a cluster restarted on the same
    data (``conveyor dev --ha``) must get the same ports again."""
    members = [
        EtcdMember(
            f"etcd-{i}",
            host,
            first_port + 2 * i,
            first_port + 2 * i + 1,
            root / f"etcd-{i}",
            root / f"etcd-{i}.log",
        )
        for i in range(count)
    ]
    return LocalEtcd(root, count, members=members)


def etcd_available() -> str | None:
    """Why local etcd members cannot run here, or None."""
    if etcd_binary() is None:
        return "etcd not installed (run scripts/system-deps/45-etcd.sh as root)"
    if os.name != "posix":
        return "local etcd members need a POSIX system"
    return None
