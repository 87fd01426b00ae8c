"""HTTP clients for the library, the CLI and service-to-service calls.

Measured on this machine kind: urllib3 (sync) and aiohttp (async) take about 450 us per
small request where httpx takes about 1 ms, so those two are used. Both are built from the
one :class:`TLSConfig`. Error bodies become typed exceptions here, once, at the boundary;
connection failures become retriable ``NETWORK_ERROR``.

A request without its own ``timeout_s`` gets the client's: urllib3 and aiohttp take an
explicit ``timeout=None`` as "no timeout at all", so None is never passed to them (a
request to a paused coordinator waited forever).
"""

from __future__ import annotations

import functools
import os
import time
import uuid
from typing import Any, Final, TypeVar

import aiohttp
import msgspec
import urllib3

from conveyor.protocol.errors import ConveyorError, ErrorCode, RetriableError, error_from_dict
from conveyor.protocol.messages import CoordinatorStatus
from conveyor.transport.coordinators import (
    STATUS_TIMEOUT_S,
    CoordinatorSet,
    Failover,
    NotSentError,
    claims_active,
    takeover_error,
    with_failover,
)
from conveyor.transport.takeover import POOL_CLASSES, WATCH
from conveyor.transport.tls import TLSConfig

T = TypeVar("T")
# aiohttp keeps and aborts closed TLS transports only on Pythons that leak them (it warns
# and ignores the flag elsewhere).
_CLEANUP_CLOSED: Final = bool(getattr(aiohttp.connector, "NEEDS_CLEANUP_CLOSED", False))
_ENCODER = msgspec.json.Encoder()
# Sent with every request: one random id per client object, so that services can count the
# distinct clients talking to them (docs/monitoring.md), never tied to a person or host.
CLIENT_ID_HEADER: Final = "X-Conveyor-Client-Id"


def default_url(url: str | None) -> str:
    """``url``, else the client's ``url`` setting (``--url``, ``CONVEYOR_URL``, the file),
    else the local default coordinator. May name several coordinators,
    comma-separated (see :class:`CoordinatorSet`)."""
    if url:
        return url.rstrip("/")
    from conveyor.settings import catalog, client_settings

    return client_settings()[catalog.URL].rstrip("/")


def coordinator_set(url: str | None) -> CoordinatorSet:
    """The coordinators ``url`` (or ``CONVEYOR_URL``, or the default) names. Raises a
    typed INVALID_REQUEST for a malformed list."""
    try:
        return CoordinatorSet.parse(default_url(url))
    except ValueError as exc:
        raise ConveyorError(str(exc), code=ErrorCode.INVALID_REQUEST) from None


def tls_error(method: str, url: str, exc: BaseException) -> ConveyorError:
    """A failed TLS handshake: not retriable (it will fail the same way), with the likely
    cause for the two common ones."""
    text = str(exc)
    hint = ""
    if "WRONG_VERSION_NUMBER" in text or "record layer failure" in text:
        hint = " (the server does not speak TLS: use http://)"
    elif "CERTIFICATE_VERIFY_FAILED" in text:
        hint = " (set CONVEYOR_CA, or --ca, to the CA that signed the server's certificate)"
    return ConveyorError(f"{method} {url}: {text}{hint}", code=ErrorCode.TLS_ERROR)


def handshake_failure(method: str, url: str, exc: BaseException) -> Exception:
    """A failed TLS handshake, typed: a server that closes the connection in the middle
    (EOF) may be one that refuses this client's certificate or one going away (a restart,
    a failover), so that stays a retriable network error, not sent; anything else
    (certificate verification, plain HTTP on the other end) is a TLS_ERROR."""
    text = str(exc)
    if "EOF occurred in violation of protocol" in text or "UNEXPECTED_EOF" in text:
        hint = " (the server closed the TLS handshake: it refused this client's certificate"
        hint += " or is going away)"
        error = RetriableError(f"{method} {url}: {text}{hint}", code=ErrorCode.NETWORK_ERROR)
        return NotSentError(error)
    return tls_error(method, url, exc)


