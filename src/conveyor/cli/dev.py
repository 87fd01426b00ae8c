"""``conveyor dev``: a local cluster in one command.

Starts a coordinator on PORT and brokers on PORT+1.. as child processes
(``dev_supervisor.py``), waits until every one answers ``/readyz``, prints a table, and
streams their logs prefixed by name. A child that dies is shown and restarted while the
others keep running (``--no-restart-dead`` leaves it down); ``conveyor dev stop-broker N``
and ``start-broker N`` stop and start one broker to watch failover. Ctrl-C stops them all
and exits 0. Run again on the same ``--data`` it resumes with the data kept.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import signal
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

from conveyor.cli.common import EXIT_ERROR, EXIT_OK, positive_int
from conveyor.cli.dev_control import DevChild, DevControl, DevState
from conveyor.cli.dev_supervisor import Child, Supervisor, ready
from conveyor.cli.monitoring import start_for_dev
from conveyor.cli.monitoring import stop as stop_prometheus
from conveyor.cli.output import print_line, print_table
from conveyor.protocol.errors import ConveyorError, ErrorCode

if TYPE_CHECKING:
    from conveyor.cli.common import Subparsers

COMMAND_TIMEOUT_S = 60.0


def register(subparsers: Subparsers) -> None:
    dev = subparsers.add_parser(
        "dev",
        help="run a local cluster: a coordinator and N brokers",
        description="Run a coordinator on PORT and brokers on PORT+1.. on 127.0.0.1, stream "
        "their logs, restart any that dies while the others keep running, and stop them all "
        "on Ctrl-C. Data is kept under --data. `conveyor dev stop-broker N` / "
        "`start-broker N` (in another terminal) stop one broker and start it again, to "
        "watch failover.",
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
    dev.add_argument(
        "--kafka-port",
        type=positive_int,
        default=9092,
        metavar="BASE",
        help="broker N serves the Kafka protocol on 127.0.0.1:BASE+N-1 (default 9092)",
    )
    dev.add_argument(
        "--kafka",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="open the brokers' Kafka listeners on the fixed ports of --kafka-port "
        "(default on; --no-kafka: none, HTTP only, which Conveyor's clients cannot use)",
    )
    dev.add_argument(
        "--ha",
        action="store_true",
        help="high availability: 3 etcd members (data under DATA/etcd, client ports "
        "PORT+50, +52, +54), 3 coordinators on PORT, PORT+100, PORT+200 sharing them (one "
        "active), and brokers that know all three (docs/coordinator.md)",
    )
    dev.add_argument(
        "--restart-dead",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="start a child that died again (after 1 s, slower if it keeps dying) while the "
        "others keep running (default on; --no-restart-dead leaves it down)",
    )
    dev.set_defaults(handler=_run)
    commands = dev.add_subparsers(dest="dev_command", metavar="[stop-broker|start-broker]")
    for name, handler, text in (
        (
            "stop-broker",
            _stop_broker,
            "stop broker N of the running `conveyor dev` and keep it down (to watch failover)",
        ),
        ("start-broker", _start_broker, "start broker N again and wait until it is ready"),
    ):
        command = commands.add_parser(name, help=text, description=text)
        command.add_argument("broker_id", type=positive_int, metavar="N")
        command.add_argument(
            "--data", type=Path, default=Path("data/dev"), help="the cluster's --data (data/dev)"
        )
        if name == "stop-broker":
            command.add_argument(
                "--kill",
                action="store_true",
                help="SIGKILL it (a crash: the coordinator notices after its session "
                "timeout) instead of SIGTERM (a clean stop: leadership moves at once)",
            )
        command.set_defaults(handler=handler)


def _children(args: argparse.Namespace) -> list[Child]:
    python = [sys.executable, "-m", "conveyor"]
    data: Path = args.data
    scheme = "https" if args.tls else "http"
    coordinator_url = f"{scheme}://127.0.0.1:{args.port}"
    tls_argv = _tls_argv(data) if args.tls else []
    if args.auth:
        tls_argv = [*tls_argv, "--auth"]
    children = [
        Child(
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
    if getattr(args, "ha", False):
        children = _ha_children(args, python, scheme, tls_argv)
        coordinator_url = ",".join(c.url for c in children if c.name.startswith("coordinator"))
    for broker_id in range(1, args.brokers + 1):
        port = args.port + broker_id
        kafka_argv = ["--kafka-listen", "off"]  # explicitly: a broker opens one by default
        if args.kafka:
            kafka_argv = ["--kafka-listen", f"127.0.0.1:{kafka_port(args, broker_id)}"]
        children.append(
            Child(
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
                    *kafka_argv,
                    *tls_argv,
                ],
            )
        )
    return children


HEALTH = "/health"  # etcd's readiness: 200 once the member sees a leader


def _ha_children(
    args: argparse.Namespace, python: list[str], scheme: str, tls_argv: list[str]
) -> list[Child]:
    """3 etcd members and 3 coordinators on them (``--ha``)."""
    from conveyor.cli.etcd_local import etcd_available, fixed_members

    problem = etcd_available()
    if problem is not None:
        raise ConveyorError(f"--ha needs etcd: {problem}", code=ErrorCode.INVALID_REQUEST)
    data: Path = args.data
    etcd = fixed_members(data / "etcd", "127.0.0.1", args.port + 50)
    children = [
        Child(
            m.name, m.client_url, m.argv(etcd.initial_cluster, _etcd_state(m)), ready_path="/health"
        )
        for m in etcd.members
    ]
    for index in range(3):
        port = args.port + 100 * index
        children.append(
            Child(
                f"coordinator-{index + 1}",
                f"{scheme}://127.0.0.1:{port}",
                [
                    *python,
                    "coordinator",
                    "--listen",
                    f"127.0.0.1:{port}",
                    "--data",
                    str(data / f"coordinator-{index + 1}"),
                    "--store",
                    etcd.store_url,
                    "--prefix",
                    "/conveyor/dev",
                    "--lease-ttl-ms",
                    "2000",
                    "--log-level",
                    args.log_level,
                    *tls_argv,
                ],
            )
        )
    return children


def _etcd_state(member: Any) -> str:
    return "existing" if (member.data_dir / "member").exists() else "new"


def kafka_port(args: argparse.Namespace, broker_id: int) -> int:
    return int(args.kafka_port) + broker_id - 1


def kafka_bootstrap(args: argparse.Namespace) -> str | None:
    """Kafka clients' bootstrap.servers for the dev cluster (None with --no-kafka)."""
    if not args.kafka:
        return None
    return ",".join(f"127.0.0.1:{kafka_port(args, b)}" for b in range(1, args.brokers + 1))


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


