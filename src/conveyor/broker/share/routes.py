"""The broker's share-group routes: an adapter over :class:`ShareManager` and the store.

* ``POST /v1/share-groups/{group}/topics/{topic}/receive``: acknowledge and acquire. With
  ``Accept: application/vnd.conveyor.share-receive`` the answer is framed like the replica
  fetch (a 4-byte length, a ``ReceiveResponse`` JSON, then each partition's batches as
  stored: what the Python client decodes); otherwise JSON records with lock tokens (REST,
  for any language).
* ``POST /v1/share-groups/{group}/topics/{topic}/acknowledge``: accept, release or reject
  by lock token, in bulk (JSON).
* ``POST /internal/v1/share-state/read|write``: the share-state store (msgpack), between
  brokers.
"""

from __future__ import annotations

import struct
from collections.abc import Callable
from typing import Final, Protocol, TypeVar

import msgspec
from aiohttp import web

from conveyor.broker.jsonrecords import to_fetched
from conveyor.broker.share.manager import Received, ShareManager
from conveyor.broker.share.remote import STATE_READ_PATH, STATE_WRITE_PATH
from conveyor.broker.share.store import StateStore
from conveyor.protocol.errors import ErrorCode, InvalidRequestError
from conveyor.protocol.records import decode_batches
from conveyor.protocol.share import (
    ACKS_PER_REQUEST_MAX,
    STATE_CONTENT_TYPE,
    AckRange,
    JsonAckRequest,
    JsonAckResponse,
    JsonAckResult,
    JsonReceiveResponse,
    ReceivedRecord,
    ReceiveRequest,
    StateReadRequest,
    StateWriteRequest,
    encode_wire,
    lock_token,
    parse_lock_token,
)
from conveyor.transport.server import Route, decode_json, json_response

RECEIVE_CONTENT_TYPE: Final = "application/vnd.conveyor.share-receive"
SHARE_PATH: Final = "/v1/share-groups/{group}/topics/{topic}"
_FRAME: Final = struct.Struct(">I")
T = TypeVar("T")
_STATE_BODY_BYTES_MAX: Final = 64 * 1024 * 1024


def encode_received(received: Received) -> bytes:
    header = msgspec.json.encode(received.response)
    return b"".join((_FRAME.pack(len(header)), header, *received.chunks))


def json_records(received: Received) -> JsonReceiveResponse:
    """The REST form: each acquired record decoded, with its lock token."""
    topic = received.response.topic
    records: list[ReceivedRecord] = []
    errors = []
    for answer, chunk in zip(received.response.partitions, received.chunks, strict=True):
        if answer.error is not None:
            errors.append(answer)
            continue
        held = {
            offset: (r.acquisition, r.delivery_count)
            for r in answer.acquired
            for offset in range(r.first_offset, r.last_offset + 1)
        }
        decoded = [r for r in decode_batches(chunk, verify_crc=False) if r.offset in held]
        for record, fetched in zip(decoded, to_fetched(decoded), strict=True):
            acquisition, count = held[record.offset]
            records.append(
                ReceivedRecord(
                    partition=answer.partition,
                    offset=record.offset,
                    timestamp_ms=record.timestamp_ms,
                    key=fetched.key,
                    value=fetched.value,
                    key_encoding=fetched.key_encoding,
                    value_encoding=fetched.value_encoding,
                    headers=fetched.headers,
                    lock_token=lock_token(topic, answer.partition, record.offset, acquisition),
                    delivery_count=count,
                )
            )
    return JsonReceiveResponse(
        topic=topic,
        records=records,
        lock_duration_ms=received.response.lock_duration_ms,
        errors=errors,
    )


class ShareParts(Protocol):
    @property
    def manager(self) -> ShareManager: ...

    @property
    def store(self) -> StateStore: ...