def aiohttp_failure(method: str, url: str, exc: aiohttp.ClientError | TimeoutError) -> Exception:
    """An aiohttp request that got no answer, typed (for ``AsyncHTTP`` and the web
    console's client alike): a failed TLS handshake as :func:`handshake_failure` says, a
    connection that could not be opened :class:`NotSentError`, anything else (sent, so
    maybe done) a retriable NETWORK_ERROR."""
    # ClientSSLError is a ClientConnectorError: it is looked at first
    if isinstance(exc, aiohttp.ClientSSLError | aiohttp.ServerFingerprintMismatch):
        return handshake_failure(method, url, exc)
    if isinstance(exc, aiohttp.ClientConnectorError):
        error = RetriableError(f"{method} {url}: {exc}", code=ErrorCode.NETWORK_ERROR)
        return NotSentError(error)
    text = f"{method} {url}: {exc or type(exc).__name__}"
    return RetriableError(text, code=ErrorCode.NETWORK_ERROR)


def error_for(status: int, data: bytes) -> ConveyorError:
    try:
        body = msgspec.json.decode(data)
    except msgspec.DecodeError:
        body = None
    if isinstance(body, dict) and "code" in body:
        return error_from_dict(body)
    code = ErrorCode.INTERNAL_ERROR if status >= 500 else ErrorCode.INVALID_REQUEST
    text = data[:200].decode("utf-8", "replace")
    return ConveyorError(f"HTTP {status}: {text}", code=code, status=status)


def secret_from_env(name: str) -> str | None:
    """The secret setting read from variable ``name``: ``$name``, else the content of the
    file ``$name_FILE`` names (stripped), as Docker and Kubernetes secrets are mounted;
    None when neither is set or the value is empty."""
    from conveyor.settings import catalog
    from conveyor.settings.core import resolve_one

    value: str | None = resolve_one(catalog.by_env(name), "client", {}, os.environ, None).value
    return value


def authorization_from_env() -> str | None:
    """The client's token (``--token``, ``CONVEYOR_TOKEN``), else its user and password,
    else the cluster's own ``CONVEYOR_CLUSTER_SECRET`` (what brokers send), else nothing.
    Secrets also come from a file named by the variable with ``_FILE`` appended."""
    from conveyor.settings import catalog, client_settings
    from conveyor.transport.credentials import authorization_header

    settings = client_settings()
    return authorization_header(
        settings[catalog.TOKEN] or settings[catalog.CLUSTER_SECRET],
        settings[catalog.USER],
        settings[catalog.PASSWORD],
    )


def _status_of(data: bytes) -> CoordinatorStatus | None:
    try:
        return msgspec.json.decode(data, type=CoordinatorStatus)
    except msgspec.DecodeError:
        return None


def encode_body(body: msgspec.Struct | dict[str, Any] | None) -> bytes | None:
    return None if body is None else _ENCODER.encode(body)


