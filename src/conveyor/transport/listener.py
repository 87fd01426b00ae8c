"""The HTTP listener: aiohttp behind a connection guard, with graceful shutdown.

aiohttp has no connection limits, so the listener wraps each connection's protocol in a
:class:`GuardedProtocol` that asks the listener's :class:`~conveyor.transport.limits.
ConnectionLimiter` before aiohttp sees a byte:

* admitted: every transport callback is passed to aiohttp's protocol unchanged, and the
  connection is released when it closes;
* refused: aiohttp never sees it; the guard writes ``503 TOO_MANY_CONNECTIONS`` (an
  ``ErrorBody`` with ``Retry-After``) without reading the request, half-closes, discards
  what the client still sends for at most ``REFUSED_LINGER_S`` (so the client reads the
  answer rather than a reset), and closes; one log line per reason per 10 s, counted in
  ``conveyor_http_connections_refused_total{reason}``.

Idle connections (no request in progress for ``idle_timeout_ms``) are closed by aiohttp's
keep-alive timer, which also runs from the moment a connection opens.

:func:`serve` replaces ``aiohttp.web.run_app`` (which takes no protocol factory): SIGTERM
and SIGINT stop accepting, in-flight requests finish (up to ``shutdown_timeout_s``), then
the application's cleanup hooks run.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
import ssl
from typing import Final, cast

from aiohttp import web

from conveyor.protocol.errors import ErrorCode
from conveyor.protocol.messages import ErrorBody
from conveyor.transport.limits import ConnectionLimiter, ConnectionLimits, Refusal, peer_address
from conveyor.transport.throttle import Throttle
from conveyor.transport.waits import within

log = logging.getLogger(__name__)

REFUSED_LINGER_S: Final = 1.0
REFUSED_LOG_INTERVAL_MS: Final = 10_000
RETRY_AFTER_S: Final = 1


def refusal_response(refusal: Refusal) -> bytes:
    """The whole HTTP/1.1 answer to a refused connection."""
    import msgspec

    body = msgspec.json.encode(
        ErrorBody(
            code=ErrorCode.TOO_MANY_CONNECTIONS.name,
            message=refusal.message,
            retriable=True,
            details={"reason": refusal.reason},
        )
    )
    head = (
        "HTTP/1.1 503 Service Unavailable\r\n"
        "Content-Type: application/json\r\n"
        f"Content-Length: {len(body)}\r\n"
        f"Retry-After: {RETRY_AFTER_S}\r\n"
        "Connection: close\r\n\r\n"
    )
    return head.encode() + body


class ListenerGuard:
    """One listener's limiter, refusal answer and throttled log; makes the protocols."""

    def __init__(self, limits: ConnectionLimits) -> None:
        self.limiter = ConnectionLimiter(limits)
        self._log_throttle = Throttle(REFUSED_LOG_INTERVAL_MS)

    def wrap(self, inner: asyncio.Protocol) -> GuardedProtocol:
        return GuardedProtocol(inner, self)

    def refuse(self, transport: asyncio.BaseTransport, address: str, refusal: Refusal) -> None:
        loop = asyncio.get_running_loop()
        decision = self._log_throttle.decide(refusal.reason, int(loop.time() * 1000))
        if decision.emit:
            log.warning(
                "refused a connection from %s: %s%s",
                address,
                refusal.message,
                f" ({decision.suppressed} more refused since the last line)"
                if decision.suppressed
                else "",
            )
        # A stream transport (uvloop's are not subclasses of asyncio.Transport).
        stream = cast(asyncio.Transport, transport)
        stream.write(refusal_response(refusal))
        if stream.can_write_eof():
            stream.write_eof()
        loop.call_later(REFUSED_LINGER_S, stream.close)


class GuardedProtocol(asyncio.Protocol):
    """aiohttp's protocol for one connection, behind the listener's limits."""

    __slots__ = ("_address", "_admitted", "_guard", "_inner", "_transport")

    def __init__(self, inner: asyncio.Protocol, guard: ListenerGuard) -> None:
        self._inner = inner
        self._guard = guard
        self._address = "unknown"
        self._admitted = False
        self._transport: asyncio.BaseTransport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._address = peer_address(transport.get_extra_info("peername"))
        refusal = self._guard.limiter.admit(self._address)
        if refusal is not None:
            self._transport = transport
            self._guard.refuse(transport, self._address, refusal)
            return
        self._admitted = True
        self._inner.connection_made(transport)

    def connection_lost(self, exc: Exception | None) -> None:
        if not self._admitted:
            return
        self._admitted = False
        self._guard.limiter.release(self._address)
        self._inner.connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        if self._admitted:
            self._inner.data_received(data)
        # refused: the request is discarded unread

    def eof_received(self) -> bool | None:
        if self._admitted:
            return self._inner.eof_received()
        if self._transport is not None:
            self._transport.close()  # the client read our answer and closed its side
        return None

    def pause_writing(self) -> None:
        if self._admitted:
            self._inner.pause_writing()

    def resume_writing(self) -> None:
        if self._admitted:
            self._inner.resume_writing()


async def serve(
    app: web.Application,
    *,
    host: str,
    port: int,
    ssl_context: ssl.SSLContext | None,
    limits: ConnectionLimits,
    shutdown_timeout_s: float,
    stop: asyncio.Event | None = None,
    listening: asyncio.Future[int] | None = None,
) -> None:
    """Serve ``app`` until SIGTERM or SIGINT (or ``stop`` is set, when given: then no
    signal handlers are installed), then shut down gracefully. ``listening`` receives the
    bound port."""
    from conveyor.transport.access import AccessLogger, access_logger
    from conveyor.transport.metrics import HTTP_METRICS_KEY

    guard = ListenerGuard(limits)
    metrics = app.get(HTTP_METRICS_KEY)
    if metrics is not None:
        metrics.watch_limiter(guard.limiter)
    runner = web.AppRunner(
        app,
        handle_signals=False,
        access_log=access_logger(app),
        access_log_class=AccessLogger,
        keepalive_timeout=limits.idle_timeout_ms / 1000,
        shutdown_timeout=shutdown_timeout_s,
    )
    await runner.setup()
    loop = asyncio.get_running_loop()
    signals = (signal.SIGTERM, signal.SIGINT) if stop is None else ()
    stop = stop or asyncio.Event()
    for signum in signals:
        loop.add_signal_handler(signum, stop.set)
    server: asyncio.Server | None = None
    try:
        handlers = runner.server
        assert handlers is not None  # set by setup()
        server = await loop.create_server(
            lambda: guard.wrap(handlers()),
            host,
            port,
            ssl=ssl_context,
            backlog=1024,
            reuse_address=True,
        )
        if listening is not None:
            listening.set_result(server.sockets[0].getsockname()[1])
        await stop.wait()
        log.info("stopping: no new connections, finishing requests in flight")
    finally:
        for signum in signals:
            loop.remove_signal_handler(signum)
        if server is not None:
            server.close()
        await runner.cleanup()
        if server is not None:
            with contextlib.suppress(asyncio.TimeoutError):
                await within(server.wait_closed(), 1.0)
