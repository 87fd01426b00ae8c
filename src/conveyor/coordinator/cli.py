"""Command line of the coordinator: ``python -m conveyor.coordinator`` and, through
:func:`add_arguments` and :func:`run`, ``conveyor coordinator``.

Its settings are defined in ``conveyor.settings.catalog`` (COORDINATOR): each comes from
its flag, else ``CONVEYOR_<NAME>``, else the TOML file (``--config``), else the default.
"""

from __future__ import annotations

import argparse
import dataclasses
import logging
import socket
from pathlib import Path
from typing import TYPE_CHECKING

from conveyor._version import __version__
from conveyor.settings import Settings, SettingsError, catalog
from conveyor.settings import load as load_settings
from conveyor.settings.flags import add_flags, flags_from_args
from conveyor.transport.tls import TLSConfig

if TYPE_CHECKING:  # imported when run: the CLI's parser needs none of the service
    from conveyor.console.settings import ConsoleSettings
    from conveyor.coordinator.leadership import HaSettings
    from conveyor.coordinator.service import CoordinatorSettings

log = logging.getLogger(__name__)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Add the coordinator's flags to ``parser`` (one per setting of the catalogue)."""
    add_flags(parser, catalog.COORDINATOR)


def load(args: argparse.Namespace) -> Settings:
    """The coordinator's effective settings; raises ``SettingsError``."""
    return load_settings("coordinator", flags_from_args(args, catalog.COORDINATOR))


def settings_from_args(args: argparse.Namespace | Settings) -> CoordinatorSettings:
    from conveyor.coordinator.classic_model import Limits
    from conveyor.coordinator.service import CoordinatorSettings
    from conveyor.coordinator.state import TopicDefaults

    s = args if isinstance(args, Settings) else load(args)
    store: str = s[catalog.STORE]
    data_dir = s[catalog.COORDINATOR_DATA]
    if store.startswith("sqlite:"):
        data_dir = Path(store.removeprefix("sqlite:"))
    return CoordinatorSettings(
        data_dir=data_dir,
        session_timeout_ms=s[catalog.SESSION_TIMEOUT_MS],
        heartbeat_interval_ms=s[catalog.HEARTBEAT_INTERVAL_MS],
        auto_create_topics=s[catalog.AUTO_CREATE_TOPICS],
        replica_restore_delay_ms=s[catalog.REPLICA_RESTORE_DELAY_MS],
        max_concurrent_moves=s[catalog.MAX_CONCURRENT_MOVES],
        classic_groups=Limits(
            min_session_timeout_ms=s[catalog.GROUP_MIN_SESSION_TIMEOUT_MS],
            max_session_timeout_ms=s[catalog.GROUP_MAX_SESSION_TIMEOUT_MS],
            initial_rebalance_delay_ms=s[catalog.GROUP_INITIAL_REBALANCE_DELAY_MS],
        ),
        consumer_session_timeout_ms=s[catalog.GROUP_CONSUMER_SESSION_TIMEOUT_MS],
        share_state_partitions=s[catalog.SHARE_STATE_PARTITIONS],
        topic_defaults=TopicDefaults(
            partitions=s[catalog.DEFAULT_PARTITIONS],
            replication_factor=s[catalog.DEFAULT_REPLICATION_FACTOR],
        ),
    )


def console_settings(s: Settings, tls: TLSConfig) -> ConsoleSettings:
    """The console's settings: it calls this coordinator's own listener over loopback
    (with the CA the coordinator verifies peers with) unless told another URL. Never with
    the coordinator's own client certificate or secret: only users' credentials."""
    from conveyor.console.settings import ConsoleSettings
    from conveyor.transport.runner import parse_listen

    host, port = parse_listen(s[catalog.COORDINATOR_LISTEN])
    if host in ("0.0.0.0", "::", "[::]", ""):  # noqa: S104 (every interface: use loopback)
        host = "127.0.0.1"
    if ":" in host and not host.startswith("["):
        host = f"[{host}]"
    scheme = "https" if tls.enabled else "http"
    api_url = (s[catalog.CONSOLE_API_URL] or f"{scheme}://{host}:{port}").rstrip("/")
    prometheus = (s[catalog.PROMETHEUS_URL] or "").rstrip("/") or None
    return ConsoleSettings(
        api_url=api_url,
        secure_cookies=tls.enabled,
        session_idle_ms=s[catalog.CONSOLE_SESSION_IDLE_MS],
        session_lifetime_ms=s[catalog.CONSOLE_SESSION_LIFETIME_MS],
        prometheus_url=prometheus,
    )


