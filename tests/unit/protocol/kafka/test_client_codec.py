"""The client's side of the codec: requests it encodes decode as the listener decodes them;
answers the listener encodes decode back; any other bytes raise ResponseError only."""

from __future__ import annotations

import contextlib

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from conveyor.protocol.errors import (
    AuthenticationError,
    AuthorizationError,
    ErrorCode,
    InvalidRequestError,
    RetriableError,
)
from conveyor.protocol.kafka.apis import SERVED, ApiKey
from conveyor.protocol.kafka.codec import (
    ResponseError,
    api_versions_error,
    decode_request,
    decode_response,
    encode_request,
    encode_response,
    new_request,
    response_correlation_id,
)
from conveyor.protocol.kafka.errors import KafkaError, conveyor_code, conveyor_error, kafka_error

VERSIONS = [
    (key, version)
    for key, spec in sorted(SERVED.items())
    for version in range(spec.min_version, spec.max_version + 1)
]


@pytest.mark.parametrize(("key", "version"), VERSIONS)
def test_requests_round_trip_through_the_listeners_decoder(key: int, version: int) -> None:
    frame = encode_request(key, version, 41, "conveyor-test", new_request(key, version))
    assert int.from_bytes(frame[:4], "big") == len(frame) - 4
    decoded = decode_request(frame[4:])
    assert (decoded.api_key, decoded.api_version) == (key, version)
    assert decoded.header.correlation_id == 41
    assert decoded.header.client_id == "conveyor-test"


@pytest.mark.parametrize(("key", "version"), VERSIONS)
def test_answers_round_trip(key: int, version: int) -> None:
    body = SERVED[key].response[version]()
    frame = encode_response(key, version, 7, body)
    assert response_correlation_id(frame) == 7
    assert type(decode_response(key, version, frame)) is type(body)


def test_api_versions_refusal_is_read_as_v0_whatever_was_asked() -> None:
    frame = api_versions_error(3, [(18, 0, 2), (0, 3, 9)])
    reply = decode_response(ApiKey.API_VERSIONS, 3, frame)
    assert reply.error_code == KafkaError.UNSUPPORTED_VERSION
    assert [(k.api_key, k.max_version) for k in reply.api_keys] == [(18, 2), (0, 9)]


ANSWERS = [
    (key, version, encode_response(key, version, 1, SERVED[key].response[version]()))
    for key, version in VERSIONS
]


@settings(max_examples=300)
@given(st.sampled_from(VERSIONS), st.binary(max_size=300))
def test_random_answers_decode_or_raise_response_error(api: tuple[int, int], data: bytes) -> None:
    with contextlib.suppress(ResponseError):
        decode_response(api[0], api[1], data)


@settings(max_examples=600)
@given(st.sampled_from(ANSWERS), st.data())
def test_mutated_answers_decode_or_raise_response_error(
    answer: tuple[int, int, bytes], data: st.DataObject
) -> None:
    key, version, frame = answer
    mutated = bytearray(frame)
    for _ in range(data.draw(st.integers(1, 4))):
        position = data.draw(st.integers(0, len(mutated) - 1))
        mutated[position] = data.draw(st.integers(0, 255))
    cut = data.draw(st.integers(0, len(mutated)))
    with contextlib.suppress(ResponseError):
        decode_response(key, version, bytes(mutated[:cut]))


def test_kafka_codes_become_conveyors_typed_errors() -> None:
    assert conveyor_code(KafkaError.NOT_LEADER_OR_FOLLOWER) is ErrorCode.NOT_LEADER
    assert conveyor_code(KafkaError.OUT_OF_ORDER_SEQUENCE_NUMBER) is (
        ErrorCode.OUT_OF_ORDER_SEQUENCE
    )
    assert conveyor_code(9999) is ErrorCode.INTERNAL_ERROR
    not_leader = conveyor_error(KafkaError.NOT_LEADER_OR_FOLLOWER, "moved")
    assert isinstance(not_leader, RetriableError) and not_leader.details["kafka_code"] == 6
    assert isinstance(conveyor_error(KafkaError.MESSAGE_TOO_LARGE), InvalidRequestError)
    # the same classes as over HTTP (``error_from_dict``): an Admin's reads over Kafka
    # raise what its reads over HTTP raised
    denied = conveyor_error(KafkaError.TOPIC_AUTHORIZATION_FAILED, "describe not allowed")
    assert isinstance(denied, AuthorizationError) and denied.code is ErrorCode.FORBIDDEN
    failed = conveyor_error(KafkaError.SASL_AUTHENTICATION_FAILED)
    assert isinstance(failed, AuthenticationError)


# Conveyor codes that share a Kafka code with another: a client over Kafka sees the other.
LOSSY = {
    ErrorCode.UNSUPPORTED_MEDIA_TYPE: ErrorCode.INVALID_REQUEST,
    ErrorCode.UNKNOWN_PARTITION: ErrorCode.UNKNOWN_TOPIC,
    ErrorCode.LOG_TRUNCATED: ErrorCode.NOT_LEADER,
    ErrorCode.NOT_READY: ErrorCode.LEADER_NOT_AVAILABLE,
    ErrorCode.DISK_FULL: ErrorCode.STORAGE_ERROR,
    ErrorCode.CORRUPT_DATA: ErrorCode.STORAGE_ERROR,
    ErrorCode.TOO_MANY_CONNECTIONS: ErrorCode.NETWORK_ERROR,
    ErrorCode.THROTTLED: ErrorCode.UNAUTHENTICATED,
    ErrorCode.TLS_ERROR: ErrorCode.NETWORK_ERROR,
}


@pytest.mark.parametrize("code", list(ErrorCode), ids=lambda c: c.name)
def test_every_code_a_broker_sends_comes_back(code: ErrorCode) -> None:
    assert conveyor_code(kafka_error(code)) is LOSSY.get(code, code)