class SyncHTTP:
    """A pooled, thread-safe urllib3 client."""

    def __init__(
        self,
        tls: TLSConfig | None = None,
        timeout_s: float = 30.0,
        pool_size: int = 16,
        authorization: str | None = None,
        coordinators: CoordinatorSet | None = None,
    ) -> None:
        tls = tls or TLSConfig.from_env()
        self.client_id = uuid.uuid4().hex[:16]
        self.coordinators = coordinators  # requests to these go to the active one
        # The Authorization header (transport/credentials.py); None: from the environment.
        self._authorization = authorization or authorization_from_env()
        self._pool = urllib3.PoolManager(
            maxsize=pool_size,
            ssl_context=tls.client_context(),
            retries=False,
            timeout=urllib3.Timeout(total=timeout_s),
        )
        self._pool.pool_classes_by_scheme = dict(POOL_CLASSES)  # wait as takeover.py says

    def request(
        self,
        method: str,
        url: str,
        *,
        body: bytes | None = None,
        content_type: str = "application/json",
        accept: str = "application/json",
        timeout_s: float | None = None,
    ) -> urllib3.BaseHTTPResponse:
        options: dict[str, Any] = {
            "body": body, "content_type": content_type, "accept": accept, "timeout_s": timeout_s
        }  # fmt: skip
        origin = self.coordinators.origin_of(url) if self.coordinators else None
        if origin is None or self.coordinators is None:
            try:
                return self._request_once(method, url, **options)
            except NotSentError as exc:
                raise exc.error from exc.__cause__
        failover = Failover(self.coordinators, url, origin)
        several = len(self.coordinators.urls) > 1
        while True:
            active, target = failover.next_url()
            token = WATCH.set(functools.partial(self._check_takeover, active) if several else None)
            try:
                return self._request_once(method, target, **options)
            except (NotSentError, ConveyorError) as exc:
                pause = failover.after(active, exc)
            finally:
                WATCH.reset(token)
            time.sleep(pause)

    def _check_takeover(self, silent: str) -> None:
        """``silent`` has not answered yet: raise NOT_COORDINATOR if another took over."""
        assert self.coordinators is not None
        token = WATCH.set(None)  # the probes themselves are not watched
        try:
            others = {u: self._status(u) for u in self.coordinators.urls if u != silent}
            status = self._status(silent) if claims_active(others) else None
        finally:
            WATCH.reset(token)
        error = takeover_error(silent, others, status)
        if error is not None:
            raise error

    def _status(self, url: str) -> CoordinatorStatus | None:
        try:
            response = self._request_once(
                "GET", url + "/v1/coordinator", body=None, content_type="application/json",
                accept="application/json", timeout_s=STATUS_TIMEOUT_S,
            )  # fmt: skip
        except (NotSentError, ConveyorError):
            return None
        return _status_of(response.data)

    def _request_once(
        self,
        method: str,
        url: str,
        *,
        body: bytes | None,
        content_type: str,
        accept: str,
        timeout_s: float | None,
    ) -> urllib3.BaseHTTPResponse:
        headers = {"Accept": accept, CLIENT_ID_HEADER: self.client_id}
        if self._authorization is not None:
            headers["Authorization"] = self._authorization
        if body is not None:
            headers["Content-Type"] = content_type
        options: dict[str, Any] = {"body": body, "headers": headers}
        if timeout_s is not None:  # None: the pool's (never timeout=None: no timeout)
            options["timeout"] = urllib3.Timeout(total=timeout_s)
        try:
            response = self._pool.request(method, url, **options)
        except urllib3.exceptions.SSLError as exc:  # the handshake
            raise handshake_failure(method, url, exc) from exc
        except (
            urllib3.exceptions.NewConnectionError,
            urllib3.exceptions.ConnectTimeoutError,
        ) as exc:
            error = RetriableError(f"{method} {url}: {exc}", code=ErrorCode.NETWORK_ERROR)
            raise NotSentError(error) from exc
        except urllib3.exceptions.HTTPError as exc:
            raise RetriableError(f"{method} {url}: {exc}", code=ErrorCode.NETWORK_ERROR) from exc
        if response.status >= 400:
            raise error_for(response.status, response.data)
        return response

    def call(
        self,
        method: str,
        url: str,
        response_type: type[T],
        body: msgspec.Struct | dict[str, Any] | None = None,
        timeout_s: float | None = None,
    ) -> T:
        response = self.request(method, url, body=encode_body(body), timeout_s=timeout_s)
        return msgspec.json.decode(response.data, type=response_type)

    def close(self) -> None:
        self._pool.clear()


