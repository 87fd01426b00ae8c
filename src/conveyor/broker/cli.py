"""The broker's command line: ``python -m conveyor.broker`` and ``conveyor broker``.

Its settings are defined in ``conveyor.settings.catalog`` (BROKER): each comes from its
flag, else ``CONVEYOR_<NAME>``, else the TOML file (``--config``), else the default;
``--coordinator`` also honours ``CONVEYOR_URL``.
"""

from __future__ import annotations

import argparse
import logging
import socket
import sys
from pathlib import Path
from typing import TYPE_CHECKING

from conveyor.settings import Settings, SettingsError, catalog, kinds
from conveyor.settings import load as load_settings
from conveyor.settings.flags import add_flags, flags_from_args

if TYPE_CHECKING:
    from conveyor.broker.config import BrokerConfig, KafkaSettings
    from conveyor.transport.client import AsyncHTTP

log = logging.getLogger(__name__)

EXIT_BAD_SETTINGS = 2  # as for bad usage: the command line, environment or file is wrong


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Add the broker's flags to ``parser`` (one per setting of the catalogue)."""
    add_flags(parser, catalog.BROKER)


def load(args: argparse.Namespace) -> Settings:
    """The broker's effective settings; raises ``SettingsError``."""
    return load_settings("broker", flags_from_args(args, catalog.BROKER))


def config_from_args(args: argparse.Namespace | Settings) -> BrokerConfig:
    from conveyor.broker.config import BrokerConfig
    from conveyor.protocol.messages import BrokerId
    from conveyor.storage.cleaner import CleanerSettings
    from conveyor.transport.runner import parse_listen
    from conveyor.transport.tls_args import tls_from_settings

    s = args if isinstance(args, Settings) else load(args)
    broker_id = s[catalog.BROKER_ID]
    tls = tls_from_settings(s)
    host, port = parse_listen(s[catalog.BROKER_LISTEN])
    listen_host = host
    if host in ("0.0.0.0", "::", ""):  # noqa: S104 -- a wildcard is not reachable as is
        host = socket.gethostname()
    advertised = s[catalog.ADVERTISED_URL] or f"{tls.scheme}://{host}:{port}"
    data_dir = s[catalog.BROKER_DATA] or Path("data") / f"broker-{broker_id}"
    from conveyor.transport.coordinators import parse_coordinator_urls

    try:
        coordinator_urls = parse_coordinator_urls(s[catalog.COORDINATOR_URL])
    except ValueError as exc:
        raise SettingsError(f"coordinator: {exc}") from None
    return BrokerConfig(
        broker_id=BrokerId(broker_id),
        data_dir=data_dir,
        advertised_url=advertised.rstrip("/"),
        coordinator_url=coordinator_urls[0],
        coordinator_urls=coordinator_urls,
        flush_override=s[catalog.FLUSH],
        tls=tls,
        fetch_memory_max_bytes=s[catalog.FETCH_MEMORY_MAX_BYTES],
        fetch_write_timeout_ms=s[catalog.FETCH_WRITE_TIMEOUT_MS],
        cleaner=CleanerSettings(
            worker=True,  # the pass in a process of its own: never the broker's GIL
            io_bytes_per_s=s[catalog.CLEANER_IO_BYTES_PER_S],
            dedupe_buffer_bytes=s[catalog.CLEANER_DEDUPE_BUFFER_BYTES],
            backoff_ms=s[catalog.CLEANER_BACKOFF_MS],
        ),
        request_max_bytes=s[catalog.REQUEST_MAX_BYTES],
        security_max_staleness_ms=s[catalog.SECURITY_MAX_STALENESS_MS],
        cluster_secret=s[catalog.CLUSTER_SECRET],
        kafka=kafka_settings(s),
        replica_listen_host=listen_host or "0.0.0.0",  # noqa: S104 -- as the HTTP listener
        replica_port=s[catalog.REPLICA_PORT],
    )


