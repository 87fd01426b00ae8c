"""The leader's replica listener: followers' fetches and OffsetsForLeaderEpoch requests on
Conveyor's replica protocol (``protocol/fetchframe.py``), over ``transport/framed.py``.

Per connection, one request at a time (a follower opens one connection per request in
flight): read a frame, answer it, and for a fetch send each partition's batches straight
from the segment files. The decisions are :class:`ReplicaServer`'s (the core's rules);
this module only checks who is asking and moves bytes.

**Who may connect** is what the HTTP internal routes allowed (``transport/auth.py``,
``transport/secure.py``), decided by :func:`admitted` from the connection's first frame
(a :class:`ReplicaHello`) and its TLS client certificate:

* auth on: a verified client certificate when the listener asks for one
  (``internal_mtls``), else the cluster secret in the hello;
* auth off, TLS with ``internal_mtls`` or ``require_client_cert``: a verified client
  certificate;
* otherwise anyone who can reach the port (as the HTTP routes are then open).

A refused or malformed request is answered with an error and the connection closed.
"""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import logging
import ssl
from dataclasses import dataclass
from typing import Any, Final

from conveyor.broker.replica_server import ReplicaServer
from conveyor.protocol.errors import (
    AuthenticationError,
    AuthorizationError,
    ConveyorError,
    InvalidRequestError,
)
from conveyor.protocol.fetchframe import (
    REQUEST_FRAME_BYTES_MAX,
    TRAILER_CHANGED,
    TRAILER_OK,
    HelloAnswer,
    ReplicaHello,
    decode_request,
    response_head,
)
from conveyor.protocol.messages import EpochEndRequest, ErrorBody, ReplicaFetchRequest
from conveyor.transport.framed import FramedConnection, FrameListener, FrameTooLargeError

log = logging.getLogger(__name__)

IDLE_TIMEOUT_S: Final = 600.0  # a follower's connection waits between its requests
WRITE_TIMEOUT_S: Final = 60.0  # an answer not taken by then closes the connection
CONNECTIONS_MAX: Final = 1024


@dataclass(frozen=True, slots=True)
class ReplicaAccess:
    """Who may use the replica listener (the HTTP internal routes' rule, see above)."""

    auth_enabled: bool = False
    cluster_secret: str | None = None
    client_cert_required: bool = False  # TLS with internal_mtls or require_client_cert
    client_cert_accepted: bool = False  # auth on: a verified certificate is the cluster


def admitted(
    access: ReplicaAccess, hello: ReplicaHello, certificate: dict[str, Any] | None
) -> ConveyorError | None:
    """None when the connection may go on, else why not."""
    if access.auth_enabled:
        if access.client_cert_accepted and certificate is not None:
            return None
        secret = access.cluster_secret
        if secret and hello.secret and hmac.compare_digest(hello.secret.encode(), secret.encode()):
            return None
        if hello.secret is None:
            return AuthenticationError("the replica listener needs the cluster's credentials")
        return AuthorizationError("the replica listener is internal to the cluster")
    if access.client_cert_required and certificate is None:
        return AuthorizationError("the replica listener needs the cluster's client certificate")
    return None


class ReplicaListener:
    def __init__(
        self,
        server: ReplicaServer,
        access: ReplicaAccess,
        broker_id: int,
        ssl_context: ssl.SSLContext | None,
    ) -> None:
        self._server = server
        self._access = access
        self._broker_id = broker_id
        self._listener = FrameListener(
            self._serve, ssl_context=ssl_context, connections_max=CONNECTIONS_MAX
        )

    @property
    def port(self) -> int:
        return self._listener.port

    async def start(self, host: str, port: int = 0) -> None:
        await self._listener.start(host, port)
        log.info("replica listener on %s:%d", host, self.port)

    async def close(self) -> None:
        await self._listener.close()

    async def _serve(self, connection: FramedConnection) -> None:
        admitted_yet = False
        while True:
            try:
                async with asyncio.timeout(IDLE_TIMEOUT_S):
                    frame = await connection.read_frame(REQUEST_FRAME_BYTES_MAX)
                request = decode_request(frame)
            except (TimeoutError, asyncio.IncompleteReadError, ConnectionError, OSError):
                return  # idle, gone, or too large a frame (FrameTooLargeError): nothing to answer
            except InvalidRequestError as exc:
                await self._refuse(connection, exc)
                return
            if isinstance(request, ReplicaHello):
                problem = admitted(self._access, request, connection.peer_certificate)
                if problem is not None:
                    log.warning("replica connection from %s refused: %s", connection.peer, problem)
                    await self._refuse(connection, problem)
                    return
                admitted_yet = True
                await self._answer(
                    connection, response_head(HelloAnswer(broker_id=self._broker_id))
                )
                continue
            if not admitted_yet:
                await self._refuse(connection, InvalidRequestError("expected a hello first"))
                return
            if not await self._handle(connection, request):
                return

    async def _handle(
        self, connection: FramedConnection, request: ReplicaFetchRequest | EpochEndRequest
    ) -> bool:
        """Answer one request; False when the connection must close."""
        if isinstance(request, EpochEndRequest):
            return await self._answer(connection, response_head(self._server.epoch_end(request)))
        answer = await self._server.fetch(request)
        try:
            total = sum(r.size_bytes for r in answer.ranges)
            async with asyncio.timeout(WRITE_TIMEOUT_S):
                await connection.send(response_head(answer.response, total + len(TRAILER_OK)))
                for found in answer.ranges:
                    sent = await connection.send_file(found.fd, found.position, found.size_bytes)
                    if sent != found.size_bytes:
                        # The log was truncated under the send: the frame cannot be completed.
                        log.info(
                            "replica fetch to %s cut: a segment shrank during the send",
                            connection.peer,
                        )
                        return False
                # A truncation that rewrote the file under the send is only seen now.
                await connection.send(TRAILER_OK if answer.unchanged() else TRAILER_CHANGED)
        except (TimeoutError, ConnectionError, OSError, ssl.SSLError) as exc:
            log.info("replica fetch answer to %s not delivered: %s", connection.peer, exc)
            return False
        finally:
            answer.close()
        return True

    async def _answer(self, connection: FramedConnection, head: bytes) -> bool:
        try:
            async with asyncio.timeout(WRITE_TIMEOUT_S):
                await connection.send(head)
        except (TimeoutError, ConnectionError, OSError, ssl.SSLError):
            return False
        return True

    async def _refuse(self, connection: FramedConnection, problem: ConveyorError) -> None:
        body = ErrorBody(
            code=problem.code.name, message=problem.message, retriable=problem.retriable
        )
        with contextlib.suppress(FrameTooLargeError):
            await self._answer(connection, response_head(body, error=True))