def ha_from_settings(s: Settings, tls: TLSConfig) -> HaSettings | None:
    """None for the SQLite store; the etcd and election settings otherwise (raises
    SettingsError for values that cannot work together)."""
    from conveyor.coordinator.leadership import HaSettings
    from conveyor.coordinator.lease import LeaseSettings
    from conveyor.transport.etcd import EtcdSettings, parse_endpoints
    from conveyor.transport.runner import parse_listen

    store: str = s[catalog.STORE]
    if store == "sqlite" or store.startswith("sqlite:"):
        return None
    try:
        endpoints = parse_endpoints(store)
        lease = LeaseSettings.for_ttl(s[catalog.LEASE_TTL_MS])
        host, port = parse_listen(s[catalog.COORDINATOR_LISTEN])
    except ValueError as exc:
        raise SettingsError(str(exc)) from None
    if host in ("0.0.0.0", "::", ""):  # noqa: S104 -- a wildcard is not reachable as is
        host = socket.gethostname()
    advertised = s[catalog.COORDINATOR_ADVERTISED_URL] or f"{tls.scheme}://{host}:{port}"
    ca, cert, key = s[catalog.ETCD_CA], s[catalog.ETCD_CERT], s[catalog.ETCD_KEY]
    etcd = EtcdSettings(
        endpoints,
        tls=TLSConfig(
            cafile=str(ca) if ca else None,
            client_certfile=str(cert) if cert else None,
            client_keyfile=str(key) if key else None,
        ),
        username=s[catalog.ETCD_USER],
        password=s[catalog.ETCD_PASSWORD],
    )
    return HaSettings(
        etcd=etcd, prefix=s[catalog.ETCD_PREFIX], advertised_url=advertised.rstrip("/"), lease=lease
    )


def run_migrate(args: argparse.Namespace) -> int:
    """``conveyor coordinator migrate --from STORE --to STORE`` (coordinator/migrate.py);
    etcd's prefix, TLS and user come from the coordinator's own settings."""
    from conveyor.coordinator.migrate import migrate
    from conveyor.settings import kinds
    from conveyor.transport.etcd import EtcdSettings, parse_endpoints

    s = load(args)
    try:
        source, target = kinds.STORE.parse(args.source), kinds.STORE.parse(args.target)
        etcd_spec = next((x for x in (source, target) if x.startswith("etcd")), None)
        etcd = None
        if etcd_spec is not None:
            ca, cert, key = s[catalog.ETCD_CA], s[catalog.ETCD_CERT], s[catalog.ETCD_KEY]
            etcd = EtcdSettings(
                parse_endpoints(etcd_spec),
                tls=TLSConfig(
                    cafile=str(ca) if ca else None,
                    client_certfile=str(cert) if cert else None,
                    client_keyfile=str(key) if key else None,
                ),
                username=s[catalog.ETCD_USER],
                password=s[catalog.ETCD_PASSWORD],
            )
        done = migrate(source, target, s[catalog.ETCD_PREFIX], etcd)
    except ValueError as exc:  # kinds.BadValueError too
        raise SettingsError(f"migrate: {exc}") from None
    print(
        f"migrated cluster {done.cluster_id}: {done.brokers} brokers, {done.topics} topics, "
        f"{done.partitions} partitions, {done.offsets} committed offsets, {done.users} users, "
        f"{done.tokens} tokens, {done.acls} ACL rules, from {args.source} to {args.target} "
        "(read back and compared)"
    )
    return 0


