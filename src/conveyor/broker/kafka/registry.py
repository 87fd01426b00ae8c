"""The handler registry and the per-request context every handler receives.

A handler is ``async (ctx, request) -> response | None``: ``request`` is the decoded
kafka-python message of the version the client sent, the response is a message of the
same API and version (None: send nothing, as Produce with acks=0). Handlers raise nothing
for per-partition problems: those are error codes in the response, as in Kafka. A
:class:`~conveyor.protocol.errors.ConveyorError` escaping a handler is a whole-request
failure and closes the connection (Kafka's behaviour for a request it cannot answer).
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

from conveyor.protocol.kafka.apis import SERVED, ApiKey
from conveyor.protocol.kafka.header import RequestHeader
from conveyor.transport.kafka_server import ConnectionInfo


@dataclass(slots=True)
class ConnectionState:
    """What a connection has established: its principal and its SASL exchange; and the
    order its Produce requests append in."""

    info: ConnectionInfo
    principal: str | None = None  # None: not authenticated (auth on) yet
    sasl_mechanism: str | None = None  # chosen by SaslHandshake
    sasl_exchange: Any = None  # a mechanism's state between SaslAuthenticate rounds
    sasl_done: bool = False  # authenticated once (no re-authentication, KIP-368)
    # Held by a Produce until its partitions are appended or refused: the next Produce
    # appends after it (broker/kafka/produce.py)
    appending: asyncio.Lock = field(default_factory=asyncio.Lock)


@dataclass(slots=True)
class RequestContext:
    connection: ConnectionState
    header: RequestHeader
    close_after_reply: bool = False  # e.g. a failed authentication: answer, then close
    _after_reply: list[Callable[[], None]] = field(default_factory=list)

    @property
    def api_version(self) -> int:
        return self.header.api_version

    @property
    def principal(self) -> str | None:
        return self.connection.principal

    def after_reply(self, callback: Callable[[], None]) -> None:
        """Run ``callback`` once the answer is written or dropped (memory held for it)."""
        self._after_reply.append(callback)

    def finish(self) -> None:
        callbacks, self._after_reply = self._after_reply, []
        for callback in callbacks:
            callback()


Handler = Callable[[RequestContext, Any], Awaitable[Any]]


class Registry:
    """API key -> handler. Every API in the served table needs one (a test checks)."""

    def __init__(self) -> None:
        self._handlers: dict[int, Handler] = {}

    def add(self, key: ApiKey, handler: Handler) -> None:
        if int(key) not in SERVED:
            raise ValueError(f"{key.name} has no row in protocol/kafka/apis.py")
        if int(key) in self._handlers:
            raise ValueError(f"{key.name} already has a handler")
        self._handlers[int(key)] = handler

    def get(self, api_key: int) -> Handler | None:
        return self._handlers.get(api_key)

    def keys(self) -> Iterable[int]:
        return self._handlers.keys()

    def version_ranges(self) -> list[tuple[int, int, int]]:
        """(api key, advertised min, max) of every API with a handler: ApiVersions' answer."""
        return sorted(
            (key, SERVED[key].advertised_min_version, SERVED[key].max_version)
            for key in self._handlers
        )
