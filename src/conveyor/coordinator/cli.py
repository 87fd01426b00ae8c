"""Command line of the coordinator: ``python -m conveyor.coordinator`` and, through
:func:`add_arguments` and :func:`run`, ``conveyor coordinator``.

Every option can also come from the environment as ``CONVEYOR_<OPTION>`` (``--listen`` from
``CONVEYOR_LISTEN``, ``--session-timeout-ms`` from ``CONVEYOR_SESSION_TIMEOUT_MS``; TLS
from ``CONVEYOR_TLS_CERT``, ``CONVEYOR_TLS_KEY``, ``CONVEYOR_CA``); the command line wins.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from pathlib import Path

from conveyor._version import __version__
from conveyor.coordinator.service import CoordinatorSettings
from conveyor.coordinator.state import TopicDefaults
from conveyor.coordinator.validation import PARTITIONS_MAX
from conveyor.protocol.errors import ConveyorError, InvalidRequestError
from conveyor.transport.tls import TLSConfig

log = logging.getLogger(__name__)

DEFAULT_LISTEN = "127.0.0.1:7700"
DEFAULT_DATA_DIR = "./data/coordinator"


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not an integer") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"{value} is not >= 1")
    return value


def _env(name: str, default: str | None = None) -> str | None:
    return os.environ.get(f"CONVEYOR_{name}") or default


def _env_bool(name: str, default: bool) -> bool:
    raw = _env(name)
    if raw is None:
        return default
    if raw.lower() in ("1", "true", "yes", "on"):
        return True
    if raw.lower() in ("0", "false", "no", "off"):
        return False
    raise InvalidRequestError(f"CONVEYOR_{name} must be true or false, not {raw!r}")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Add the coordinator's options to ``parser`` (defaults read from the environment)."""
    parser.add_argument(
        "--listen",
        metavar="HOST:PORT",
        default=_env("LISTEN", DEFAULT_LISTEN),
        help=f"address to serve HTTP on (default {DEFAULT_LISTEN})",
    )
    parser.add_argument(
        "--data",
        metavar="DIR",
        type=Path,
        default=_env("DATA", DEFAULT_DATA_DIR),
        help=f"directory of coordinator.db (default {DEFAULT_DATA_DIR})",
    )
    parser.add_argument(
        "--session-timeout-ms",
        metavar="MS",
        type=_positive_int,
        default=_env("SESSION_TIMEOUT_MS", "6000"),
        help="a broker silent this long is declared dead (default 6000)",
    )
    parser.add_argument(
        "--heartbeat-interval-ms",
        metavar="MS",
        type=_positive_int,
        default=_env("HEARTBEAT_INTERVAL_MS", "1000"),
        help="heartbeat interval told to brokers, at most a third of the session timeout "
        "(default 1000)",
    )
    parser.add_argument(
        "--auto-create-topics",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="create unknown topics on a metadata request that asks for it "
        "(default on; env CONVEYOR_AUTO_CREATE_TOPICS=true|false)",
    )
    parser.add_argument(
        "--default-partitions",
        metavar="N",
        type=_positive_int,
        default=_env("DEFAULT_PARTITIONS", "8"),
        help="partitions of a topic created without a count (default 8)",
    )
    parser.add_argument(
        "--default-replication-factor",
        metavar="N",
        type=_positive_int,
        default=_env("DEFAULT_REPLICATION_FACTOR"),
        help="replication factor of a topic created without one (default min(3, live brokers))",
    )
    parser.add_argument(
        "--replica-restore-delay-ms",
        metavar="MS",
        type=_positive_int,
        default=_env("REPLICA_RESTORE_DELAY_MS", "30000"),
        help="replicas of a broker dead this long are re-created on other brokers "
        "(default 30000: five default session timeouts)",
    )
    parser.add_argument(
        "--max-concurrent-moves",
        metavar="N",
        type=_positive_int,
        default=_env("MAX_CONCURRENT_MOVES", "2"),
        help="partitions copying a new replica at once, for restoration, rebalancing and "
        "decommissioning (default 2)",
    )
    parser.add_argument(
        "--log-level",
        type=str.upper,
        choices=["DEBUG", "INFO", "WARNING", "ERROR"],
        default=_env("LOG_LEVEL", "INFO"),
        help="log level (default INFO)",
    )
    parser.add_argument("--tls-cert", metavar="FILE", default=_env("TLS_CERT"))
    parser.add_argument("--tls-key", metavar="FILE", default=_env("TLS_KEY"))
    parser.add_argument("--ca", metavar="FILE", default=_env("CA"), help="CA bundle for peers")
    from conveyor.transport.tls_args import add_mtls_arguments

    add_mtls_arguments(parser, client_cert=False)
    parser.add_argument(
        "--auth",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="require credentials and ACLs on every request (env CONVEYOR_AUTH=true; the "
        "cluster secret comes from CONVEYOR_CLUSTER_SECRET); docs/security.md",
    )
    from conveyor.transport.limit_args import add_limit_arguments

    add_limit_arguments(parser)


