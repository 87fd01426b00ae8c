"""The Kafka protocol's TCP listener: connections, framing, ordering, limits. No Kafka
semantics here: a frame goes to the connection's :class:`FrameSession` (built per
connection by ``broker/kafka/``), and what it answers goes back.

Per connection:

* Frames are read one after another (4-byte size, then the frame; ``framing.frame_size``
  refuses sizes above ``max_frame_bytes`` before reading them). Each frame is handed to
  the session at once, in arrival order, and its answer is written in that order (Kafka's
  rule: responses in request order on a connection). Up to ``inflight_max`` requests run
  at once (pipelining, as librdkafka and Java send them); past that the connection is not
  read until the oldest is answered, so a client cannot queue unbounded work.
* Sessions start their work synchronously in arrival order (a coroutine runs up to its
  first suspension when its task starts, and tasks start in creation order), so two
  produces to one partition on one connection are appended in the order sent.
* Answers are written in 64 KiB chunks waiting for the socket to drain (an answer in
  parts, a Fetch's, with one ``writelines``), under ``write_timeout_ms``: a client that
  stops reading is disconnected (reset) instead of holding the broker's memory.
  :attr:`Reply.on_done` runs once the answer is written or dropped (fetch answers
  release their share of the broker's fetch memory budget there).
* A connection idle (no complete frame) for ``idle_timeout_ms`` is closed (Kafka's
  ``connections.max.idle.ms``); beyond ``connections_max`` open connections, or
  ``connections_per_address_max`` from one client address, a new one is closed at once
  (Kafka's ``max.connections`` and ``max.connections.per.ip``), by the same
  :class:`~conveyor.transport.limits.ConnectionLimiter` policy as the HTTP listeners.
* A protocol violation (bad size, undecodable frame, a request the session refuses to
  answer) closes that connection only, after the answers already due are written.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
import ssl
import struct
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, Final, Protocol

from conveyor.protocol.kafka.framing import (
    MAX_FRAME_BYTES_DEFAULT,
    SIZE_BYTES,
    FrameError,
    frame_size,
    size_prefix,
)
from conveyor.transport.limits import ConnectionLimiter, ConnectionLimits, peer_address
from conveyor.transport.waits import within

log = logging.getLogger(__name__)

WRITE_CHUNK_BYTES: Final = 64 * 1024
TLS_HANDSHAKE_TIMEOUT_S: Final = 10.0
LISTEN_BACKLOG: Final = 100  # connections the kernel queues before they are accepted


@dataclass(frozen=True, slots=True)
class KafkaListenerSettings:
    host: str
    port: int
    max_frame_bytes: int = MAX_FRAME_BYTES_DEFAULT  # Kafka's socket.request.max.bytes
    # connections_max, connections_per_address_max, idle_timeout_ms (Kafka's
    # connections.max.idle.ms is 10 minutes: its clients keep idle connections open)
    limits: ConnectionLimits = field(
        default_factory=lambda: ConnectionLimits(idle_timeout_ms=600_000)
    )
    inflight_max: int = 32  # requests read and not yet answered, per connection
    # The stream reader's buffer limit: it stops reading the socket past twice this. At
    # asyncio's 64 KiB a 1 MB Produce (librdkafka's largest by default) paused and resumed
    # the socket ~8 times per frame and read cost 2.0 ns per byte; at 512 KiB, 1.0
    # (docs/benchmarks.md, "Kafka Produce and Fetch paths"). A frame is held whole anyway
    # (up to max_frame_bytes), so this adds at most 1 MiB per connection read ahead.
    read_buffer_bytes: int = 512 * 1024
    write_timeout_ms: int = 30_000  # an answer not read by then closes the connection


@dataclass(frozen=True, slots=True)
class ConnectionInfo:
    peer: str  # HOST:PORT, for logs
    address: str  # the client's IP address (limits count per address)
    tls: bool
    peer_certificate: dict[str, Any] | None  # verified client certificate (mTLS), if any


@dataclass(slots=True)
class Reply:
    """An answer to one request: ``data`` is the response without its size prefix, in
    one buffer or in parts written one after another (a Fetch answer: headers between
    record sets as the log gave them, never joined in Python)."""

    data: bytes | bytearray | tuple[bytes, ...]
    on_done: Callable[[], None] | None = None  # after it is written, or dropped
    close_after: bool = False  # close the connection once it is written

    def done(self) -> None:
        callback, self.on_done = self.on_done, None
        if callback is not None:
            callback()


class CloseConnection(Exception):  # noqa: N818 -- an instruction, not an error report
    """Raised by a session (or its pending answer): close this connection, answer no more."""


class FrameSession(Protocol):
    """One connection's protocol state (authentication, SASL exchange)."""

    def handle(self, frame: bytes) -> Awaitable[Reply | None]:
        """Start serving ``frame``; the awaitable gives its answer (None: no answer, as
        for produce with acks=0). Raises :class:`CloseConnection` for a frame that cannot
        be answered."""
        ...

    def closed(self) -> None: ...