def _run(args: argparse.Namespace) -> int:
    control = DevControl(args.data)
    other = control.running_supervisor()
    if other is not None and other != os.getpid():
        raise ConveyorError(
            f"another conveyor dev (pid {other}) runs on {args.data}",
            code=ErrorCode.INVALID_REQUEST,
        )
    ca = _ensure_certs(args.data) if args.tls else None
    stop = threading.Event()

    def on_signal(signum: int, _frame: object) -> None:
        stop.set()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    with _terminal_foreground():
        return _supervise(args, control, ca, stop)


def _supervise(
    args: argparse.Namespace, control: DevControl, ca: Path | None, stop: threading.Event
) -> int:
    secret = _cluster_secret(args.data) if args.auth else None
    supervisor = Supervisor(
        _children(args),
        {"CONVEYOR_CLUSTER_SECRET": secret} if secret else {},
        control,
        restart_dead=args.restart_dead,
        ca=ca,
    )
    supervisor.start_all()
    prometheus = None
    try:
        problem = supervisor.wait_ready()
        if problem is not None:
            print_line(f"[red]conveyor dev: {problem}[/red]")
            return EXIT_ERROR
        children = supervisor.children
        coordinators = [c.url for c in children if c.name.startswith("coordinator")]
        url = ",".join(coordinators)
        rows = [(c.name, c.url, _kafka_cell(args, c.name), c.pid) for c in children]
        print_table(
            f"conveyor dev cluster (data in {args.data})", ("service", "url", "kafka", "pid"), rows
        )
        if args.monitoring:
            prometheus = start_for_dev(args.data, args.port, args.brokers, args.prometheus_port, ca)
        print(  # plain: rich would wrap the long token and break copy-paste
            f"ready. In another terminal:\n"
            f"  export CONVEYOR_URL={url}\n"
            + (f"  export CONVEYOR_CA={ca.resolve()}\n" if ca is not None else "")
            + (f"  export CONVEYOR_TOKEN={_admin_token(url, secret, ca)}\n" if secret else "")
            + f"  web console: {coordinators[0]}/console/"
            + (" (sign in with the token above)\n" if secret else "\n")
            + "  conveyor produce demo hello world\n"
            "  conveyor consume demo --from-beginning\n"
            + _kafka_hint(args)
            + _data_hint(args.data)
            + "  conveyor dev stop-broker 2    # watch failover: conveyor topic describe demo\n"
            "  conveyor dev start-broker 2\n"
            "Ctrl-C stops the cluster.",
            flush=True,
        )
        while not stop.wait(0.25):
            supervisor.tick()
        print_line("stopping the cluster")
        return EXIT_OK
    finally:
        stop_prometheus(prometheus)
        supervisor.stop_all()


