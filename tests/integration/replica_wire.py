"""A blocking client of the replica protocol (``protocol/fetchframe.py``), for tests that
check who a broker's replica listener admits."""

from __future__ import annotations

import socket
import ssl
from urllib.parse import urlsplit

import msgspec

from conveyor.broker.peers import LISTENER_PATH
from conveyor.protocol.fetchframe import (
    SIZE,
    STATUS_ERROR,
    ReplicaListenerAddress,
    Request,
    encode_request,
    split_response,
)
from conveyor.protocol.messages import ErrorBody
from conveyor.transport.client import SyncHTTP


def listener_address(http: SyncHTTP, broker_url: str) -> tuple[str, int]:
    """(host, port) of the broker's replica listener, asked as the cluster."""
    address = http.call("GET", broker_url + LISTENER_PATH, ReplicaListenerAddress)
    return urlsplit(broker_url).hostname or "127.0.0.1", address.port


def open_replica(address: tuple[str, int], context: ssl.SSLContext | None = None) -> socket.socket:
    sock = socket.create_connection(address, timeout=10)
    if context is not None:
        return context.wrap_socket(sock, server_hostname=address[0])
    return sock


def exchange(sock: socket.socket, request: Request) -> tuple[bool, bytes]:
    """(ok, the answer's header JSON); ConnectionError when the broker closed instead."""
    sock.sendall(encode_request(request))
    (size,) = SIZE.unpack(_exactly(sock, SIZE.size))
    status, header, _ = split_response(memoryview(_exactly(sock, size)))
    return status != STATUS_ERROR, bytes(header)


def error_code(header: bytes) -> str:
    return msgspec.json.decode(header, type=ErrorBody).code


def _exactly(sock: socket.socket, size: int) -> bytes:
    chunks: list[bytes] = []
    while size:
        chunk = sock.recv(size)
        if not chunk:
            raise ConnectionError("the broker closed the connection")
        chunks.append(chunk)
        size -= len(chunk)
    return b"".join(chunks)
