"""Run an aiohttp application on uvloop with graceful shutdown.

SIGTERM and SIGINT stop accepting connections, let in-flight requests finish (up to
``shutdown_timeout_s``), then run the application's cleanup hooks (services close their
logs there, which flushes them).
"""

from __future__ import annotations

import asyncio
import ipaddress
import logging

from aiohttp import web

from conveyor.transport.limits import ConnectionLimits
from conveyor.transport.tls import TLSConfig
from conveyor.transport.waits import settle_all

log = logging.getLogger(__name__)


def parse_listen(listen: str) -> tuple[str, int]:
    """``HOST:PORT`` (or ``:PORT`` for all interfaces) -> (host, port)."""
    host, _, port = listen.rpartition(":")
    if not port.isdigit():
        raise ValueError(f"--listen must be HOST:PORT, not {listen!r}")
    return host or "0.0.0.0", int(port)  # noqa: S104 (the user asked for all interfaces)


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False  # a host name other than localhost may resolve to anything


def warn_if_exposed(host: str, tls: TLSConfig) -> None:
    if not tls.enabled and not is_loopback(host):
        log.warning(
            "LISTENING WITHOUT TLS ON %s: anyone who can reach this address can read and "
            "write data; configure a certificate for anything but local development",
            host,
        )


def new_event_loop() -> asyncio.AbstractEventLoop:
    """uvloop where installed (Linux, macOS), the default loop elsewhere."""
    try:
        import uvloop
    except ImportError:  # pragma: no cover - uvloop is a dependency on Linux
        return asyncio.new_event_loop()
    loop: asyncio.AbstractEventLoop = uvloop.new_event_loop()
    return loop


def run(
    app: web.Application,
    listen: str,
    tls: TLSConfig,
    shutdown_timeout_s: float = 10.0,
    limits: ConnectionLimits | None = None,
    *,
    metrics_token: str | None = None,
) -> None:
    """Serve ``app`` on ``listen`` behind the connection ``limits`` (transport/listener.py)
    until SIGTERM or SIGINT; with ``metrics_token``, ``/metrics`` requires it."""
    from conveyor.transport import secure
    from conveyor.transport.listener import serve

    host, port = parse_listen(listen)
    warn_if_exposed(host, tls)
    ssl_context = tls.server_context()
    secure.install(app, tls, ssl_context)
    if ssl_context is not None:
        log.info(
            "serving HTTPS (TLS 1.2+) with %s; internal routes need a client certificate: %s",
            tls.certfile,
            tls.internal_mtls or tls.require_client_cert,
        )
    from conveyor.transport.server import METRICS_TOKEN_KEY

    if metrics_token is not None:
        app[METRICS_TOKEN_KEY] = metrics_token
    log.info("/metrics: %s", "needs the scrape token" if metrics_token else "open")
    limits = limits or ConnectionLimits()
    log.info(
        "connection limits: %d per listener, %d per client address, idle timeout %d ms",
        limits.connections_max,
        limits.connections_per_address_max,
        limits.idle_timeout_ms,
    )
    loop = new_event_loop()
    asyncio.set_event_loop(loop)
    try:
        loop.run_until_complete(
            serve(
                app,
                host=host,
                port=port,
                ssl_context=ssl_context,
                limits=limits,
                shutdown_timeout_s=shutdown_timeout_s,
            )
        )
    finally:
        _cancel_all(loop)
        loop.run_until_complete(loop.shutdown_asyncgens())
        loop.close()


def _cancel_all(loop: asyncio.AbstractEventLoop) -> None:
    """Cancel what the application left running (as ``aiohttp.web.run_app`` does)."""
    tasks = [task for task in asyncio.all_tasks(loop) if not task.done()]
    for task in tasks:
        task.cancel()
    if tasks:
        loop.run_until_complete(settle_all(*tasks))
