"""``conveyor dev``: a local cluster in one command.

Starts a coordinator on PORT and brokers on PORT+1.. as child processes (each in its own
session, so Ctrl-C reaches only this supervisor, which then stops them in order: brokers
first so they flush and deregister, then the coordinator), waits until every one answers
``/readyz``, prints a table, and streams their logs prefixed by name. Run again on the same
``--data`` it resumes with the data kept.
"""

from __future__ import annotations

import argparse
import os
import signal
import subprocess
import sys
import threading
import time
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import IO, TYPE_CHECKING

from conveyor.cli.common import EXIT_ERROR, EXIT_OK, positive_int
from conveyor.cli.monitoring import start_for_dev
from conveyor.cli.monitoring import stop as stop_prometheus
from conveyor.cli.output import print_line, print_table

if TYPE_CHECKING:
    from conveyor.cli.common import Subparsers

READY_TIMEOUT_S = 60.0
STOP_TIMEOUT_S = 20.0
_COLORS = ("cyan", "green", "magenta", "yellow", "blue", "red")


def register(subparsers: Subparsers) -> None:
    dev = subparsers.add_parser(
        "dev",
        help="run a local cluster: a coordinator and N brokers",
        description="Run a coordinator on PORT and brokers on PORT+1.. on 127.0.0.1, stream "
        "their logs, and stop them all on Ctrl-C. Data is kept under --data.",
    )
    dev.add_argument("--brokers", type=positive_int, default=3, help="(default 3)")
    dev.add_argument("--data", type=Path, default=Path("data/dev"), help="(default data/dev)")
    dev.add_argument("--port", type=positive_int, default=7700, help="coordinator port (7700)")
    dev.add_argument("--flush", default="always", help="broker flush policy (default always)")
    dev.add_argument("--log-level", default="INFO")
    dev.add_argument("--monitoring", action="store_true", help="also run Prometheus (if on PATH)")
    dev.add_argument("--prometheus-port", type=positive_int, default=9090, help="(default 9090)")
    dev.add_argument(
        "--tls",
        action="store_true",
        help="serve HTTPS everywhere, with mutual TLS on internal routes; certificates are "
        "created in DATA/certs on first use (conveyor certs init)",
    )
    dev.add_argument(
        "--auth",
        action="store_true",
        help="require credentials and ACLs; prints an admin token (the cluster secret is "
        "kept in DATA/cluster-secret)",
    )
    dev.set_defaults(handler=_run)


@dataclass
class _Child:
    name: str
    url: str
    argv: list[str]
    process: subprocess.Popen[bytes] | None = None


def _children(args: argparse.Namespace) -> list[_Child]:
    python = [sys.executable, "-m", "conveyor"]
    data: Path = args.data
    scheme = "https" if args.tls else "http"
    coordinator_url = f"{scheme}://127.0.0.1:{args.port}"
    tls_argv = _tls_argv(data) if args.tls else []
    if args.auth:
        tls_argv = [*tls_argv, "--auth"]
    children = [
        _Child(
            "coordinator",
            coordinator_url,
            [
                *python,
                "coordinator",
                "--listen",
                f"127.0.0.1:{args.port}",
                "--data",
                str(data / "coordinator"),
                "--log-level",
                args.log_level,
                *tls_argv,
            ],
        )
    ]
    for broker_id in range(1, args.brokers + 1):
        port = args.port + broker_id
        children.append(
            _Child(
                f"broker-{broker_id}",
                f"{scheme}://127.0.0.1:{port}",
                [
                    *python,
                    "broker",
                    "--id",
                    str(broker_id),
                    "--listen",
                    f"127.0.0.1:{port}",
                    "--coordinator",
                    coordinator_url,
                    "--data",
                    str(data / f"broker-{broker_id}"),
                    "--flush",
                    args.flush,
                    "--log-level",
                    args.log_level,
                    *tls_argv,
                ],
            )
        )
    return children


def _tls_argv(data: Path) -> list[str]:
    from conveyor.transport.certs import CertPaths

    paths = CertPaths(data / "certs")
    return [
        "--tls-cert",
        str(paths.server_cert),
        "--tls-key",
        str(paths.server_key),
        "--ca",
        str(paths.ca),
        "--internal-mtls",
    ]


def _ensure_certs(data: Path) -> Path:
    """DATA/certs, created on first use; kept across runs like the data."""
    from conveyor.transport.certs import CertPaths, init_certs

    paths = CertPaths(data / "certs")
    if not paths.complete():
        init_certs(paths.directory)
        print_line(f"created a local CA and certificates in {paths.directory}")
    return paths.ca