class AsyncHTTP:
    """An aiohttp session made lazily inside the running loop."""

    def __init__(
        self,
        tls: TLSConfig | None = None,
        timeout_s: float = 30.0,
        limit: int = 100,
        authorization: str | None = None,
        coordinators: CoordinatorSet | None = None,
    ) -> None:
        self._tls = tls or TLSConfig.from_env()
        self.coordinators = coordinators  # requests to these go to the active one
        self.client_id = uuid.uuid4().hex[:16]
        self._authorization = authorization or authorization_from_env()
        self._timeout_s = timeout_s
        self._limit = limit
        self._session: aiohttp.ClientSession | None = None
        self._closed = False

    @property
    def session(self) -> aiohttp.ClientSession:
        if self._closed:
            # A task still running after close() must not open a new session: its
            # connections would outlive the client's loop (unclosed TLS transports).
            raise RetriableError("the HTTP client is closed", code=ErrorCode.NETWORK_ERROR)
        if self._session is None or self._session.closed:
            connector = aiohttp.TCPConnector(
                limit=self._limit,
                ssl=self._tls.client_context(),
                # A connection closed while its request was cancelled (a client closing
                # with requests in flight) starts a graceful TLS shutdown that the
                # connector no longer tracks; it waits for the peer's close_notify, so a
                # loop closed meanwhile (or a paused peer) leaves the transport open. Where
                # aiohttp supports it, it keeps such transports and aborts them on close.
                enable_cleanup_closed=_CLEANUP_CLOSED,
            )
            self._session = aiohttp.ClientSession(
                connector=connector,
                timeout=aiohttp.ClientTimeout(total=self._timeout_s),
            )
        return self._session

    async def request(
        self,
        method: str,
        url: str,
        *,
        body: bytes | None = None,
        content_type: str = "application/json",
        accept: str = "application/json",
        timeout_s: float | None = None,
    ) -> tuple[int, dict[str, str], bytes]:
        options: dict[str, Any] = {
            "body": body, "content_type": content_type, "accept": accept, "timeout_s": timeout_s
        }  # fmt: skip
        return await with_failover(
            self.coordinators,
            url,
            lambda target: self._request_once(method, target, **options),
            self._status,
        )

    async def _status(self, url: str) -> CoordinatorStatus | None:
        try:
            _, _, data = await self._request_once(
                "GET", url + "/v1/coordinator", body=None, content_type="application/json",
                accept="application/json", timeout_s=STATUS_TIMEOUT_S,
            )  # fmt: skip
        except (NotSentError, ConveyorError):
            return None
        return _status_of(data)

    async def _request_once(
        self,
        method: str,
        url: str,
        *,
        body: bytes | None,
        content_type: str,
        accept: str,
        timeout_s: float | None,
    ) -> tuple[int, dict[str, str], bytes]:
        headers = {"Accept": accept, CLIENT_ID_HEADER: self.client_id}
        if self._authorization is not None:
            headers["Authorization"] = self._authorization
        if body is not None:
            headers["Content-Type"] = content_type
        options: dict[str, Any] = {"data": body, "headers": headers}
        if timeout_s is not None:  # None: the session's (never timeout=None: no timeout)
            options["timeout"] = aiohttp.ClientTimeout(total=timeout_s)
        try:
            async with self.session.request(method, url, **options) as response:
                data = await response.read()
                status, response_headers = response.status, dict(response.headers)
        except (aiohttp.ClientError, TimeoutError) as exc:
            raise aiohttp_failure(method, url, exc) from exc
        if status >= 400:
            raise error_for(status, data)
        return status, response_headers, data

    async def call(
        self,
        method: str,
        url: str,
        response_type: type[T],
        body: msgspec.Struct | dict[str, Any] | None = None,
        timeout_s: float | None = None,
    ) -> T:
        _, _, data = await self.request(method, url, body=encode_body(body), timeout_s=timeout_s)
        return msgspec.json.decode(data, type=response_type)

    async def close(self) -> None:
        """Close every connection, aborting TLS ones (no close_notify exchange: a client
        that closes does not wait for a peer that may be paused or gone), and return once
        their transports are closed, so the caller may close its loop at once."""
        self._closed = True
        if self._session is not None:
            session, self._session = self._session, None
            await session.close()  # aborts TLS connections (aiohttp >= 3.12 on 3.11+)