def kafka_settings(s: Settings) -> KafkaSettings | None:
    """The Kafka listener's settings: ``kafka_listen``, by default the host of ``listen``
    and a port the OS picks; None when ``kafka_listen`` is off."""
    from conveyor.broker.config import KafkaSettings
    from conveyor.transport.runner import parse_listen

    listen = s[catalog.KAFKA_LISTEN]
    advertise = s[catalog.KAFKA_ADVERTISE]
    if listen == kinds.OFF:
        if advertise is not None:
            raise SettingsError("kafka_advertise is set but kafka_listen is off")
        return None
    if listen is None:  # as the replica listener: beside the HTTP one, any free port
        host, _ = parse_listen(s[catalog.BROKER_LISTEN])
        port = 0
    else:
        host, port = parse_listen(listen)
    return KafkaSettings(
        listen_host=host,
        listen_port=port,
        advertise=advertise,
        max_frame_bytes=s[catalog.KAFKA_MAX_FRAME_BYTES],
        connections_max=s[catalog.KAFKA_CONNECTIONS_MAX],
        connections_per_address_max=s[catalog.CONNECTIONS_PER_ADDRESS_MAX],
    )


def service_http(config: BrokerConfig) -> AsyncHTTP:
    """The broker's client to the coordinator and other brokers: it speaks as the cluster
    (its ``cluster_secret``) even when a ``CONVEYOR_TOKEN`` meant for clients is in the
    same environment, since internal routes refuse client tokens."""
    from conveyor.broker.config import coordinators_of
    from conveyor.transport.client import AsyncHTTP
    from conveyor.transport.credentials import authorization_header

    secret = config.cluster_secret
    return AsyncHTTP(
        config.tls,
        limit=config.forward_connections_max,
        authorization=authorization_header(secret) if secret else None,
        coordinators=coordinators_of(config),
    )


def run(args: argparse.Namespace) -> int:
    """Run a broker until SIGTERM or SIGINT; returns the exit code."""
    from conveyor.broker.http import build_broker_app
    from conveyor.broker.service import BrokerService
    from conveyor.protocol.errors import ConveyorError
    from conveyor.settings import env_warnings
    from conveyor.transport import runner
    from conveyor.transport.logs import setup_logging

    try:
        s = load(args)
    except SettingsError as exc:
        print(f"conveyor broker: error: {exc.message}", file=sys.stderr)
        return EXIT_BAD_SETTINGS
    setup_logging(
        "broker", s[catalog.LOG_LEVEL], s[catalog.LOG_FORMAT], broker_id=s[catalog.BROKER_ID]
    )
    for warning in env_warnings():
        log.warning("%s", warning)
    try:
        config = config_from_args(s)
        service = BrokerService(config, http=service_http(config))
        service.check_data_dir()
    except SettingsError as exc:
        print(f"conveyor broker: error: {exc.message}", file=sys.stderr)
        return EXIT_BAD_SETTINGS
    except (ConveyorError, ValueError) as exc:
        log.error("broker cannot start: %s", exc)
        return 1
    log.info(
        "broker %d starting: listen %s, advertised %s, coordinator %s, data %s, config %s",
        config.broker_id,
        s[catalog.BROKER_LISTEN],
        config.advertised_url,
        config.coordinator_url,
        config.data_dir,
        s.config_path,
    )
    from conveyor.transport.access import ACCESS_LOG_KEY
    from conveyor.transport.auth import AUTH_KEY, AuthInstall, auth_settings
    from conveyor.transport.limit_args import auth_limits_from_settings, limits_from_settings

    app = build_broker_app(service)
    app[ACCESS_LOG_KEY] = s[catalog.ACCESS_LOG]
    auth = auth_settings(s[catalog.AUTH], config.cluster_secret, auth_limits_from_settings(s))
    service.security.enabled = auth.enabled
    service.security.max_staleness_ms = config.security_max_staleness_ms
    service.security.refresher = service.refresh_security
    app[AUTH_KEY] = AuthInstall(auth, service.security)
    runner.run(
        app,
        s[catalog.BROKER_LISTEN],
        config.tls,
        config.shutdown_timeout_s,
        limits_from_settings(s),
        metrics_token=s[catalog.METRICS_TOKEN],
    )
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m conveyor.broker", description="Run a Conveyor broker."
    )
    add_arguments(parser)
    args = parser.parse_args(argv)
    from conveyor._extras import service_main

    return service_main("broker", lambda: run(args))