@contextlib.contextmanager
def _terminal_foreground() -> Iterator[None]:
    """Under ``make run``, move to a process group of our own and give it the terminal,
    as a shell does for a job, so that Ctrl-C reaches this supervisor only: make, which
    would otherwise get the SIGINT too, report "Interrupt" and fail whatever we return,
    waits for our exit status (0) instead. The terminal goes back to make's group on
    the way out. Does nothing without a terminal or when we already lead our group (run
    from a shell)."""
    try:
        fd = sys.stdin.fileno()
        ours = os.isatty(fd) and os.tcgetpgrp(fd) == os.getpgrp() != os.getpid()
    except (OSError, ValueError):
        ours = False
    if not ours:
        yield
        return
    parent_group = os.getpgrp()
    os.setpgid(0, 0)
    _set_foreground(fd, os.getpgrp())
    try:
        yield
    finally:
        _set_foreground(fd, parent_group)


def _set_foreground(fd: int, group: int) -> None:
    # A background group changing the foreground gets SIGTTOU (stop): ignore it meanwhile.
    previous = signal.signal(signal.SIGTTOU, signal.SIG_IGN)
    try:
        os.tcsetpgrp(fd, group)
    except OSError as exc:  # the terminal went away: nothing to give back
        print_line(f"[yellow]conveyor dev: could not set the terminal's group: {exc}[/yellow]")
    finally:
        signal.signal(signal.SIGTTOU, previous)


def _kafka_cell(args: argparse.Namespace, name: str) -> str:
    if not args.kafka or not name.startswith("broker-"):
        return ""
    return f"127.0.0.1:{kafka_port(args, int(name.removeprefix('broker-')))}"


def _kafka_hint(args: argparse.Namespace) -> str:
    bootstrap = kafka_bootstrap(args)
    if bootstrap is None:
        return ""
    tls = " -X security.protocol=ssl -X ssl.ca.location=$CONVEYOR_CA" if args.tls else ""
    return f"  kcat -b {bootstrap}{tls} -L     # any Kafka client: bootstrap {bootstrap}\n"


def _data_hint(data: Path) -> str:
    """The ``--data`` the stop/start commands need when it is not the default."""
    return "" if data == Path("data/dev") else f"  (stop-broker/start-broker: add --data {data})\n"


def _running_state(data: Path) -> DevState:
    control = DevControl(data)
    state = control.read_state()
    if state is None or control.running_supervisor() is None:
        raise ConveyorError(
            f"no conveyor dev is running on {data} (start one with `conveyor dev`, or pass "
            "its --data)",
            code=ErrorCode.INVALID_REQUEST,
        )
    return state


def _broker(state: DevState, broker_id: int) -> str:
    name = f"broker-{broker_id}"
    if state.child(name) is None:
        brokers = [c.name for c in state.children if c.name.startswith("broker-")]
        raise ConveyorError(
            f"no {name} in this dev cluster (it has {', '.join(brokers)})",
            code=ErrorCode.INVALID_REQUEST,
        )
    return name


def _wait_state(
    data: Path, name: str, what: str, done: Callable[[DevState, DevChild], bool]
) -> DevState:
    deadline = time.monotonic() + COMMAND_TIMEOUT_S
    while time.monotonic() < deadline:
        state = DevControl(data).read_state()
        child = None if state is None else state.child(name)
        if state is not None and child is not None and done(state, child):
            return state
        time.sleep(0.1)
    raise ConveyorError(f"{name} did not {what} within {COMMAND_TIMEOUT_S:.0f}s")


def _is_our_process(pid: int) -> bool:
    """Guard against a recycled pid: on Linux the command line must be a conveyor broker."""
    try:
        argv = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
    except OSError:
        return sys.platform != "linux"
    return b"conveyor" in argv and b"broker" in argv


def _stop_broker(args: argparse.Namespace) -> int:
    state = _running_state(args.data)
    name = _broker(state, args.broker_id)
    control = DevControl(args.data)
    control.hold(name)
    child = state.child(name)
    assert child is not None
    if child.pid is not None and _is_our_process(child.pid):
        os.kill(child.pid, signal.SIGKILL if args.kill else signal.SIGTERM)
    _wait_state(args.data, name, "stop", lambda s, c: c.state == "held")
    how = "killed" if args.kill else "stopped"
    print_line(
        f"{name} {how}; it stays down until `conveyor dev start-broker {args.broker_id}`. "
        "The partitions it led move to their other in-sync replicas "
        + ("after the coordinator's session timeout" if args.kill else "at once")
        + ": `conveyor topic describe TOPIC` shows the leaders."
    )
    return EXIT_OK


def _start_broker(args: argparse.Namespace) -> int:
    state = _running_state(args.data)
    name = _broker(state, args.broker_id)
    child = state.child(name)
    assert child is not None
    if child.state == "running":
        print_line(f"{name} is already running (pid {child.pid})")
        return EXIT_OK
    DevControl(args.data).request_start(name)
    ca = Path(state.ca) if state.ca else None
    started = _wait_state(
        args.data,
        name,
        "start and become ready",
        lambda s, c: c.state == "running" and ready(c.url, ca),
    )
    started_child = started.child(name)
    assert started_child is not None
    print_line(f"{name} started (pid {started_child.pid}) and ready")
    return EXIT_OK