def tls_from_args(args: argparse.Namespace | Settings) -> TLSConfig:
    from conveyor.transport.tls_args import tls_from_settings

    return tls_from_settings(args if isinstance(args, Settings) else load(args))


def run(args: argparse.Namespace) -> int:
    """Serve until SIGTERM or SIGINT; returns the exit code. Raises ConveyorError for bad
    settings (``SettingsError``) or an unusable data directory."""
    from conveyor.coordinator.http import build_coordinator_app
    from conveyor.transport.logs import setup_logging
    from conveyor.transport.runner import run as serve

    s = load(args)
    setup_logging("coordinator", s[catalog.LOG_LEVEL], s[catalog.LOG_FORMAT])
    from conveyor.settings import env_warnings

    for warning in env_warnings():
        log.warning("%s", warning)
    tls = tls_from_args(s)
    settings = dataclasses.replace(
        settings_from_args(s), internal_tls=tls, cluster_secret=s[catalog.CLUSTER_SECRET]
    )
    listen = s[catalog.COORDINATOR_LISTEN]
    log.info(
        "coordinator %s starting: listen=%s data=%s session_timeout_ms=%d auto_create_topics=%s "
        "default_partitions=%d default_replication_factor=%s replica_restore_delay_ms=%d "
        "max_concurrent_moves=%d tls=%s config=%s",
        __version__,
        listen,
        settings.data_dir,
        settings.session_timeout_ms,
        settings.auto_create_topics,
        settings.topic_defaults.partitions,
        settings.topic_defaults.replication_factor or "min(3, live brokers)",
        settings.replica_restore_delay_ms,
        settings.max_concurrent_moves,
        tls.enabled,
        s.config_path,
    )
    ha = ha_from_settings(s, tls)
    if ha is not None:
        log.info(
            "metadata store: etcd %s prefix %s; lease ttl %d ms (margin %d ms); advertised as %s",
            ",".join(ha.etcd.endpoints),
            ha.prefix,
            ha.lease.ttl_ms,
            ha.lease.margin_ms,
            ha.advertised_url,
        )
    app = build_coordinator_app(settings, ha=ha)
    from conveyor.transport.access import ACCESS_LOG_KEY

    app[ACCESS_LOG_KEY] = s[catalog.ACCESS_LOG]
    from conveyor.coordinator import security
    from conveyor.transport.auth import AUTH_KEY, AuthInstall, auth_settings
    from conveyor.transport.limit_args import auth_limits_from_settings, limits_from_settings

    auth = auth_settings(s[catalog.AUTH], s[catalog.CLUSTER_SECRET], auth_limits_from_settings(s))
    if ha is not None:  # every coordinator shares users, tokens and rules through etcd
        from conveyor.coordinator.security_etcd import etcd_security_store

        store: security.SecurityStore = etcd_security_store(app, auth.enabled)
    else:
        store = security.SecurityStore(settings.data_dir, auth.enabled)
    security.attach(app, store)
    app[AUTH_KEY] = AuthInstall(auth, store)
    log.info("authentication and ACLs: %s", "on" if auth.enabled else "off")
    if s[catalog.CONSOLE]:
        from conveyor.console import attach as attach_console

        console = console_settings(s, tls)
        attach_console(
            app, console, TLSConfig(cafile=tls.cafile), auth.enabled, auth.forwarding_key
        )
        log.info("web console at %s/console/", console.api_url)
    serve(app, listen, tls, limits=limits_from_settings(s), metrics_token=s[catalog.METRICS_TOKEN])
    log.info("coordinator stopped")
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m conveyor.coordinator",
        description="Conveyor coordinator: cluster metadata, placement, failure detection.",
    )
    add_arguments(parser)
    args = parser.parse_args(argv)
    from conveyor._extras import service_main

    return service_main("coordinator", lambda: run(args))
