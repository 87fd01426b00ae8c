"""Conveyor's replica protocol: the frames followers and leaders exchange on the leader's
replica listener (``broker/replica_listener.py``, docs/replication.md). Pure: bytes in,
typed messages out; no I/O.

Every frame is a 4-byte big-endian size, then that many bytes (Kafka's framing).

* **Request** (follower to leader): ``kind`` (1 byte), then the message's JSON:
  ``HELLO`` (:class:`ReplicaHello`, the first frame of a connection: the cluster secret
  when auth is on), ``FETCH`` (:class:`ReplicaFetchRequest`), ``EPOCH_END``
  (:class:`EpochEndRequest`). At most :data:`REQUEST_FRAME_BYTES_MAX`.
* **Response** (one per request, in order): ``status`` (1 byte: :data:`STATUS_OK` or
  :data:`STATUS_ERROR`), the header's size (4 bytes), the header's JSON (the answer:
  :class:`ReplicaFetchResponse`, :class:`EpochEndResponse`, an empty object for HELLO, or
  an :class:`ErrorBody`), then a fetch answer's batches exactly as stored, partition after
  partition in the order of its results (``size_bytes`` each), then one **trailer** byte:
  :data:`TRAILER_OK`, or :data:`TRAILER_CHANGED` when a log was truncated or rewritten
  while its bytes were being sent (the follower then discards the answer and fetches
  again). The leader sends the batches from its segment files (``os.sendfile``), so it
  can only know after sending that they were still the ones it found; the follower reads
  the whole frame into one buffer: the batches are views into it, never copied.
"""

from __future__ import annotations

import struct
from typing import Final, cast

import msgspec

from conveyor.protocol.errors import ErrorCode, InvalidRequestError, RetriableError
from conveyor.protocol.messages import (
    EpochEndRequest,
    ErrorBody,
    ReplicaFetchRequest,
    ReplicaFetchResponse,
    Wire,
)

SIZE: Final = struct.Struct(">I")
_HEAD: Final = struct.Struct(">BI")  # status, header size

KIND_HELLO: Final = 1
KIND_FETCH: Final = 2
KIND_EPOCH_END: Final = 3
STATUS_OK: Final = 0
STATUS_ERROR: Final = 1
TRAILER_OK: Final = b"\x00"
TRAILER_CHANGED: Final = b"\x01"

REQUEST_FRAME_BYTES_MAX: Final = 1 << 20  # requests are JSON naming partitions
# A fetch answer holds at most the request's max_bytes, plus one batch larger than the
# per-partition limit (a batch is never split); stored batches are at most 1 GiB.
RESPONSE_FRAME_BYTES_MAX: Final = (1 << 30) + (64 << 20)


class ReplicaHello(Wire):
    """A connection's first request: who asks and, with auth on, the cluster secret (a
    connection whose TLS client certificate was verified needs none)."""

    broker_id: int
    secret: str | None = None


class HelloAnswer(Wire):
    """The leader's answer to a hello (its own id, to catch a misdirected connection)."""

    broker_id: int


class ReplicaListenerAddress(Wire):
    """Where a broker's replica listener is (``GET /internal/v1/replicas/listener`` on its
    HTTP API): the port, on the host of the broker's advertised URL."""

    port: int


Request = ReplicaHello | ReplicaFetchRequest | EpochEndRequest

_KINDS: Final[dict[int, type[Wire]]] = {
    KIND_HELLO: ReplicaHello,
    KIND_FETCH: ReplicaFetchRequest,
    KIND_EPOCH_END: EpochEndRequest,
}
_KIND_OF: Final = {cls: kind for kind, cls in _KINDS.items()}
_DECODERS: Final = {kind: msgspec.json.Decoder(cls) for kind, cls in _KINDS.items()}
_ENCODER: Final = msgspec.json.Encoder()


