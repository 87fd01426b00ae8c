"""The broker's command line: ``python -m conveyor.broker`` and ``conveyor broker``.

Every flag falls back to an environment variable ``CONVEYOR_<NAME>`` (``--data`` ->
``CONVEYOR_DATA``), then to its default; ``--coordinator`` also honours ``CONVEYOR_URL``.
"""

from __future__ import annotations

import argparse
import logging
import os
import socket
from pathlib import Path
from typing import TYPE_CHECKING

from conveyor.protocol.messages import DEFAULT_COORDINATOR_URL

if TYPE_CHECKING:
    from conveyor.broker.config import BrokerConfig
    from conveyor.transport.client import AsyncHTTP

log = logging.getLogger(__name__)

DEFAULT_LISTEN = "127.0.0.1:7701"


def _env(name: str, default: str | None = None) -> str | None:
    return os.environ.get(f"CONVEYOR_{name}") or default


def add_arguments(parser: argparse.ArgumentParser) -> None:
    broker_id = _env("ID")
    parser.add_argument(
        "--id",
        type=int,
        required=broker_id is None,
        default=None if broker_id is None else int(broker_id),
        help="this broker's id, an integer >= 0 unique in the cluster (env CONVEYOR_ID)",
    )
    parser.add_argument(
        "--listen",
        default=_env("LISTEN", DEFAULT_LISTEN),
        metavar="HOST:PORT",
        help="where to listen (default: %(default)s)",
    )
    parser.add_argument(
        "--advertised-url",
        default=_env("ADVERTISED_URL"),
        metavar="URL",
        help="the URL other brokers and clients reach this broker at (default: http(s)://LISTEN)",
    )
    parser.add_argument(
        "--coordinator",
        default=_env("COORDINATOR", _env("URL", DEFAULT_COORDINATOR_URL)),
        metavar="URL",
        help="the coordinator's URL (default: $CONVEYOR_URL or %(default)s)",
    )
    parser.add_argument(
        "--data",
        type=Path,
        default=_env("DATA"),
        metavar="DIR",
        help="data directory (default: ./data/broker-ID)",
    )
    parser.add_argument(
        "--flush",
        default=_env("FLUSH"),
        metavar="POLICY",
        help="override every topic's flush policy: always, never or interval:MS "
        "(default: each topic's own, whose default is always)",
    )
    parser.add_argument(
        "--fetch-memory-max-bytes",
        type=int,
        default=_env("FETCH_MEMORY_MAX_BYTES", str(32 * 1024 * 1024)),  # argparse applies type
        metavar="BYTES",
        help="fetch answers read and not yet written, broker-wide; past it answers are "
        "cut to 64 KiB, at least one batch (default: %(default)s)",
    )
    parser.add_argument(
        "--fetch-write-timeout-ms",
        type=int,
        default=_env("FETCH_WRITE_TIMEOUT_MS", "30000"),
        metavar="MS",
        help="close a connection whose fetch answer is not read within this (default: %(default)s)",
    )
    parser.add_argument("--log-level", default=_env("LOG_LEVEL", "INFO"), metavar="LEVEL")
    parser.add_argument("--tls-cert", default=_env("TLS_CERT"), metavar="PEM")
    parser.add_argument("--tls-key", default=_env("TLS_KEY"), metavar="PEM")
    parser.add_argument("--ca", default=_env("CA"), metavar="PEM", help="CA to verify peers")
    from conveyor.transport.tls_args import add_mtls_arguments

    add_mtls_arguments(parser, client_cert=True)
    parser.add_argument(
        "--auth",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="enforce the coordinator's users, tokens and ACLs (env CONVEYOR_AUTH=true)",
    )
    from conveyor.transport.limit_args import add_limit_arguments

    add_limit_arguments(parser)


def config_from_args(args: argparse.Namespace) -> BrokerConfig:
    from conveyor.broker.config import BrokerConfig
    from conveyor.protocol.messages import BrokerId
    from conveyor.storage import FlushPolicy
    from conveyor.transport.runner import parse_listen
    from conveyor.transport.tls import TLSConfig

    if args.id is None or args.id < 0:
        raise SystemExit("--id must be a non-negative integer")
    if args.fetch_memory_max_bytes < 1 or args.fetch_write_timeout_ms < 1:
        raise SystemExit("--fetch-memory-max-bytes and --fetch-write-timeout-ms must be >= 1")
    from conveyor.transport.tls_args import tls_from_args

    tls: TLSConfig = tls_from_args(args)
    host, port = parse_listen(args.listen)
    if host in ("0.0.0.0", "::", ""):  # noqa: S104 -- a wildcard is not reachable as is
        host = socket.gethostname()
    advertised = args.advertised_url or f"{tls.scheme}://{host}:{port}"
    data_dir = args.data or Path("data") / f"broker-{args.id}"
    return BrokerConfig(
        broker_id=BrokerId(args.id),
        data_dir=data_dir,
        advertised_url=advertised.rstrip("/"),
        coordinator_url=args.coordinator.rstrip("/"),
        flush_override=FlushPolicy.parse(args.flush) if args.flush else None,
        tls=tls,
        fetch_memory_bytes_max=args.fetch_memory_max_bytes,
        fetch_write_timeout_ms=args.fetch_write_timeout_ms,
    )


def service_http(config: BrokerConfig) -> AsyncHTTP:
    """The broker's client to the coordinator and other brokers: it speaks as the cluster
    (``CONVEYOR_CLUSTER_SECRET``) even when a ``CONVEYOR_TOKEN`` meant for clients is in
    the same environment, since internal routes refuse client tokens."""
    from conveyor.transport.auth import authorization_header
    from conveyor.transport.client import AsyncHTTP, secret_from_env

    secret = secret_from_env("CONVEYOR_CLUSTER_SECRET")
    return AsyncHTTP(
        config.tls,
        limit=config.forward_connections_max,
        authorization=authorization_header(secret) if secret else None,
    )


def run(args: argparse.Namespace) -> int:
    """Run a broker until SIGTERM or SIGINT; returns the exit code."""
    from conveyor.broker.http import build_broker_app
    from conveyor.broker.service import BrokerService
    from conveyor.protocol.errors import ConveyorError
    from conveyor.transport import runner
    from conveyor.transport.logs import setup_logging

    setup_logging("broker", args.log_level)
    try:
        config = config_from_args(args)
        service = BrokerService(config, http=service_http(config))
        service.check_data_dir()
    except (ConveyorError, ValueError) as exc:
        log.error("broker cannot start: %s", exc)
        return 1
    log.info(
        "broker %d starting: listen %s, advertised %s, coordinator %s, data %s",
        config.broker_id,
        args.listen,
        config.advertised_url,
        config.coordinator_url,
        config.data_dir,
    )
    from conveyor.broker.security import refresh_security
    from conveyor.transport.auth import AUTH_KEY, AuthInstall, settings_from_env
    from conveyor.transport.limit_args import auth_limits_from_args, limits_from_args

    app = build_broker_app(service)
    try:
        limits, auth_limits = limits_from_args(args), auth_limits_from_args(args)
    except ConveyorError as exc:
        log.error("broker cannot start: %s", exc)
        return 1
    auth = settings_from_env(args.auth, auth_limits)
    service.security.enabled = auth.enabled
    service.security.refresher = lambda: refresh_security(service)
    app[AUTH_KEY] = AuthInstall(auth, service.security)
    runner.run(app, args.listen, config.tls, config.shutdown_timeout_s, limits)
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m conveyor.broker", description="Run a Conveyor broker."
    )
    add_arguments(parser)
    return run(parser.parse_args(argv))
