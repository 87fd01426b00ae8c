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

from conveyor.transport.tls import TLSConfig

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
    app: web.Application, listen: str, tls: TLSConfig, shutdown_timeout_s: float = 10.0
) -> None:
    from conveyor.transport import secure

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
    loop = new_event_loop()
    asyncio.set_event_loop(loop)
    web.run_app(
        app,
        host=host,
        port=port,
        ssl_context=ssl_context,
        shutdown_timeout=shutdown_timeout_s,
        access_log=None,
        print=None,
        loop=loop,
        handle_signals=True,
    )