def encode_request(request: Request) -> bytes:
    """The whole frame (size prefix included) of ``request``."""
    body = _ENCODER.encode(request)
    return SIZE.pack(1 + len(body)) + bytes((_KIND_OF[type(request)],)) + body


def decode_request(frame: bytes | memoryview) -> Request:
    """A request frame (without its size prefix); InvalidRequestError when it is not one."""
    if len(frame) < 1:
        raise InvalidRequestError("empty replica request frame")
    decoder = _DECODERS.get(frame[0])
    if decoder is None:
        raise InvalidRequestError(f"unknown replica request kind {frame[0]}")
    try:
        request = cast(Request, decoder.decode(frame[1:]))
    except (msgspec.DecodeError, msgspec.ValidationError) as exc:
        raise InvalidRequestError(f"undecodable replica request: {exc}") from exc
    return request


def frame_size(prefix: bytes | bytearray | memoryview, size_max: int) -> int:
    """The size a frame's 4-byte prefix announces; InvalidRequestError beyond ``size_max``."""
    (size,) = SIZE.unpack(prefix)
    if size > size_max:
        raise InvalidRequestError(f"replica frame of {size} bytes (at most {size_max})")
    return int(size)


def response_head(header: Wire, payload_bytes: int = 0, *, error: bool = False) -> bytes:
    """A response frame up to its payload (size prefix included); ``payload_bytes`` of
    batches follow it on the wire."""
    body = _ENCODER.encode(header)
    status = STATUS_ERROR if error else STATUS_OK
    return SIZE.pack(_HEAD.size + len(body) + payload_bytes) + _HEAD.pack(status, len(body)) + body


def split_response(frame: memoryview) -> tuple[int, memoryview, memoryview]:
    """(status, header JSON, payload) of a response frame without its size prefix."""
    if len(frame) < _HEAD.size:
        raise InvalidRequestError("replica response shorter than its head")
    status, header_bytes = _HEAD.unpack_from(frame)
    end = _HEAD.size + header_bytes
    if status not in (STATUS_OK, STATUS_ERROR) or end > len(frame):
        raise InvalidRequestError("replica response with a bad head")
    return status, frame[_HEAD.size : end], frame[end:]


def decode_error(header: memoryview) -> ErrorBody:
    try:
        return msgspec.json.decode(header, type=ErrorBody)
    except (msgspec.DecodeError, msgspec.ValidationError) as exc:
        raise InvalidRequestError(f"undecodable replica error: {exc}") from exc


def decode_fetch_response(
    header: memoryview, payload: memoryview
) -> tuple[ReplicaFetchResponse, list[memoryview]]:
    """A fetch answer and each partition's batches (views into ``payload``, no copies).
    RetriableError when the leader's trailer says a log changed under the send."""
    if len(payload) < 1:
        raise InvalidRequestError("replica fetch response without its trailer")
    trailer = bytes(payload[-1:])
    if trailer == TRAILER_CHANGED:
        raise RetriableError(
            "the leader's log changed while its answer was sent: fetch again",
            code=ErrorCode.NETWORK_ERROR,
        )
    if trailer != TRAILER_OK:
        raise InvalidRequestError("replica fetch response with an unknown trailer")
    payload = payload[:-1]
    try:
        response = msgspec.json.decode(header, type=ReplicaFetchResponse)
    except (msgspec.DecodeError, msgspec.ValidationError) as exc:
        raise InvalidRequestError(f"undecodable replica fetch response: {exc}") from exc
    chunks: list[memoryview] = []
    start = 0
    for result in response.partitions:
        if result.size_bytes < 0 or start + result.size_bytes > len(payload):
            raise InvalidRequestError("replica fetch response sizes exceed its payload")
        chunks.append(payload[start : start + result.size_bytes])
        start += result.size_bytes
    if start != len(payload):
        raise InvalidRequestError(f"replica fetch response has {len(payload) - start} stray bytes")
    return response, chunks