class _Handlers:
    """``parts`` is called at request time (the routes are listed before a service exists,
    for the OpenAPI document)."""

    def __init__(self, parts: Callable[[], ShareParts], led: Callable[[str], list[int]]) -> None:
        self._parts = parts
        self.led = led

    @property
    def manager(self) -> ShareManager:
        return self._parts().manager

    @property
    def store(self) -> StateStore:
        return self._parts().store

    async def receive(self, request: web.Request) -> web.Response:
        group, topic = request.match_info["group"], request.match_info["topic"]
        asked = await decode_json(request, ReceiveRequest)
        asked.topic = topic
        if not asked.partitions:
            asked.partitions = self.led(topic)
        received = await self.manager.receive(group, asked)
        if RECEIVE_CONTENT_TYPE in request.headers.get("Accept", ""):
            return web.Response(body=encode_received(received), content_type=RECEIVE_CONTENT_TYPE)
        return json_response(json_records(received))

    async def acknowledge(self, request: web.Request) -> web.Response:
        group, topic = request.match_info["group"], request.match_info["topic"]
        asked = await decode_json(request, JsonAckRequest)
        if len(asked.acknowledgements) > ACKS_PER_REQUEST_MAX:
            raise InvalidRequestError(f"more than {ACKS_PER_REQUEST_MAX} acknowledgements")
        acks: list[AckRange] = []
        for ack in asked.acknowledgements:
            token_topic, partition, offset, acquisition = parse_lock_token(ack.lock_token)
            if token_topic != topic:
                raise InvalidRequestError(
                    f"lock token {ack.lock_token[:100]!r} is for topic {token_topic!r}, "
                    f"not {topic!r}"
                )
            acks.append(
                AckRange(
                    partition=partition, first_offset=offset, last_offset=offset,
                    type=ack.type, acquisition=acquisition, delay_ms=ack.delay_ms,
                    reason=ack.reason,
                )
            )  # fmt: skip
        received = await self.manager.receive(
            group, ReceiveRequest(topic=topic, max_records=0, acknowledgements=acks)
        )
        by_ack = {(r.partition, r.first_offset): r for r in received.response.acks}
        results = []
        for token, done in zip(asked.acknowledgements, acks, strict=True):
            result = by_ack.get((done.partition, done.first_offset))
            results.append(
                JsonAckResult(
                    lock_token=token.lock_token,
                    error=None if result is None else result.error,
                    message=None if result is None else result.message,
                )
            )
        return json_response(JsonAckResponse(results=results))

    async def state_read(self, request: web.Request) -> web.Response:
        asked = _decode_state(await request.read(), StateReadRequest)
        answer = await self.store.read(asked)
        return web.Response(body=encode_wire(answer), content_type=STATE_CONTENT_TYPE)

    async def state_write(self, request: web.Request) -> web.Response:
        asked = _decode_state(await request.read(), StateWriteRequest)
        await self.store.write(asked)
        return web.Response(body=b"", content_type=STATE_CONTENT_TYPE)


def _decode_state(body: bytes, kind: type[T]) -> T:
    if len(body) > _STATE_BODY_BYTES_MAX:
        raise InvalidRequestError("share-state request too large", code=ErrorCode.MESSAGE_TOO_LARGE)
    try:
        return msgspec.msgpack.decode(body, type=kind)
    except (msgspec.DecodeError, msgspec.ValidationError) as exc:
        raise InvalidRequestError(f"malformed share-state request: {exc}") from None


def share_routes(parts: Callable[[], ShareParts], led: Callable[[str], list[int]]) -> list[Route]:
    handlers = _Handlers(parts, led)
    data = ("share-groups",)
    return [
        Route(
            "POST",
            SHARE_PATH + "/receive",
            handlers.receive,
            "Acknowledge, then acquire records of a share group (a queue) from the partitions "
            "this broker leads; JSON records with lock tokens, or framed batches by Accept",
            request=ReceiveRequest,
            response=JsonReceiveResponse,
            binary_response=True,
            tags=data,
        ),
        Route(
            "POST",
            SHARE_PATH + "/acknowledge",
            handlers.acknowledge,
            "Accept, release (optionally after delay_ms) or reject records by lock token",
            request=JsonAckRequest,
            response=JsonAckResponse,
            tags=data,
        ),
        Route(
            "POST",
            STATE_READ_PATH,
            handlers.state_read,
            "Read a share-partition's state, fencing writers of older leader epochs (msgpack)",
            internal=True,
        ),
        Route(
            "POST",
            STATE_WRITE_PATH,
            handlers.state_write,
            "Append a share-partition's state records, refused for a fenced epoch (msgpack)",
            internal=True,
        ),
    ]
