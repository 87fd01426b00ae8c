"""Conveyor's own client end of the Kafka protocol: one asyncio connection per broker.

What the client's Kafka transport (``client/kafka_*.py``) sends its data path over. The
bytes are the wire codec's (``protocol/kafka/codec.py``: the same message classes the
broker's listener decodes with); this module only moves frames:

- **Framing**: every frame is a 4-byte size then that many bytes; an answer larger than
  ``max_frame_bytes`` or smaller than a response header closes the connection before it
  is read (``protocol/kafka/framing.py``).
- **Correlation ids and pipelining**: up to ``max_in_flight`` requests are written
  without waiting for answers (Kafka's ``max.in.flight.requests.per.connection``, 5);
  a broker answers one connection's requests in order, so each answer must carry the
  correlation id of the oldest request waiting. Anything else (an unknown id, bytes that
  do not decode) is a broken connection: it is closed and every request on it fails.
  A request sent without an answer expected (Produce with acks=0) takes no slot.
- **ApiVersions** first (v3, or the version the broker offers when it answers
  UNSUPPORTED_VERSION, KIP-511); :meth:`KafkaConnection.version` then picks, per API,
  the highest version both sides speak.
- **TLS** from the one :class:`TLSConfig` (its ``client_context``), **SASL** PLAIN or
  SCRAM-SHA-256/512 (``protocol/kafka/sasl.py``'s client side) over SaslHandshake v1 and
  SaslAuthenticate, before anything else is sent.
- **Failures** are Conveyor's typed errors: a connection that cannot be opened or that
  closes is a retriable NETWORK_ERROR; a failed TLS verification TLS_ERROR; failed
  authentication UNAUTHENTICATED; a request unanswered within ``request_timeout_ms`` is
  REQUEST_TIMED_OUT and closes the connection (the answers behind it would be
  misattributed otherwise; Kafka's NetworkClient does the same).

:class:`KafkaConnections` keeps one connection per broker address and reopens it on the
next use after it closed.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import collections
import contextlib
import logging
import secrets
import ssl
from collections.abc import Callable, Coroutine
from dataclasses import dataclass, field
from typing import Any, Final

from conveyor._version import __version__
from conveyor.protocol.errors import ConveyorError, ErrorCode, RetriableError
from conveyor.protocol.kafka.apis import ApiKey
from conveyor.protocol.kafka.codec import (
    ResponseError,
    decode_response,
    encode_request,
    new_request,
    response_correlation_id,
)
from conveyor.protocol.kafka.errors import KafkaError, conveyor_error
from conveyor.protocol.kafka.framing import (
    MAX_FRAME_BYTES_DEFAULT,
    RESPONSE_HEADER_BYTES_MIN,
    SIZE_BYTES,
    FrameError,
    frame_size,
)
from conveyor.protocol.kafka.sasl import (
    PLAIN,
    SaslError,
    check_server_final,
    plain_message,
    scram_client_final,
    scram_client_first,
)
from conveyor.protocol.security import SCRAM_MECHANISMS
from conveyor.transport.client import tls_error
from conveyor.transport.tls import TLSConfig
from conveyor.transport.waits import settle_all

log = logging.getLogger(__name__)

API_VERSIONS_VERSION: Final = 3  # the newest ApiVersions request this client sends
MAX_IN_FLIGHT_DEFAULT: Final = 5  # Kafka's max.in.flight.requests.per.connection
CLIENT_SOFTWARE_NAME: Final = "conveyor-python"


@dataclass(frozen=True, slots=True)
class SaslConfig:
    """SASL credentials: PLAIN (a Conveyor user's password, or an API token as the
    password with any user name) or SCRAM-SHA-256/512 (a user's password)."""

    mechanism: str
    user: str
    password: str = field(repr=False)

    def __post_init__(self) -> None:
        if self.mechanism != PLAIN and self.mechanism not in SCRAM_MECHANISMS:
            raise ValueError(
                f"SASL mechanism {self.mechanism!r}: one of PLAIN, {', '.join(SCRAM_MECHANISMS)}"
            )


@dataclass(frozen=True, slots=True)
class KafkaClientOptions:
    """How connections are opened and used; every client of one process may share one."""

    tls: TLSConfig | None = None  # None or no CA/verify settings: plaintext listeners
    use_tls: bool = False  # connect with TLS (``tls`` supplies CA and client certificate)
    sasl: SaslConfig | None = None
    client_id: str = CLIENT_SOFTWARE_NAME
    connect_timeout_ms: int = 10_000
    request_timeout_ms: int = 30_000
    max_in_flight: int = MAX_IN_FLIGHT_DEFAULT
    max_frame_bytes: int = MAX_FRAME_BYTES_DEFAULT

    def ssl_context(self) -> ssl.SSLContext | None:
        if not self.use_tls:
            return None
        return (self.tls or TLSConfig()).client_context()


SCRAM_DEFAULT: Final = "SCRAM-SHA-512"


def sasl_from_authorization(header: str | None) -> SaslConfig | None:
    """The SASL credentials of the client's ``Authorization`` header (one source of
    credentials for both transports): a Bearer token goes as PLAIN's password (the
    broker ignores the user name then), Basic's user and password use SCRAM-SHA-512
    (the password never crosses the wire; PLAIN would also make the broker run scrypt
    per connection)."""
    if header is None:
        return None
    scheme, _, value = header.partition(" ")
    if scheme == "Bearer" and value:
        return SaslConfig(PLAIN, "token", value)
    if scheme == "Basic" and value:
        try:
            user, sep, password = base64.b64decode(value, validate=True).decode().partition(":")
        except (binascii.Error, UnicodeDecodeError):
            user, sep, password = "", "", ""
        if sep and user:
            return SaslConfig(SCRAM_DEFAULT, user, password)
    raise ValueError("the client's credentials are neither a token nor a user and password")


def split_address(address: str) -> tuple[str, int]:
    """``host:port`` or ``[v6]:port`` -> (host, port); ValueError when malformed."""
    host, sep, port = address.strip().rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise ValueError(f"not a HOST:PORT Kafka address: {address!r}")
    return host.strip("[]"), int(port)


Decoder = Callable[[int, int, bytes], Any]
"""Reads an answer frame (header included) of (api key, version): ``decode_response`` by
default; a caller may read its own answers (the producer's Produce answers). Whatever it
raises makes the answer a broken one: the connection closes, its requests fail retriably."""


@dataclass(slots=True)
class _Pending:
    correlation_id: int
    api_key: int
    api_version: int
    future: asyncio.Future[Any]
    decode: Decoder


class KafkaConnection:
    """One connection to one broker; use on one event loop. Open with :meth:`open`."""

    def __init__(
        self,
        address: str,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        options: KafkaClientOptions,
    ) -> None:
        self.address = address
        self._reader = reader
        self._writer = writer
        self._options = options
        self._next_correlation_id = 0
        self._pending: collections.deque[_Pending] = collections.deque()
        self._slots = asyncio.Semaphore(options.max_in_flight)
        self._closed: ConveyorError | None = None
        self._versions: dict[int, tuple[int, int]] = {}
        self._read_task = asyncio.create_task(self._read_loop(), name=f"kafka-read-{address}")

    @classmethod
    async def open(cls, address: str, options: KafkaClientOptions) -> KafkaConnection:
        """Connect, negotiate versions and authenticate; typed errors on failure."""
        host, port = split_address(address)
        context = options.ssl_context()
        try:
            async with asyncio.timeout(options.connect_timeout_ms / 1000):
                reader, writer = await asyncio.open_connection(
                    host, port, ssl=context, server_hostname=host if context else None
                )
        except ssl.SSLError as exc:
            if "EOF" in str(exc):  # closed mid-handshake: maybe going away, so retriable
                raise _network_error(address, exc) from None
            raise tls_error("CONNECT", f"kafka://{address}", exc) from None
        except ssl.CertificateError as exc:
            raise tls_error("CONNECT", f"kafka://{address}", exc) from None
        except (OSError, TimeoutError) as exc:
            raise _network_error(address, exc) from None
        connection = cls(address, reader, writer, options)
        try:
            await connection._negotiate()
            if options.sasl is not None:
                await connection._authenticate(options.sasl)
        except BaseException:
            await connection.close()
            raise
        return connection

    @property
    def closed(self) -> bool:
        return self._closed is not None

    @property
    def in_flight(self) -> int:
        return len(self._pending)

    def api_range(self, api_key: int) -> tuple[int, int] | None:
        """The versions of ``api_key`` the broker announced (None: not served)."""
        return self._versions.get(api_key)

    def version(self, api_key: ApiKey, lowest: int, highest: int) -> int:
        """The highest version of ``api_key`` in [lowest, highest] the broker serves;
        UNSUPPORTED_VERSION when there is none."""
        served = self._versions.get(api_key)
        if served is not None:
            top = min(highest, served[1])
            if top >= max(lowest, served[0]):
                return top
        raise ConveyorError(
            f"broker {self.address} serves {api_key.name} at {served or 'no version'}; "
            f"this client speaks v{lowest}-{highest}",
            code=ErrorCode.UNSUPPORTED_VERSION,
        )

    async def call(
        self, api_key: ApiKey, api_version: int, body: Any, *, timeout_ms: int | None = None
    ) -> Any:
        """Send one request and wait for its answer (the decoded response message).
        Requests of concurrent callers are pipelined, up to ``max_in_flight``."""
        answer = await self.start_call(api_key, api_version, body, timeout_ms=timeout_ms)
        return await answer

    async def start_call(
        self,
        api_key: ApiKey,
        api_version: int,
        body: Any,
        *,
        timeout_ms: int | None = None,
        decode: Decoder = decode_response,
    ) -> Coroutine[Any, Any, Any]:
        """Write one request once a slot is free and return the wait for its answer, to
        be awaited at once: a caller that must write requests in a given order (the
        producer's batches of one partition) holds its turn only until the write. The
        answer is what ``decode`` reads from its frame (kafka-python's message by
        default); an error it raises closes the connection, as a broken answer."""
        await self._slots.acquire()
        try:
            future = self._write(api_key, api_version, body, expect_answer=True, decode=decode)
        except BaseException:
            self._slots.release()
            raise
        return self._answer_of(future, api_key, timeout_ms)

    async def _answer_of(
        self, future: asyncio.Future[Any], api_key: ApiKey, timeout_ms: int | None
    ) -> Any:
        if self._writer.transport.get_write_buffer_size():
            await self._drain()  # else the socket took the request whole: nothing to wait for
        timeout_s = (timeout_ms or self._options.request_timeout_ms) / 1000
        # One timer that fails the request, not a timeout scope around the await (a
        # Timeout object and a scope per request, W3's hot path: docs/benchmarks.md). A
        # cancelled caller cancels its future, which _answer then skips (and Python 3.11's
        # wait_for, which loses a cancellation arriving with the answer, is not used: gh-86296).
        timer = asyncio.get_running_loop().call_later(
            timeout_s, self._time_out, future, api_key, timeout_s
        )
        try:
            return await future
        finally:
            timer.cancel()

    def _time_out(self, future: asyncio.Future[Any], api_key: ApiKey, timeout_s: float) -> None:
        """No answer in time: close the connection (the answers behind it would be
        misattributed otherwise), failing this request with REQUEST_TIMED_OUT."""
        if future.done():
            return
        error = RetriableError(
            f"{api_key.name} to kafka://{self.address}: no answer in {timeout_s * 1000:.0f} ms",
            code=ErrorCode.REQUEST_TIMED_OUT,
        )
        future.set_exception(error)
        self._close_now(error)

    async def send(self, api_key: ApiKey, api_version: int, body: Any) -> None:
        """Send a request the broker does not answer (Produce with acks=0)."""
        self._write(api_key, api_version, body, expect_answer=False)
        await self._drain()

    def _write(
        self,
        api_key: ApiKey,
        api_version: int,
        body: Any,
        *,
        expect_answer: bool,
        decode: Decoder = decode_response,
    ) -> asyncio.Future[Any]:
        if self._closed is not None:
            raise self._closed
        correlation_id = self._next_correlation_id
        self._next_correlation_id = (correlation_id + 1) & 0x7FFFFFFF
        frame = encode_request(api_key, api_version, correlation_id, self._options.client_id, body)
        future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        if expect_answer:
            self._pending.append(_Pending(correlation_id, api_key, api_version, future, decode))
        self._writer.write(frame)
        return future

    async def _drain(self) -> None:
        try:
            await self._writer.drain()
        except (OSError, RuntimeError) as exc:
            error = _network_error(self.address, exc)
            self._close_now(error)
            raise error from None

    async def _read_loop(self) -> None:
        error: ConveyorError
        try:
            while True:
                prefix = await self._reader.readexactly(SIZE_BYTES)
                size = frame_size(prefix, self._options.max_frame_bytes, RESPONSE_HEADER_BYTES_MIN)
                self._answer(await self._reader.readexactly(size))
        except (asyncio.IncompleteReadError, OSError) as exc:
            error = _network_error(self.address, exc or "closed by the broker")
        except (FrameError, ResponseError) as exc:
            log.warning("kafka://%s: broken answer, closing: %s", self.address, exc)
            error = RetriableError(
                f"kafka://{self.address}: broken answer: {exc}", code=ErrorCode.NETWORK_ERROR
            )
        except asyncio.CancelledError:
            error = self._closed or _network_error(self.address, "connection closed")
        self._close_now(error)

    def _answer(self, frame: bytes) -> None:
        """Match one answer to the oldest request waiting, decode it, wake its caller. A
        mismatch raises with the request still waiting: closing fails it with the rest."""
        correlation_id = response_correlation_id(frame)
        if not self._pending:
            raise ResponseError(f"answer {correlation_id} to no request")
        pending = self._pending[0]
        if pending.correlation_id != correlation_id:
            raise ResponseError(
                f"answer {correlation_id} where {pending.correlation_id} was expected"
            )
        try:
            body = pending.decode(pending.api_key, pending.api_version, frame)
        except ResponseError:
            raise
        except Exception as exc:  # e.g. a caller's decoder on a field kafka-python left None
            name = ApiKey(pending.api_key).name
            raise ResponseError(
                f"{name} v{pending.api_version}: unreadable answer ({exc!r})"
            ) from None
        self._pending.popleft()
        self._slots.release()
        if not pending.future.done():
            pending.future.set_result(body)

    def _close_now(self, error: ConveyorError) -> None:
        if self._closed is None:
            self._closed = error
        self._writer.close()
        if asyncio.current_task() is not self._read_task:
            self._read_task.cancel()
        while self._pending:
            pending = self._pending.popleft()
            self._slots.release()
            if not pending.future.done():
                pending.future.set_exception(self._closed)
                pending.future.exception()  # retrieved: a caller that timed out is gone

    async def close(self) -> None:
        """Close now, aborting the socket: a graceful TLS close waits for the peer's
        close_notify (up to 30 s with a paused or slow broker), so the connection would
        outlive the client (issue 15; ``transport/client.py`` aborts its TLS ones too)."""
        self._close_now(_network_error(self.address, "connection closed by the client"))
        self._writer.transport.abort()
        with contextlib.suppress(asyncio.CancelledError, OSError, ssl.SSLError):
            await self._read_task
        with contextlib.suppress(OSError, ssl.SSLError):
            await self._writer.wait_closed()

    async def _negotiate(self) -> None:
        version = API_VERSIONS_VERSION
        for _ in range(2):
            fields = {}
            if version >= 3:
                fields = {
                    "client_software_name": CLIENT_SOFTWARE_NAME,
                    "client_software_version": __version__.replace("+", "-"),
                }
            request = new_request(ApiKey.API_VERSIONS, version, **fields)
            reply = await self.call(ApiKey.API_VERSIONS, version, request)
            ranges = {k.api_key: (k.min_version, k.max_version) for k in reply.api_keys}
            if reply.error_code == KafkaError.UNSUPPORTED_VERSION and ApiKey.API_VERSIONS in ranges:
                version = min(version, ranges[ApiKey.API_VERSIONS][1])
                continue
            if reply.error_code:
                raise conveyor_error(reply.error_code, f"ApiVersions to {self.address}")
            self._versions = ranges
            return
        raise ConveyorError(
            f"broker {self.address} refused every ApiVersions version",
            code=ErrorCode.UNSUPPORTED_VERSION,
        )

    async def _authenticate(self, sasl: SaslConfig) -> None:
        handshake = self.version(ApiKey.SASL_HANDSHAKE, 1, 1)
        reply = await self.call(
            ApiKey.SASL_HANDSHAKE,
            handshake,
            new_request(ApiKey.SASL_HANDSHAKE, handshake, mechanism=sasl.mechanism),
        )
        if reply.error_code:
            offered = ", ".join(reply.mechanisms or ()) or "none"
            raise conveyor_error(
                reply.error_code,
                f"kafka://{self.address} does not take SASL {sasl.mechanism} (offers {offered})",
            )
        try:
            if sasl.mechanism == PLAIN:
                await self._sasl_round(plain_message(sasl.user, sasl.password))
                return
            state, first = scram_client_first(
                sasl.mechanism, sasl.user, sasl.password, secrets.token_urlsafe(24)
            )
            final, expected = scram_client_final(state, await self._sasl_round(first))
            check_server_final(await self._sasl_round(final), expected)
        except SaslError as exc:
            raise ConveyorError(
                f"kafka://{self.address}: {exc}", code=ErrorCode.UNAUTHENTICATED
            ) from None

    async def _sasl_round(self, message: bytes) -> bytes:
        version = self.version(ApiKey.SASL_AUTHENTICATE, 0, 2)
        request = new_request(ApiKey.SASL_AUTHENTICATE, version, auth_bytes=message)
        reply = await self.call(ApiKey.SASL_AUTHENTICATE, version, request)
        if reply.error_code:
            raise conveyor_error(reply.error_code, reply.error_message)
        return bytes(reply.auth_bytes or b"")


def _network_error(address: str, cause: object) -> RetriableError:
    return RetriableError(f"kafka://{address}: {cause}", code=ErrorCode.NETWORK_ERROR)


class KafkaConnections:
    """One open connection per broker address (and ``lane``), opened on first use and
    again after it closed; concurrent first uses share one dial. A lane is a separate
    connection to the same broker: a broker answers one connection's requests in order,
    so a long poll holds back every answer behind it on its connection."""

    def __init__(self, options: KafkaClientOptions) -> None:
        self.options = options
        self._open: dict[tuple[str, str], KafkaConnection] = {}
        self._dialing: dict[tuple[str, str], asyncio.Task[KafkaConnection]] = {}

    async def get(self, address: str, lane: str = "") -> KafkaConnection:
        key = (address, lane)
        connection = self._open.get(key)
        if connection is not None and not connection.closed:
            return connection
        dial = self._dialing.get(key)
        if dial is None:
            dial = asyncio.create_task(KafkaConnection.open(address, self.options))
            self._dialing[key] = dial
            dial.add_done_callback(lambda done: self._dialed(key, done))
        return await asyncio.shield(dial)

    def _dialed(self, key: tuple[str, str], dial: asyncio.Task[KafkaConnection]) -> None:
        """Keep a dialled connection here, not in the caller: a caller cancelled while
        the (shielded) dial finished would otherwise leave it open and unknown, and
        ``close`` would miss it (uvloop then refuses to close the loop: EBUSY)."""
        self._dialing.pop(key, None)
        if not dial.cancelled() and dial.exception() is None:  # else every waiter raised it
            self._open[key] = dial.result()

    async def close(self) -> None:
        dials = list(self._dialing.values())
        for dial in dials:
            dial.cancel()
        await settle_all(*dials)  # each finished dial is in _open after this
        connections, self._open = list(self._open.values()), {}
        for connection in connections:
            await connection.close()
