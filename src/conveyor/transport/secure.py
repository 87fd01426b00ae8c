"""What a listener adds when TLS is on: the internal-route guard and reload on SIGHUP.

:func:`install` is called by ``runner.run`` on the application before it starts, with the
live server ``SSLContext``:

* with ``internal_mtls``, every route declared ``internal`` (heartbeats, replication,
  reconciliation) answers 403 ``FORBIDDEN`` to a request whose connection did not present
  a client certificate the CA verified; public routes are unaffected (the listener asks for
  a certificate but does not require one);
* SIGHUP loads the certificate, key and CA again into the live context: new handshakes get
  the new certificate, open connections and in-flight requests carry on with theirs. A bad
  file is logged and the previous certificate stays in service.
"""

from __future__ import annotations

import asyncio
import logging
import signal
import ssl
from typing import Any, Final

from aiohttp import web
from aiohttp.typedefs import Middleware

from conveyor.protocol.errors import AuthorizationError
from conveyor.transport.metrics import route_template
from conveyor.transport.server import ROUTES_KEY, Handler
from conveyor.transport.tls import TLSConfig, reload_server_context

log = logging.getLogger(__name__)


def internal_routes(app: web.Application) -> frozenset[tuple[str, str]]:
    """(method, path template) of every route declared ``internal`` in ``app``."""
    return frozenset((r.method, r.path) for r in app.get(ROUTES_KEY, []) if r.internal)


def peer_certificate(request: web.Request) -> dict[str, Any] | None:
    """The client certificate of the request's connection, if one was presented and
    verified (with ``CERT_OPTIONAL`` OpenSSL only reports verified ones)."""
    ssl_object = request.transport.get_extra_info("ssl_object") if request.transport else None
    if not isinstance(ssl_object, ssl.SSLObject | ssl.SSLSocket):
        return None
    cert = ssl_object.getpeercert()
    return cert or None


def internal_mtls_middleware(internal: frozenset[tuple[str, str]]) -> Middleware:
    @web.middleware
    async def middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
        if (request.method, route_template(request)) in internal and (
            peer_certificate(request) is None
        ):
            raise AuthorizationError(
                f"{request.path} is internal: it needs the cluster's client certificate"
            )
        return await handler(request)

    return middleware


def reload_now(context: ssl.SSLContext, tls: TLSConfig) -> bool:
    """Reload the certificate files into ``context``; False (and logged) when they are
    unusable, in which case the previous certificate keeps being served."""
    try:
        reload_server_context(context, tls)
    except (OSError, ssl.SSLError, ValueError) as exc:
        log.error("TLS reload failed, still serving the previous certificate: %s", exc)
        return False
    log.info("TLS certificate reloaded from %s", tls.certfile)
    return True


SSL_CONTEXT_KEY: Final = web.AppKey("conveyor_ssl_context", ssl.SSLContext)


def install(app: web.Application, tls: TLSConfig, context: ssl.SSLContext | None) -> None:
    """Add the guards and the SIGHUP handler to ``app`` (before it starts). With auth on
    (``app[AUTH_KEY]``), its middleware guards internal routes too: a verified client
    certificate or the cluster secret. The live context is kept in ``app[SSL_CONTEXT_KEY]``
    so that other listeners of the process (the broker's Kafka listener) serve the same
    certificate and are reloaded with it."""
    from conveyor.transport.auth import AUTH_KEY, auth_middleware

    if context is not None:
        app[SSL_CONTEXT_KEY] = context

    auth = app.get(AUTH_KEY)
    if auth is not None and auth.settings.enabled:
        app.middlewares.append(
            auth_middleware(
                app,
                auth.settings,
                auth.source,
                lambda request: tls.internal_mtls and peer_certificate(request) is not None,
            )
        )
    elif context is not None and (tls.internal_mtls or tls.require_client_cert):
        app.middlewares.append(internal_mtls_middleware(internal_routes(app)))
    if context is None:
        return

    async def on_startup(_: web.Application) -> None:
        loop = asyncio.get_running_loop()
        loop.add_signal_handler(signal.SIGHUP, reload_now, context, tls)

    async def on_cleanup(_: web.Application) -> None:
        asyncio.get_running_loop().remove_signal_handler(signal.SIGHUP)

    app.on_startup.append(on_startup)
    app.on_cleanup.append(on_cleanup)