SessionFactory = Callable[[ConnectionInfo], FrameSession]


@dataclass
class ListenerStats:
    connections_total: int = 0
    protocol_errors: int = 0
    slow_readers_closed: int = 0
    idle_closed: int = 0
    # Requests read, over every connection, whose answer is not ready yet: the broker's
    # backlog (a flush round runs inline only when one produce is all there is to serve,
    # storage/flusher.py).
    requests_in_flight: int = 0
    # Of those, long-polls parked until data arrives (a consumer's Fetch at the log's
    # end): not work to serve, so they do not keep a lone produce's flush off the loop.
    requests_parked: int = 0

    def answer_ready(self, _: object) -> None:
        self.requests_in_flight -= 1


@dataclass
class KafkaListener:
    settings: KafkaListenerSettings
    sessions: SessionFactory
    ssl_context: ssl.SSLContext | None = None
    stats: ListenerStats = field(default_factory=ListenerStats)
    limiter: ConnectionLimiter = field(init=False)
    _server: asyncio.Server | None = None
    # per open connection: its accept task -> how to end it (cancel its reader and writer;
    # never the accept task itself, whose cancellation Python 3.11's streams log as errors)
    _connections: dict[asyncio.Task[None], Callable[[], None]] = field(default_factory=dict)
    # what the adapter's handlers hold open (their own HTTP clients), closed with the listener
    closers: list[Callable[[], Awaitable[None]]] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.limiter = ConnectionLimiter(self.settings.limits)

    async def start(self, serving: bool = True) -> None:
        """Bind and listen (a port in use fails here, when the service starts), and
        accept connections now or only from :meth:`serve`. Until then, as a Kafka broker
        before it enables request processing, connections wait in the listen backlog and
        their first requests are answered once it serves (a client may time out first,
        and connects again)."""
        self._server = await asyncio.start_server(
            self._accept,
            self.settings.host,
            self.settings.port,
            limit=self.settings.read_buffer_bytes,
            ssl=self.ssl_context,
            ssl_handshake_timeout=TLS_HANDSHAKE_TIMEOUT_S if self.ssl_context else None,
            reuse_address=True,
            backlog=LISTEN_BACKLOG,
            start_serving=False,
        )
        for bound in self._server.sockets:
            # bound, not listening: another process could still bind the port
            # (SO_REUSEADDR), so listen now; accepting starts with start_serving
            with socket.fromfd(bound.fileno(), bound.family, bound.type) as listening:
                listening.listen(LISTEN_BACKLOG)
        if serving:
            await self.serve()

    async def serve(self) -> None:
        """Accept connections (after ``start(serving=False)``; again: nothing)."""
        if self._server is None:
            raise RuntimeError("the Kafka listener is not started")
        if not self._server.is_serving():
            await self._server.start_serving()
            log.info(
                "kafka listener on %s:%d (%s)",
                self.settings.host,
                self.port,
                "TLS" if self.ssl_context else "plaintext",
            )

    @property
    def port(self) -> int:
        """The bound port (the configured one, or the one the OS chose for port 0)."""
        if self._server is None or not self._server.sockets:
            return self.settings.port
        return int(self._server.sockets[0].getsockname()[1])

    async def close(self) -> None:
        """Stop accepting and close every connection (in-flight requests are cancelled)."""
        if self._server is not None:
            self._server.close()
        for stop in list(self._connections.values()):
            stop()
        tasks = list(self._connections)
        if tasks:
            await asyncio.wait(tasks, timeout=5.0)
        if self._server is not None:
            await self._server.wait_closed()
            self._server = None
        for closer in self.closers:
            await closer()

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        address = peer_address(writer.get_extra_info("peername"))
        refusal = self.limiter.admit(address)
        if refusal is not None:
            # Kafka has no answer for this (nothing was read): close, and say why here.
            log.warning("kafka listener refused a connection: %s", refusal.message)
            _abort(writer)
            return
        task = asyncio.current_task()
        assert task is not None
        self._connections[task] = lambda: None
        self.stats.connections_total += 1
        try:
            await self._serve(reader, writer, task)
        finally:
            self.limiter.release(address)
            self._connections.pop(task, None)

    async def _serve(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, task: asyncio.Task[None]
    ) -> None:
        info = _connection_info(writer)
        session = self.sessions(info)
        pending: asyncio.Queue[asyncio.Future[Answer] | None] = asyncio.Queue(
            self.settings.inflight_max
        )
        order = _WriteOrder(writer)
        writing = asyncio.ensure_future(self._write_loop(pending, writer, info, order))
        reading = asyncio.ensure_future(
            self._read_loop(reader, session, pending, writing, info, order)
        )

        def stop() -> None:
            reading.cancel()
            writing.cancel()

        self._connections[task] = stop
        try:
            # The writer ends first when a write fails or a reply closes the connection;
            # the reader, at end of stream, on a bad frame, or on a refused request.
            await asyncio.wait((reading, writing), return_when=asyncio.FIRST_COMPLETED)
        finally:
            reading.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await reading
            await _drain_queue(pending, writing)
            session.closed()
            writer.close()
            with contextlib.suppress(OSError, ssl.SSLError, asyncio.CancelledError, TimeoutError):
                await within(writer.wait_closed(), 1.0)

    async def _read_loop(  # noqa: PLR0917 -- the connection's parts, as _serve has them
        self,
        reader: asyncio.StreamReader,
        session: FrameSession,
        pending: asyncio.Queue[asyncio.Future[Answer] | None],
        writing: asyncio.Future[None],
        info: ConnectionInfo,
        order: _WriteOrder,
    ) -> None:
        reading = asyncio.current_task()
        assert reading is not None
        idle = _IdleWatch(self.settings.limits.idle_timeout_ms / 1000, reading.cancel)
        try:
            await self._read_frames(reader, session, pending, writing, info, idle, order)
        except asyncio.CancelledError:
            if not idle.expired:
                raise
            self.stats.idle_closed += 1
            log.debug("kafka connection from %s idle for %.0f s: closed", info.peer, idle.idle_s)
        finally:
            idle.stop()

    async def _read_frames(  # noqa: PLR0917 -- _read_loop's own arguments
        self,
        reader: asyncio.StreamReader,
        session: FrameSession,
        pending: asyncio.Queue[asyncio.Future[Answer] | None],
        writing: asyncio.Future[None],
        info: ConnectionInfo,
        idle: _IdleWatch,
        order: _WriteOrder,
    ) -> None:
        while True:
            try:
                prefix = await reader.readexactly(SIZE_BYTES)
                size = frame_size(prefix, self.settings.max_frame_bytes)
                frame = await reader.readexactly(size)
            except FrameError as exc:
                self.stats.protocol_errors += 1
                log.info("kafka connection from %s closed: %s", info.peer, exc)
                return
            except (asyncio.IncompleteReadError, ConnectionError, ssl.SSLError, OSError):
                return  # the client went away (possibly mid-frame)
            idle.touch()
            try:
                answer = session.handle(frame)
            except CloseConnection as exc:
                self.stats.protocol_errors += 1
                log.info("kafka connection from %s closed: %s", info.peer, exc)
                await pending.put(None)
                await asyncio.shield(writing)
                return
            future = asyncio.ensure_future(order.answered(answer))
            # Counted as read, before its task or any other runs; uncounted when its
            # answer is done, however (a done callback also runs for a cancelled task).
            self.stats.requests_in_flight += 1
            future.add_done_callback(self.stats.answer_ready)
            await pending.put(future)

    async def _write_loop(
        self,
        pending: asyncio.Queue[asyncio.Future[Answer] | None],
        writer: asyncio.StreamWriter,
        info: ConnectionInfo,
        order: _WriteOrder,
    ) -> None:
        timeout_s = self.settings.write_timeout_ms / 1000
        while True:
            answer = await pending.get()
            if answer is None:
                return
            try:
                reply = await answer
            except CloseConnection as exc:
                self.stats.protocol_errors += 1
                log.info("kafka connection from %s closed: %s", info.peer, exc)
                return
            except Exception as exc:  # a session bug: this connection only
                log.error("kafka connection from %s: request failed", info.peer, exc_info=exc)
                return
            if reply is None:  # nothing to answer (acks=0): the next one's turn
                order.next_index += 1
                continue
            if isinstance(reply, _Written) and not reply.drain:
                continue  # its own task wrote it whole (and moved next_index on)
            try:
                await _write_or_drain(writer, reply, timeout_s, order)
            except TimeoutError:
                self.stats.slow_readers_closed += 1
                log.warning(
                    "closed a kafka connection from %s: its answer (%d bytes unsent) was not "
                    "read within %d ms",
                    info.peer,
                    writer.transport.get_write_buffer_size(),
                    self.settings.write_timeout_ms,
                )
                _abort(writer)
                return
            except (ConnectionError, OSError, ssl.SSLError):
                return
            finally:
                if isinstance(reply, Reply):
                    reply.done()
            if isinstance(reply, Reply) and reply.close_after:
                return


