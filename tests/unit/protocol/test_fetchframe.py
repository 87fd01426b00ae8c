"""The replica protocol's frames (protocol/fetchframe.py): round trips, and bad input is
a typed error (fuzzed)."""

from __future__ import annotations

import contextlib

import pytest
from hypothesis import given
from hypothesis import strategies as st

from conveyor.protocol.errors import InvalidRequestError, RetriableError
from conveyor.protocol.fetchframe import (
    REQUEST_FRAME_BYTES_MAX,
    SIZE,
    STATUS_ERROR,
    STATUS_OK,
    TRAILER_CHANGED,
    TRAILER_OK,
    ReplicaHello,
    decode_fetch_response,
    decode_request,
    encode_request,
    frame_size,
    response_head,
    split_response,
)
from conveyor.protocol.messages import (
    BrokerId,
    Epoch,
    EpochEndPartition,
    EpochEndRequest,
    ErrorBody,
    Offset,
    ReplicaFetchPartition,
    ReplicaFetchRequest,
    ReplicaFetchResponse,
    ReplicaFetchResult,
)

REQUESTS = [
    ReplicaHello(broker_id=2, secret="s3cret"),
    ReplicaHello(broker_id=2),
    ReplicaFetchRequest(
        broker_id=BrokerId(2),
        partitions=[
            ReplicaFetchPartition(
                topic="t",
                partition=0,
                fetch_offset=Offset(5),
                durable_offset=Offset(4),
                leader_epoch=Epoch(3),
            )
        ],
        max_wait_ms=100,
    ),
    EpochEndRequest(
        broker_id=BrokerId(2),
        partitions=[
            EpochEndPartition(topic="t", partition=1, current_leader_epoch=Epoch(4), epoch=Epoch(3))
        ],
    ),
]


@pytest.mark.parametrize("request_", REQUESTS, ids=lambda r: type(r).__name__)
def test_requests_round_trip(request_: object) -> None:
    frame = encode_request(request_)  # type: ignore[arg-type]
    assert frame_size(frame[: SIZE.size], REQUEST_FRAME_BYTES_MAX) == len(frame) - SIZE.size
    assert decode_request(frame[SIZE.size :]) == request_


def test_a_fetch_answer_carries_each_partitions_batches_as_views() -> None:
    response = ReplicaFetchResponse(
        partitions=[
            ReplicaFetchResult(topic="a", partition=0, size_bytes=3, high_watermark=Offset(7)),
            ReplicaFetchResult(topic="a", partition=1),
            ReplicaFetchResult(topic="b", partition=0, size_bytes=2),
        ]
    )
    frame = response_head(response, 6) + b"xyzpq" + TRAILER_OK
    assert frame_size(frame[: SIZE.size], 1 << 20) == len(frame) - SIZE.size
    status, header, payload = split_response(memoryview(frame)[SIZE.size :])
    assert status == STATUS_OK
    decoded, chunks = decode_fetch_response(header, payload)
    assert decoded == response
    assert [bytes(c) for c in chunks] == [b"xyz", b"", b"pq"]
    assert all(c.obj is payload.obj for c in chunks)  # no copies
    with pytest.raises(InvalidRequestError):  # sizes and payload disagree
        decode_fetch_response(header, memoryview(b"xyzpq!" + TRAILER_OK))
    with pytest.raises(InvalidRequestError):
        decode_fetch_response(header, memoryview(b"xy" + TRAILER_OK))
    with pytest.raises(InvalidRequestError):  # no trailer, or an unknown one
        decode_fetch_response(header, memoryview(b""))
    with pytest.raises(InvalidRequestError):
        decode_fetch_response(header, memoryview(b"xyzpq\x07"))


def test_a_log_changed_under_the_send_makes_the_answer_retriable() -> None:
    header = memoryview(b'{"partitions": [{"topic": "a", "partition": 0, "size_bytes": 2}]}')
    with pytest.raises(RetriableError):
        decode_fetch_response(header, memoryview(b"xy" + TRAILER_CHANGED))


def test_an_error_answer_is_marked() -> None:
    frame = response_head(ErrorBody(code="FORBIDDEN", message="no"), error=True)
    status, _, payload = split_response(memoryview(frame)[SIZE.size :])
    assert status == STATUS_ERROR and len(payload) == 0


def test_a_frame_announcing_more_than_the_limit_is_refused() -> None:
    with pytest.raises(InvalidRequestError):
        frame_size(SIZE.pack(REQUEST_FRAME_BYTES_MAX + 1), REQUEST_FRAME_BYTES_MAX)


@given(st.binary(max_size=200))
def test_any_request_bytes_decode_or_raise_a_typed_error(frame: bytes) -> None:
    with contextlib.suppress(InvalidRequestError):
        decode_request(frame)


@given(st.integers(0, 3), st.binary(max_size=200))
def test_any_request_body_of_a_known_kind_decodes_or_raises_a_typed_error(
    kind: int, body: bytes
) -> None:
    with contextlib.suppress(InvalidRequestError):
        decode_request(bytes((kind,)) + body)


@given(st.binary(max_size=200), st.binary(max_size=50))
def test_any_response_bytes_split_and_decode_or_raise_a_typed_error(
    frame: bytes, payload: bytes
) -> None:
    try:
        _, header, _rest = split_response(memoryview(frame))
        decode_fetch_response(header, memoryview(payload))
    except InvalidRequestError:
        pass
