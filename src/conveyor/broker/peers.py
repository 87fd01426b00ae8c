"""The transport of replication messages: the core's typed messages to leaders and to the
coordinator.

The core addresses a message to a broker id or to the coordinator (``SendReplicaFetch``,
``SendEpochEnd``, ``SendAlterIsr``); this adapter sends it and decodes the answer:

* to a leader, on Conveyor's replica protocol (``protocol/fetchframe.py``) over TCP, to
  the leader's replica listener (``broker/replica_listener.py``). Where that listener is:
  the leader's HTTP address (the metadata cache's broker table) names the host and, asked
  once per connection attempt that finds no cached port, the internal route
  ``GET /internal/v1/replicas/listener`` its port (it changes when the leader restarts).
  Connections are pooled per leader and carry one request at a time; a fetch answer is
  read into one buffer and its batches are views into it.
* to the coordinator (AlterIsr), over HTTP as every control-plane call.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from typing import Final
from urllib.parse import urlsplit

import msgspec

from conveyor.protocol.errors import ConveyorError, ErrorCode
from conveyor.protocol.fetchframe import (
    RESPONSE_FRAME_BYTES_MAX,
    STATUS_ERROR,
    HelloAnswer,
    ReplicaHello,
    ReplicaListenerAddress,
    Request,
    decode_error,
    decode_fetch_response,
    encode_request,
    split_response,
)
from conveyor.protocol.messages import (
    AlterIsrRequest,
    AlterIsrResponse,
    BrokerId,
    EpochEndRequest,
    EpochEndResponse,
    ReplicaFetchRequest,
    ReplicaFetchResponse,
)
from conveyor.transport.client import AsyncHTTP
from conveyor.transport.framed import FramedConnection, connect
from conveyor.transport.tls import TLSConfig

log = logging.getLogger(__name__)

LISTENER_PATH: Final = "/internal/v1/replicas/listener"
ALTER_ISR_PATH: Final = "/internal/v1/partitions/isr"
ALTER_ISR_TIMEOUT_S: Final = 5.0
EPOCH_END_TIMEOUT_S: Final = 10.0
CONNECT_TIMEOUT_S: Final = 5.0
FETCH_MARGIN_S: Final = 10.0  # beyond the long-poll, before a fetch counts as lost
IDLE_CONNECTIONS_MAX: Final = 2  # pooled per leader (a fetch and an epoch request)

__all__ = ["LISTENER_PATH", "Peers"]


class _Leader:
    """What this broker knows of one leader's replica listener."""

    def __init__(self) -> None:
        self.url = ""
        self.port: int | None = None
        self.idle: list[FramedConnection] = []