def _stream(name: str, color: str, pipe: IO[bytes]) -> None:
    from rich.console import Console
    from rich.text import Text

    console = Console(highlight=False, soft_wrap=True)
    width = 12
    for raw in iter(pipe.readline, b""):
        line = Text(f"{name:<{width}}| ", style=color)
        line.append(raw.decode(errors="replace").rstrip("\n"))
        console.print(line)


def _ready(url: str, ca: Path | None = None) -> bool:
    context = None
    if ca is not None:
        from conveyor.transport.tls import TLSConfig

        context = TLSConfig(cafile=str(ca)).client_context()
    try:
        with urllib.request.urlopen(  # noqa: S310 -- our own URL
            url + "/readyz", timeout=1, context=context
        ) as response:
            return bool(response.status == 200)
    except OSError:
        return False


def _cluster_secret(data: Path) -> str:
    """DATA/cluster-secret (mode 0600), created on first use."""
    import secrets

    path = data / "cluster-secret"
    if not path.exists():
        data.mkdir(parents=True, exist_ok=True)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as f:
            f.write(secrets.token_urlsafe(32))
    return path.read_text().strip()


def _admin_token(url: str, secret: str, ca: Path | None) -> str:
    """A fresh token for principal ``admin``, allowed everything (``admin`` on cluster)."""
    from conveyor.client.security import SecurityAdmin
    from conveyor.transport.tls import TLSConfig

    tls = TLSConfig(cafile=str(ca) if ca else None)
    with SecurityAdmin(url, tls=tls, token=secret) as security:
        security.add_acl("admin", "admin", "cluster", "cluster")
        return security.create_token("admin").token


def _start(children: list[_Child], extra_env: dict[str, str]) -> None:
    env = dict(os.environ, PYTHONUNBUFFERED="1", **extra_env)
    for i, child in enumerate(children):
        child.process = subprocess.Popen(
            child.argv,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            env=env,
            start_new_session=True,
        )
        assert child.process.stdout is not None
        threading.Thread(
            target=_stream,
            args=(child.name, _COLORS[i % len(_COLORS)], child.process.stdout),
            daemon=True,
        ).start()


def _wait_ready(children: list[_Child], ca: Path | None) -> str | None:
    """None when all are ready, else why not."""
    deadline = time.monotonic() + READY_TIMEOUT_S
    pending = list(children)
    while pending and time.monotonic() < deadline:
        for child in list(pending):
            assert child.process is not None
            if child.process.poll() is not None:
                return f"{child.name} exited with status {child.process.returncode}"
            if _ready(child.url, ca):
                pending.remove(child)
        time.sleep(0.1)
    return (
        f"not ready after {READY_TIMEOUT_S:.0f}s: " + ", ".join(c.name for c in pending)
        if pending
        else None
    )


def _stop(children: list[_Child]) -> None:
    # Brokers first (they flush their logs), the coordinator last.
    for group in (children[1:], children[:1]):
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


def _run(args: argparse.Namespace) -> int:
    ca = _ensure_certs(args.data) if args.tls else None
    children = _children(args)
    stop = threading.Event()

    def on_signal(signum: int, _frame: object) -> None:
        stop.set()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    secret = _cluster_secret(args.data) if args.auth else None
    _start(children, {"CONVEYOR_CLUSTER_SECRET": secret} if secret else {})
    prometheus = None
    try:
        problem = _wait_ready(children, ca)
        if problem is not None:
            print_line(f"[red]conveyor dev: {problem}[/red]")
            return EXIT_ERROR
        rows = [(c.name, c.url, c.process.pid if c.process else None) for c in children]
        print_table(f"conveyor dev cluster (data in {args.data})", ("service", "url", "pid"), rows)
        if args.monitoring:
            prometheus = start_for_dev(args.data, args.port, args.brokers, args.prometheus_port, ca)
        print(  # plain: rich would wrap the long token and break copy-paste
            f"ready. In another terminal:\n"
            f"  export CONVEYOR_URL={children[0].url}\n"
            + (f"  export CONVEYOR_CA={ca.resolve()}\n" if ca is not None else "")
            + (
                f"  export CONVEYOR_TOKEN={_admin_token(children[0].url, secret, ca)}\n"
                if secret
                else ""
            )
            + "  conveyor produce demo hello world\n"
            "  conveyor consume demo --from-beginning\n"
            "Ctrl-C stops the cluster.",
            flush=True,
        )
        while not stop.wait(0.5):
            dead = [c for c in children if c.process is not None and c.process.poll() is not None]
            if dead:
                print_line(f"[red]{dead[0].name} exited unexpectedly: stopping the cluster[/red]")
                return EXIT_ERROR
        print_line("stopping the cluster")
        return EXIT_OK
    finally:
        stop_prometheus(prometheus)
        _stop(children)