def settings_from_args(args: argparse.Namespace) -> CoordinatorSettings:
    auto_create: bool | None = args.auto_create_topics
    if auto_create is None:
        auto_create = _env_bool("AUTO_CREATE_TOPICS", True)
    if args.default_partitions > PARTITIONS_MAX:
        raise InvalidRequestError(f"--default-partitions must be at most {PARTITIONS_MAX}")
    return CoordinatorSettings(
        data_dir=Path(args.data),
        session_timeout_ms=args.session_timeout_ms,
        heartbeat_interval_ms=args.heartbeat_interval_ms,
        auto_create_topics=auto_create,
        replica_restore_delay_ms=args.replica_restore_delay_ms,
        max_concurrent_moves=args.max_concurrent_moves,
        topic_defaults=TopicDefaults(
            partitions=args.default_partitions,
            replication_factor=args.default_replication_factor,
        ),
    )


def tls_from_args(args: argparse.Namespace) -> TLSConfig:
    from conveyor.transport.tls_args import tls_from_args as from_args

    return from_args(args)


def run(args: argparse.Namespace) -> int:
    """Serve until SIGTERM or SIGINT; returns the exit code. Raises ConveyorError for bad
    settings or an unusable data directory."""
    from conveyor.coordinator.http import build_coordinator_app
    from conveyor.transport.logs import setup_logging
    from conveyor.transport.runner import parse_listen
    from conveyor.transport.runner import run as serve

    setup_logging("coordinator", args.log_level)
    settings = settings_from_args(args)
    tls = tls_from_args(args)
    try:
        parse_listen(args.listen)
    except ValueError as exc:
        raise InvalidRequestError(str(exc)) from None
    log.info(
        "coordinator %s starting: listen=%s data=%s session_timeout_ms=%d auto_create_topics=%s "
        "default_partitions=%d default_replication_factor=%s replica_restore_delay_ms=%d "
        "max_concurrent_moves=%d tls=%s",
        __version__,
        args.listen,
        settings.data_dir,
        settings.session_timeout_ms,
        settings.auto_create_topics,
        settings.topic_defaults.partitions,
        settings.topic_defaults.replication_factor or "min(3, live brokers)",
        settings.replica_restore_delay_ms,
        settings.max_concurrent_moves,
        tls.enabled,
    )
    app = build_coordinator_app(settings)
    from conveyor.coordinator import security
    from conveyor.transport.auth import AUTH_KEY, AuthInstall, settings_from_env
    from conveyor.transport.limit_args import auth_limits_from_args, limits_from_args

    auth = settings_from_env(args.auth, auth_limits_from_args(args))
    store = security.SecurityStore(settings.data_dir, auth.enabled)
    security.attach(app, store)
    app[AUTH_KEY] = AuthInstall(auth, store)
    log.info("authentication and ACLs: %s", "on" if auth.enabled else "off")
    serve(app, args.listen, tls, limits=limits_from_args(args))
    log.info("coordinator stopped")
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m conveyor.coordinator",
        description="Conveyor coordinator: cluster metadata, placement, failure detection.",
    )
    add_arguments(parser)
    args = parser.parse_args(argv)
    try:
        return run(args)
    except ConveyorError as exc:
        log.error("coordinator failed: %s", exc)
        print(f"conveyor coordinator: error: {exc.message} ({exc.code.name})", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130
