"""Length-prefixed frames over TCP, plaintext with zero copies or TLS: the transport of
the replica protocol (``protocol/fetchframe.py``). No replication semantics here.

Two kinds of connection behind one interface (:class:`FramedConnection`):

* **Plaintext** (:class:`SocketConnection`): a raw non-blocking socket driven by the
  loop's ``sock_*`` calls. A frame is read straight into one buffer allocated at its
  announced size (no intermediate buffers): ``recv_into`` while the socket holds bytes,
  ``sock_recv_into`` to wait for more. File bytes are
  sent with ``os.sendfile`` (the kernel copies from the page cache to the socket; the
  bytes never enter Python). ``loop.sendfile`` is not used: uvloop, the services' loop,
  does not implement it (NotImplementedError), so the send loop here waits for the socket
  to be writable itself.
* **TLS** (:class:`StreamConnection`): asyncio streams. Bytes must be encrypted in
  user space, so file bytes are read (``os.pread``, 1 MiB at a time, in a worker thread)
  and written; that read is the only copy besides the encryption.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
import ssl
import struct
from collections.abc import Awaitable, Callable
from typing import Any, Final, Protocol

from conveyor.transport.waits import within

log = logging.getLogger(__name__)

SIZE: Final = struct.Struct(">I")
TLS_CHUNK_BYTES: Final = 1 << 20
TLS_HANDSHAKE_TIMEOUT_S: Final = 10.0


class FrameTooLargeError(ConnectionError):
    """The peer announced a frame beyond the limit: the connection cannot go on."""


class FramedConnection(Protocol):
    peer: str
    peer_certificate: dict[str, Any] | None  # a verified TLS client certificate, if any

    async def read_frame(self, size_max: int) -> memoryview:
        """The next frame (without its size prefix) in a buffer of its own.
        ``asyncio.IncompleteReadError`` at end of stream, FrameTooLargeError past ``size_max``."""
        ...

    async def send(self, data: bytes | bytearray | memoryview) -> None: ...

    async def send_file(self, fd: int, position: int, count: int) -> int:
        """Send ``count`` bytes of file ``fd`` from ``position``; the bytes sent (fewer when
        the file is shorter than that)."""
        ...

    def close(self) -> None: ...


class SocketConnection:
    def __init__(self, sock: socket.socket) -> None:
        sock.setblocking(False)
        with contextlib.suppress(OSError):
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self._sock = sock
        self._loop = asyncio.get_running_loop()
        self.peer = _peer_name(sock)
        self.peer_certificate: dict[str, Any] | None = None
        self._prefix = bytearray(SIZE.size)

    async def _recv_exactly(self, view: memoryview) -> None:
        got = 0
        while got < len(view):
            # What the socket already holds is taken at once: uvloop's sock_recv_into
            # always waits for a loop pass (a poll, an epoll_ctl to add the reader and one
            # to remove it) even when the bytes are there, as a frame's body usually is
            # once its size prefix has come.
            try:
                n = self._sock.recv_into(view[got:])
            except (BlockingIOError, InterruptedError):
                n = await self._loop.sock_recv_into(self._sock, view[got:])
            if n == 0:
                raise asyncio.IncompleteReadError(bytes(view[:got]), len(view))
            got += n

    async def read_frame(self, size_max: int) -> memoryview:
        await self._recv_exactly(memoryview(self._prefix))
        (size,) = SIZE.unpack(self._prefix)
        if size > size_max:
            raise FrameTooLargeError(f"frame of {size} bytes from {self.peer} (at most {size_max})")
        frame = memoryview(bytearray(size))
        await self._recv_exactly(frame)
        return frame

    async def send(self, data: bytes | bytearray | memoryview) -> None:
        await self._loop.sock_sendall(self._sock, data)

    async def send_file(self, fd: int, position: int, count: int) -> int:
        sent = 0
        out = self._sock.fileno()
        while sent < count:
            try:
                n = os.sendfile(out, fd, position + sent, count - sent)
            except BlockingIOError:
                await self._writable(out)
                continue
            if n == 0:
                break  # the file is shorter than asked (truncated meanwhile)
            sent += n
        return sent

    async def _writable(self, fd: int) -> None:
        ready: asyncio.Future[None] = self._loop.create_future()
        self._loop.add_writer(fd, _set_once, ready)
        try:
            await ready
        finally:
            self._loop.remove_writer(fd)

    def close(self) -> None:
        self._sock.close()


class StreamConnection:
    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self._reader = reader
        self._writer = writer
        self.peer = _peer_name(writer.get_extra_info("socket"))
        ssl_object = writer.get_extra_info("ssl_object")
        certificate = None
        if isinstance(ssl_object, ssl.SSLObject | ssl.SSLSocket):
            certificate = ssl_object.getpeercert() or None
        self.peer_certificate = certificate

    async def read_frame(self, size_max: int) -> memoryview:
        (size,) = SIZE.unpack(await self._reader.readexactly(SIZE.size))
        if size > size_max:
            raise FrameTooLargeError(f"frame of {size} bytes from {self.peer} (at most {size_max})")
        return memoryview(await self._reader.readexactly(size))

    async def send(self, data: bytes | bytearray | memoryview) -> None:
        self._writer.write(data)
        await self._writer.drain()

    async def send_file(self, fd: int, position: int, count: int) -> int:
        sent = 0
        while sent < count:
            chunk = await asyncio.to_thread(
                os.pread, fd, min(TLS_CHUNK_BYTES, count - sent), position + sent
            )
            if not chunk:
                break
            self._writer.write(chunk)
            await self._writer.drain()
            sent += len(chunk)
        return sent

    def close(self) -> None:
        self._writer.close()


def _set_once(future: asyncio.Future[None]) -> None:
    if not future.done():
        future.set_result(None)


def _peer_name(sock: Any) -> str:
    try:
        peer = sock.getpeername() if sock is not None else None
    except OSError:
        return "?"
    if isinstance(peer, tuple) and len(peer) >= 2:
        return f"{peer[0]}:{peer[1]}"
    return str(peer)


async def connect(
    host: str,
    port: int,
    *,
    ssl_context: ssl.SSLContext | None,
    timeout_s: float,
) -> FramedConnection:
    """A connection to ``host:port`` (TLS when ``ssl_context``, the server's name checked
    against ``host``)."""
    async with asyncio.timeout(timeout_s):
        if ssl_context is not None:
            reader, writer = await asyncio.open_connection(
                host, port, ssl=ssl_context, server_hostname=host, limit=TLS_CHUNK_BYTES
            )
            return StreamConnection(reader, writer)
        loop = asyncio.get_running_loop()
        infos = await loop.getaddrinfo(host, port, type=socket.SOCK_STREAM)
        family, kind, proto, _, address = infos[0]
        sock = socket.socket(family, kind, proto)
        try:
            sock.setblocking(False)
            await loop.sock_connect(sock, address)
        except BaseException:
            sock.close()
            raise
        return SocketConnection(sock)


Handler = Callable[[FramedConnection], Awaitable[None]]


class FrameListener:
    """Accepts connections on ``host:port`` and runs ``handler`` on each (closing the
    connection when it returns). TLS when ``ssl_context``. At most ``connections_max``
    at once: beyond, a new connection is closed at once."""

    def __init__(
        self,
        handler: Handler,
        *,
        ssl_context: ssl.SSLContext | None,
        connections_max: int,
    ) -> None:
        self._handler = handler
        self._ssl = ssl_context
        self._connections_max = connections_max
        self._server: asyncio.Server | None = None
        self._raw: socket.socket | None = None
        self._accepting: asyncio.Task[None] | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        self.port = 0

    async def start(self, host: str, port: int) -> None:
        if self._ssl is not None:
            self._server = await asyncio.start_server(
                self._on_stream,
                host,
                port,
                ssl=self._ssl,
                ssl_handshake_timeout=TLS_HANDSHAKE_TIMEOUT_S,
                reuse_address=True,
            )
            self.port = int(self._server.sockets[0].getsockname()[1])
            return
        loop = asyncio.get_running_loop()
        infos = await loop.getaddrinfo(host, port, type=socket.SOCK_STREAM)
        family, kind, proto, _, address = infos[0]
        raw = socket.socket(family, kind, proto)
        raw.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        raw.bind(address)
        raw.listen(128)
        raw.setblocking(False)
        self._raw = raw
        self.port = int(raw.getsockname()[1])
        self._accepting = asyncio.create_task(self._accept_loop(raw), name="frame-accept")

    async def _accept_loop(self, raw: socket.socket) -> None:
        loop = asyncio.get_running_loop()
        while True:
            try:
                sock, _ = await loop.sock_accept(raw)
            except OSError as exc:
                log.warning("frame listener: accept failed: %s", exc)
                await asyncio.sleep(0.1)  # e.g. out of descriptors: do not spin
                continue
            self._run(SocketConnection(sock))

    async def _on_stream(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        connection = StreamConnection(reader, writer)
        task = self._run(connection)
        if task is not None:
            with contextlib.suppress(asyncio.CancelledError):
                await task

    def _run(self, connection: FramedConnection) -> asyncio.Task[None] | None:
        if len(self._tasks) >= self._connections_max:
            log.warning(
                "frame listener: %s refused (%d connections)", connection.peer, len(self._tasks)
            )
            connection.close()
            return None
        task = asyncio.get_running_loop().create_task(self._serve(connection))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task

    async def _serve(self, connection: FramedConnection) -> None:
        try:
            await self._handler(connection)
        finally:
            connection.close()

    async def close(self) -> None:
        if self._accepting is not None:
            self._accepting.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._accepting
        if self._raw is not None:
            self._raw.close()
        if self._server is not None:
            self._server.close()
        for task in list(self._tasks):
            task.cancel()
        if self._tasks:
            await asyncio.wait(list(self._tasks), timeout=5.0)
        if self._server is not None:
            with contextlib.suppress(TimeoutError):
                await within(self._server.wait_closed(), 1.0)