async def _write_or_drain(
    writer: asyncio.StreamWriter, reply: Reply | _Written, timeout_s: float, order: _WriteOrder
) -> None:
    """The write loop's part of one answer: write it (then it is the next one's turn), or
    wait for the socket to take what its own task wrote at once but the socket kept."""
    if isinstance(reply, _Written):
        async with asyncio.timeout(timeout_s):
            await writer.drain()
        return
    await _write_answer(writer, reply.data, timeout_s)
    order.next_index += 1


@dataclass(frozen=True, slots=True)
class _Written:
    """An answer its own task wrote (``_WriteOrder.answered``); ``drain``: the socket did
    not take all of it, so the write loop waits for it under the write timeout."""

    drain: bool


Answer = Reply | None | _Written


class _WriteOrder:
    """Answers go out in request order. The write loop writes them one after another;
    but an answer that is next in line, small, and finds nothing queued before it is
    written by its own task as soon as it is ready, one event-loop pass before the
    write loop would wake for it (W3's acknowledgement: docs/benchmarks.md "W3 latency").
    ``next_index`` is the position of the next answer to write; whoever writes one
    (the write loop or the answer's task) moves it on."""

    def __init__(self, writer: asyncio.StreamWriter) -> None:
        self._writer = writer
        self._issued = 0
        self.next_index = 0

    async def answered(self, answer: Awaitable[Reply | None]) -> Answer:
        index = self._issued
        self._issued += 1
        reply = await answer
        writer = self._writer
        if (
            reply is None
            or index != self.next_index
            or reply.close_after
            or isinstance(reply.data, tuple)
            or len(reply.data) > WRITE_CHUNK_BYTES
            or writer.transport.get_write_buffer_size()
            or writer.transport.is_closing()
        ):
            return reply
        try:
            writer.write(size_prefix(len(reply.data)) + reply.data)
        finally:
            self.next_index += 1
            reply.done()
        return _Written(drain=bool(writer.transport.get_write_buffer_size()))


