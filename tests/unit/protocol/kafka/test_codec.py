"""Decoding whole requests: valid frames of every served API decode; random and mutated
frames raise a RequestError and nothing else (the listener closes on those)."""

from __future__ import annotations

import contextlib
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from conveyor.protocol.kafka.apis import SERVED, ApiKey, is_flexible
from conveyor.protocol.kafka.codec import (
    DECODE_ERRORS,
    MalformedRequestError,
    RequestError,
    UnknownApiError,
    UnsupportedVersionError,
    decode_request,
    encode_response,
    null_field,
)
from conveyor.protocol.kafka.header import parse_request_header
from tests.kafka.wire import request_frame

VALID_FRAMES = [
    request_frame(key, version, SERVED[key].request[version]().encode(version=version))[4:]
    for key, spec in sorted(SERVED.items())
    for version in range(spec.min_version, spec.max_version + 1)
]


@pytest.mark.parametrize("frame", VALID_FRAMES)
def test_valid_frames_decode(frame: bytes) -> None:
    decoded = decode_request(frame)
    assert decoded.spec.supports(decoded.api_version)
    assert decoded.header.client_id == "conveyor-test"


@settings(max_examples=300)
@given(st.binary(max_size=200))
def test_random_bytes_decode_or_raise_request_error(data: bytes) -> None:
    with contextlib.suppress(RequestError):
        decode_request(data)


@settings(max_examples=500)
@given(st.sampled_from(VALID_FRAMES), st.data())
def test_mutated_frames_decode_or_raise_request_error(frame: bytes, data: st.DataObject) -> None:
    mutated = bytearray(frame)
    for _ in range(data.draw(st.integers(1, 4))):
        position = data.draw(st.integers(0, len(mutated) - 1))
        mutated[position] = data.draw(st.integers(0, 255))
    cut = data.draw(st.integers(0, len(mutated)))
    with contextlib.suppress(RequestError):
        decode_request(bytes(mutated[:cut]))


def reference_null_field(struct: Any, message: Any, version: int) -> str | None:
    """null_field without its plan: every field of every struct, looked at each time."""
    for field in struct.untagged_fields(version):
        value = getattr(message, field.name)
        if value is None:
            length_prefixed = field.is_array() or field.type_str in {"string", "bytes", "records"}
            if length_prefixed and not field.nullable_for_version_q(version):
                return str(field.name)
        elif field.is_struct_array() or field.is_struct():
            for item in value if field.is_struct_array() else (value,):
                inner = reference_null_field(field, item, version)
                if inner is not None:
                    return f"{field.name}.{inner}"
    return None


def _nested(key: ApiKey, version: int) -> Any:
    """A request whose arrays hold structs (which hold arrays and strings): where nulls
    can hide below the top level."""
    request = SERVED[key].request[version]
    if key is ApiKey.PRODUCE:
        data = request.TopicProduceData
        part = data.PartitionProduceData(index=0, records=b"x")
        return request(topic_data=[data(name="t", partition_data=[part])])
    if key is ApiKey.FETCH:
        topic = request.FetchTopic
        forgotten = request.ForgottenTopic(topic="t", partitions=[0])
        fetch = [topic(topic="t", partitions=[topic.FetchPartition(partition=0)])]
        return request(topics=fetch, forgotten_topics_data=[forgotten], rack_id="r")
    if key is ApiKey.METADATA:
        return request(topics=[request.MetadataRequestTopic(name="t")])
    resource = request.DescribeConfigsResource
    return request(
        resources=[resource(resource_type=2, resource_name="t", configuration_keys=["k"])]
    )


NESTED_FRAMES = [
    request_frame(key, version, _nested(key, version).encode(version=version))[4:]
    for key in (ApiKey.PRODUCE, ApiKey.FETCH, ApiKey.METADATA, ApiKey.DESCRIBE_CONFIGS)
    for version in range(SERVED[key].min_version, SERVED[key].max_version + 1)
]


@settings(max_examples=500)
@given(st.sampled_from(VALID_FRAMES + NESTED_FRAMES * 4), st.data())
def test_the_planned_null_check_agrees_with_looking_at_every_field(
    frame: bytes, data: st.DataObject
) -> None:
    """Lengths overwritten with -1 (0xff...) anywhere in the body: where the body still
    decodes, null_field names the same field as a walk over every field would."""
    key, version = int.from_bytes(frame[:2], "big"), int.from_bytes(frame[2:4], "big")
    spec = SERVED[ApiKey(key)]
    body = bytearray(frame[parse_request_header(frame, is_flexible(key, version)).body_offset :])
    for _ in range(data.draw(st.integers(1, 3))):
        if body:
            at = data.draw(st.integers(0, len(body) - 1))
            width = data.draw(st.sampled_from([1, 2, 4]))
            body[at : at + width] = b"\xff" * len(body[at : at + width])
    try:
        message = spec.request[version].decode(memoryview(bytes(body)), version=version)
    except DECODE_ERRORS:
        return
    expected = reference_null_field(message._struct, message, version)
    assert null_field(message._struct, message, version) == expected


def test_unknown_api_and_unsupported_version_carry_the_ids() -> None:
    with pytest.raises(UnknownApiError) as unknown:
        decode_request(request_frame(999, 0, b"")[4:])
    assert unknown.value.ids is not None and unknown.value.ids.api_key == 999
    with pytest.raises(UnsupportedVersionError) as unsupported:
        decode_request(request_frame(ApiKey.API_VERSIONS, 99, b"", correlation_id=5)[4:])
    assert unsupported.value.ids is not None and unsupported.value.ids.correlation_id == 5
    with pytest.raises(UnsupportedVersionError):
        decode_request(request_frame(ApiKey.PRODUCE, 2, b"")[4:])  # advertised, refused


def test_api_versions_answers_with_a_v0_response_header() -> None:
    spec = SERVED[ApiKey.API_VERSIONS]
    body = spec.response[3](error_code=0, api_keys=[])
    encoded = encode_response(ApiKey.API_VERSIONS, 3, 9, body)
    assert encoded == b"\x00\x00\x00\x09" + body.encode(version=3)
    metadata = SERVED[ApiKey.METADATA].response[12](brokers=[], topics=[])
    # flexible Metadata: correlation id then an empty tagged-field section
    encoded = encode_response(ApiKey.METADATA, 12, 9, metadata)
    assert encoded == b"\x00\x00\x00\x09\x00" + metadata.encode(version=12)


def test_a_null_array_or_string_where_the_schema_forbids_it_is_malformed() -> None:
    # DescribeConfigs' resources: a length of -1 kafka-python would hand over as None
    null_resources = request_frame(ApiKey.DESCRIBE_CONFIGS, 1, b"\xff\xff\xff\xff\x00")[4:]
    with pytest.raises(MalformedRequestError, match="null resources"):
        decode_request(null_resources)
    # a null topic name inside Metadata v1's topics (nullable array, non-nullable names)
    null_name = request_frame(ApiKey.METADATA, 1, b"\x00\x00\x00\x01\xff\xff")[4:]
    with pytest.raises(MalformedRequestError, match=r"null topics\.name"):
        decode_request(null_name)
    # where the schema allows null it stays allowed: Metadata v1's topics (every topic)
    every_topic = request_frame(ApiKey.METADATA, 1, b"\xff\xff\xff\xff")[4:]
    assert decode_request(every_topic).body.topics is None
    # and Metadata v0's topics, not nullable, is refused null
    with pytest.raises(MalformedRequestError, match="null topics"):
        decode_request(request_frame(ApiKey.METADATA, 0, b"\xff\xff\xff\xff")[4:])
