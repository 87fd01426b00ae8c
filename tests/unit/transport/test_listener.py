"""The HTTP listener's connection limits and idle timeout: a real aiohttp application
served by ``listener.serve`` on a uvloop thread, reached with plain sockets (and TLS)."""

from __future__ import annotations

import asyncio
import json
import socket
import ssl
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from conveyor.transport.certs import CertPaths, init_certs
from conveyor.transport.limits import ConnectionLimits
from conveyor.transport.listener import serve
from conveyor.transport.runner import new_event_loop
from conveyor.transport.server import build_app
from conveyor.transport.tls import TLSConfig
from tests.waiting import wait_for

REQUEST = b"GET /healthz HTTP/1.1\r\nHost: test\r\n\r\n"


@contextmanager
def served(limits: ConnectionLimits, context: ssl.SSLContext | None = None) -> Iterator[int]:
    """Serve a bare application (health, metrics) behind ``limits``; yields the port."""
    loop = new_event_loop()
    stop = asyncio.Event()
    port: list[int] = []
    failure: list[BaseException] = []

    async def main() -> None:
        listening: asyncio.Future[int] = loop.create_future()
        listening.add_done_callback(lambda f: port.append(f.result()))
        await serve(
            build_app("test", []),
            host="127.0.0.1",
            port=0,
            ssl_context=context,
            limits=limits,
            shutdown_timeout_s=1,
            stop=stop,
            listening=listening,
        )

    def run() -> None:
        try:
            loop.run_until_complete(main())
        except BaseException as exc:  # surfaced by the test below
            failure.append(exc)
        finally:
            loop.close()

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    wait_for(lambda: bool(port or failure), 10, "the listener to start")
    try:
        yield port[0]
    finally:
        loop.call_soon_threadsafe(stop.set)
        thread.join(10)
    assert not failure, failure


def connect(port: int, context: ssl.SSLContext | None = None) -> socket.socket:
    sock = socket.create_connection(("127.0.0.1", port), timeout=5)
    if context is not None:
        return context.wrap_socket(sock, server_hostname="127.0.0.1")
    return sock


def exchange(sock: socket.socket, request: bytes = REQUEST) -> tuple[int, dict[str, str], bytes]:
    """Send one request, read one response (Content-Length framed)."""
    sock.sendall(request)
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = sock.recv(65536)
        if not chunk:
            raise ConnectionError(f"closed after {data!r}")
        data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    lines = head.decode().split("\r\n")
    headers = {k.lower(): v.strip() for k, _, v in (line.partition(":") for line in lines[1:])}
    while len(body) < int(headers.get("content-length", "0")):
        body += sock.recv(65536)
    return int(lines[0].split()[1]), headers, body


def metric(port: int, name: str) -> float:
    """The value of one series (``name{labels}`` as exposed) from ``/metrics``."""
    with connect(port) as sock:
        status, _, body = exchange(sock, b"GET /metrics HTTP/1.1\r\nHost: t\r\n\r\n")
    assert status == 200
    for line in body.decode().splitlines():
        if line.startswith(name + " "):
            return float(line.rsplit(" ", 1)[1])
    return 0.0


def test_over_the_listener_limit_a_connection_gets_503_before_its_request_is_read() -> None:
    limits = ConnectionLimits(connections_max=2, connections_per_address_max=10)
    with served(limits) as port:
        first, second = connect(port), connect(port)
        assert exchange(first)[0] == exchange(second)[0] == 200  # both kept open
        with connect(port) as third:
            status, headers, body = exchange(third)
        assert status == 503
        assert headers["retry-after"] == "1"
        error = json.loads(body)
        assert error["code"] == "TOO_MANY_CONNECTIONS"
        assert error["retriable"] is True
        assert error["details"] == {"reason": "listener_full"}
        assert "connections_max 2" in error["message"]
        first.close()

        def admitted() -> bool:
            with connect(port) as sock:
                return exchange(sock)[0] == 200

        wait_for(admitted, 5, "a closed connection's place to be given to a new one")
        second.close()
        refused = 'conveyor_http_connections_refused_total{reason="listener_full"}'
        assert metric(port, refused) >= 1  # more if the wait above met one
        assert metric(port, "conveyor_http_connections_open") == 1  # the scrape's own


def test_one_address_cannot_take_the_whole_listener() -> None:
    limits = ConnectionLimits(connections_max=100, connections_per_address_max=1)
    with served(limits) as port, connect(port) as first:
        assert exchange(first)[0] == 200
        with connect(port) as second:
            status, _, body = exchange(second)
        assert status == 503
        assert json.loads(body)["details"] == {"reason": "address_full"}


def test_an_idle_connection_is_closed_after_the_idle_timeout() -> None:
    limits = ConnectionLimits(idle_timeout_ms=300)
    with served(limits) as port:
        silent = connect(port)  # never sends anything
        used = connect(port)
        assert exchange(used)[0] == 200  # idle after its request
        started = time.monotonic()
        assert silent.recv(1) == b""  # closed by the server
        assert used.recv(1) == b""
        assert time.monotonic() - started < 3
        silent.close()
        used.close()


@pytest.fixture(scope="module")
def certs(tmp_path_factory: pytest.TempPathFactory) -> CertPaths:
    return init_certs(tmp_path_factory.mktemp("certs"))


def test_the_refusal_is_readable_over_tls(certs: CertPaths, tmp_path: Path) -> None:
    tls = TLSConfig(certfile=str(certs.server_cert), keyfile=str(certs.server_key))
    server_context = tls.server_context()
    client_context = TLSConfig(cafile=str(certs.ca)).client_context()
    limits = ConnectionLimits(connections_max=1)
    with served(limits, server_context) as port, connect(port, client_context) as first:
        assert exchange(first)[0] == 200
        with connect(port, client_context) as second:
            status, _, body = exchange(second)
        assert status == 503
        assert json.loads(body)["code"] == "TOO_MANY_CONNECTIONS"