class _IdleWatch:
    """Closes a connection that sent no complete frame for ``idle_s`` (Kafka's
    ``connections.max.idle.ms``): one timer per connection that re-arms itself for the time
    left, instead of a timeout scope (a timer armed and cancelled) around every frame read."""

    def __init__(self, idle_s: float, expire: Callable[[], object]) -> None:
        self.idle_s = idle_s
        self.expired = False
        self._expire = expire
        self._loop = asyncio.get_running_loop()
        self._last = self._loop.time()
        self._timer: asyncio.TimerHandle | None = self._loop.call_later(idle_s, self._check)

    def touch(self) -> None:
        self._last = self._loop.time()

    def stop(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    def _check(self) -> None:
        left_s = self._last + self.idle_s - self._loop.time()
        if left_s > 0:
            self._timer = self._loop.call_later(left_s, self._check)
            return
        self._timer = None
        self.expired = True
        self._expire()


def _size_bytes(data: bytes | bytearray | tuple[bytes, ...]) -> int:
    return sum(len(part) for part in data) if isinstance(data, tuple) else len(data)


async def _write_answer(
    writer: asyncio.StreamWriter, data: bytes | bytearray | tuple[bytes, ...], timeout_s: float
) -> None:
    """Write one answer, waiting at most ``timeout_s`` for the socket to take it. A small
    answer with nothing queued before it is written at once, and when the socket takes
    it whole there is nothing to wait for: no timer, no drain (the common case: a
    produce acknowledgement, one send(2), measured in docs/benchmarks.md "W3 latency")."""
    if (
        not isinstance(data, tuple)
        and len(data) <= WRITE_CHUNK_BYTES
        and not writer.transport.get_write_buffer_size()
    ):
        writer.write(size_prefix(len(data)) + data)
        if not writer.transport.get_write_buffer_size():
            return
        async with asyncio.timeout(timeout_s):
            await writer.drain()
        return
    async with asyncio.timeout(timeout_s):
        await _write_reply(writer, data)


async def _write_reply(
    writer: asyncio.StreamWriter, data: bytes | bytearray | tuple[bytes, ...]
) -> None:
    if isinstance(data, tuple):
        # One writelines: the transport sends the parts with one writev(2) (uvloop) and
        # keeps what the socket did not take by reference, so record sets are not
        # copied here; under TLS the SSL layer encrypts them from the same buffers.
        writer.writelines((size_prefix(_size_bytes(data)), *data))
        await writer.drain()
        return
    if len(data) <= WRITE_CHUNK_BYTES:
        # one write, one send(2) (profiled: each write of a small answer costs a syscall)
        writer.write(size_prefix(len(data)) + data)
    else:
        writer.write(size_prefix(len(data)))
        view = memoryview(data)
        for start in range(0, len(data), WRITE_CHUNK_BYTES):
            writer.write(view[start : start + WRITE_CHUNK_BYTES])
            await writer.drain()
    await writer.drain()


async def _drain_queue(
    pending: asyncio.Queue[asyncio.Future[Answer] | None], writing: asyncio.Future[None]
) -> None:
    """The connection is over: cancel what is still running and release what was
    answered but not written (``Reply.on_done``), so nothing stays held."""
    if not writing.done():
        writing.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await writing
    while not pending.empty():
        answer = pending.get_nowait()
        if answer is None:
            continue
        answer.cancel()
        try:
            reply = await answer
        except (asyncio.CancelledError, CloseConnection):
            continue
        if isinstance(reply, Reply):
            reply.done()


def _connection_info(writer: asyncio.StreamWriter) -> ConnectionInfo:
    peer = writer.get_extra_info("peername")
    ssl_object = writer.get_extra_info("ssl_object")
    certificate = None
    if isinstance(ssl_object, ssl.SSLObject | ssl.SSLSocket):
        certificate = ssl_object.getpeercert() or None
    sock = writer.get_extra_info("socket")
    if sock is not None:
        with contextlib.suppress(OSError):
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    where = f"{peer[0]}:{peer[1]}" if isinstance(peer, tuple) and len(peer) >= 2 else str(peer)
    return ConnectionInfo(
        peer=where,
        address=peer_address(peer),
        tls=ssl_object is not None,
        peer_certificate=certificate,
    )


def _abort(writer: asyncio.StreamWriter) -> None:
    """Close with a reset (SO_LINGER 0): the kernel drops what is queued for a peer that
    does not read, instead of trying to deliver it."""
    sock = writer.get_extra_info("socket")
    if sock is not None:
        with contextlib.suppress(OSError):
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    writer.transport.abort()