class Peers:
    def __init__(
        self,
        http: AsyncHTTP,
        coordinator_url: Callable[[], str],
        broker_url: Callable[[BrokerId], str | None],
        accept_coordinator_epoch: Callable[[int, str], bool] = lambda _epoch, _what: True,
        *,
        broker_id: int = 0,
        tls: TLSConfig | None = None,
        cluster_secret: str | None = None,
    ) -> None:
        """``accept_coordinator_epoch``: whether an answer from a coordinator at that epoch
        may be applied (a deposed coordinator's may not)."""
        self._http = http
        self._coordinator_url = coordinator_url
        self._broker_url = broker_url
        self._accept_coordinator_epoch = accept_coordinator_epoch
        self._broker_id = broker_id
        self._tls = tls or TLSConfig()
        self._secret = cluster_secret
        self._leaders: dict[BrokerId, _Leader] = {}
        self._closed = False

    # ---- to leaders ------------------------------------------------------------------------

    async def replica_fetch(
        self, leader: BrokerId, request: ReplicaFetchRequest
    ) -> tuple[ReplicaFetchResponse, list[memoryview]]:
        timeout_s = request.max_wait_ms / 1000 + FETCH_MARGIN_S
        header, payload = await self._call(leader, request, timeout_s)
        return decode_fetch_response(header, payload)

    async def epoch_end(self, leader: BrokerId, request: EpochEndRequest) -> EpochEndResponse:
        header, _ = await self._call(leader, request, EPOCH_END_TIMEOUT_S)
        try:
            return msgspec.json.decode(header, type=EpochEndResponse)
        except msgspec.ValidationError as exc:
            raise ConveyorError(f"undecodable epoch answer: {exc}") from exc

    async def _call(
        self, leader: BrokerId, request: Request, timeout_s: float
    ) -> tuple[memoryview, memoryview]:
        """(header, payload) of the leader's answer; ConveyorError or OSError when none."""
        state = self._leader(leader)
        connection, pooled = await self._acquire(leader, state)
        try:
            try:
                frame = await self._exchange(connection, request, timeout_s)
            except (asyncio.IncompleteReadError, ConnectionError) as exc:
                connection.close()
                if not pooled:
                    raise
                # The leader closed an idle pooled connection: once more on a new one.
                log.debug("replica connection to broker %d was closed: %s", leader, exc)
                connection, _ = await self._acquire(leader, state, fresh=True)
                frame = await self._exchange(connection, request, timeout_s)
        except asyncio.IncompleteReadError as exc:
            connection.close()
            raise ConveyorError(
                f"broker {leader} closed the replica connection", code=ErrorCode.NETWORK_ERROR
            ) from exc
        except BaseException:
            connection.close()
            raise
        status, header, payload = split_response(frame)
        if status == STATUS_ERROR:
            connection.close()
            error = decode_error(header)
            code = ErrorCode.__members__.get(error.code, ErrorCode.INTERNAL_ERROR)
            raise ConveyorError(f"broker {leader}: {error.message}", code=code)
        self._release(state, connection)
        return header, payload

    @staticmethod
    async def _exchange(
        connection: FramedConnection, request: Request, timeout_s: float
    ) -> memoryview:
        async with asyncio.timeout(timeout_s):
            await connection.send(encode_request(request))
            return await connection.read_frame(RESPONSE_FRAME_BYTES_MAX)

    def _leader(self, leader: BrokerId) -> _Leader:
        url = self._broker_url(leader)
        if url is None:
            raise ConveyorError(
                f"no address known for broker {leader}", code=ErrorCode.NETWORK_ERROR
            )
        state = self._leaders.setdefault(leader, _Leader())
        if state.url != url:  # moved: forget its listener and connections
            self._drop(state)
            state.url = url
        return state

    async def _acquire(
        self, leader: BrokerId, state: _Leader, *, fresh: bool = False
    ) -> tuple[FramedConnection, bool]:
        """A connection to the leader's listener: a pooled one (True), or a new one."""
        if state.idle and not fresh:
            return state.idle.pop(), True
        if self._closed:
            raise ConveyorError("shutting down", code=ErrorCode.NETWORK_ERROR)
        parts = urlsplit(state.url)
        host = parts.hostname or "127.0.0.1"
        if state.port is None:
            address = await self._http.call(
                "GET",
                state.url + LISTENER_PATH,
                ReplicaListenerAddress,
                timeout_s=CONNECT_TIMEOUT_S,
            )
            state.port = address.port
        context = self._tls.client_context() if parts.scheme == "https" else None
        try:
            connection = await connect(
                host, state.port, ssl_context=context, timeout_s=CONNECT_TIMEOUT_S
            )
        except OSError:
            state.port = None  # restarted on another port, perhaps: ask again next time
            raise
        try:
            hello = ReplicaHello(broker_id=self._broker_id, secret=self._secret)
            header, _ = await self._hello(connection, hello, leader)
            answer = msgspec.json.decode(header, type=HelloAnswer)
        except BaseException:
            connection.close()
            state.port = None
            raise
        if answer.broker_id != leader:
            connection.close()
            state.port = None
            raise ConveyorError(
                f"the replica listener at {host}:{state.port} is broker {answer.broker_id}, "
                f"not {leader}",
                code=ErrorCode.NETWORK_ERROR,
            )
        return connection, False

    async def _hello(
        self, connection: FramedConnection, hello: ReplicaHello, leader: BrokerId
    ) -> tuple[memoryview, memoryview]:
        try:
            frame = await self._exchange(connection, hello, CONNECT_TIMEOUT_S)
        except asyncio.IncompleteReadError as exc:
            raise ConveyorError(
                f"broker {leader} closed the replica connection", code=ErrorCode.NETWORK_ERROR
            ) from exc
        status, header, payload = split_response(frame)
        if status == STATUS_ERROR:
            error = decode_error(header)
            code = ErrorCode.__members__.get(error.code, ErrorCode.INTERNAL_ERROR)
            raise ConveyorError(f"broker {leader} refused: {error.message}", code=code)
        return header, payload

    def _release(self, state: _Leader, connection: FramedConnection) -> None:
        if self._closed or len(state.idle) >= IDLE_CONNECTIONS_MAX:
            connection.close()
        else:
            state.idle.append(connection)

    @staticmethod
    def _drop(state: _Leader) -> None:
        for connection in state.idle:
            connection.close()
        state.idle.clear()
        state.port = None

    def close(self) -> None:
        """Close the pooled connections (requests in flight close theirs as they end)."""
        self._closed = True
        for state in self._leaders.values():
            self._drop(state)

    # ---- to the coordinator ----------------------------------------------------------------

    async def alter_isr(self, request: AlterIsrRequest) -> AlterIsrResponse:
        url = self._coordinator_url().rstrip("/") + ALTER_ISR_PATH
        response = await self._http.call(
            "POST", url, AlterIsrResponse, body=request, timeout_s=ALTER_ISR_TIMEOUT_S
        )
        if not self._accept_coordinator_epoch(response.coordinator_epoch, "alter isr"):
            raise ConveyorError(
                f"alter isr answered by a deposed coordinator (epoch {response.coordinator_epoch})",
                code=ErrorCode.NOT_COORDINATOR,
            )
        return response
