"""The hand-written Produce request against kafka-python's classes, the reference for the
format: the client's encoder gives their bytes for every version; the broker's reader
gives what their decoder gives (the same request, or the same refusal) for generated,
corrupted, truncated and random requests."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from conveyor.protocol.kafka.apis import SERVED, ApiKey
from conveyor.protocol.kafka.codec import (
    DECODE_ERRORS,
    MalformedRequestError,
    decode_request,
    null_field,
)
from conveyor.protocol.kafka.produce_request import (
    ProduceData,
    encode_produce_request,
    encode_produce_requests,
    produce_data_of,
    read_produce_request,
)
from tests.kafka.wire import request_frame

SPEC = SERVED[ApiKey.PRODUCE]
VERSIONS = st.integers(3, 11)
INT32 = st.integers(-(2**31), 2**31 - 1)
INT64 = st.integers(-(2**63), 2**63 - 1)


@given(
    VERSIONS,
    st.text(min_size=1, max_size=30),
    INT32,
    st.binary(max_size=300),
    st.sampled_from([-1, 0, 1]),
    INT32,
    st.one_of(st.none(), st.text(max_size=20)),
)
def test_the_request_is_kafka_pythons_bytes(  # noqa: PLR0917 -- hypothesis' arguments
    version: int,
    topic: str,
    partition: int,
    records: bytes,
    acks: int,
    timeout_ms: int,
    transactional_id: str | None,
) -> None:
    request = SPEC.request[version]
    data = request.TopicProduceData
    reference = request(
        transactional_id=transactional_id,
        acks=acks,
        timeout_ms=timeout_ms,
        topic_data=[
            data(
                name=topic,
                partition_data=[data.PartitionProduceData(index=partition, records=records)],
            )
        ],
    ).encode(version=version)
    mine = encode_produce_request(
        version, topic, partition, records, acks, timeout_ms, transactional_id
    )
    assert bytes(mine) == bytes(reference)


# ---- the broker's side: the hand-written reader against kafka-python's decoder ---------------

REFUSED = "refused"
NAMES = st.text(max_size=12)
PARTITIONS = st.lists(st.tuples(INT32, st.one_of(st.none(), st.binary(max_size=40))), max_size=3)
TOPICS = st.lists(st.tuples(NAMES, PARTITIONS), max_size=3)
INT16 = st.integers(-(2**15), 2**15 - 1)


def _reference_body(
    version: int,
    transactional_id: str | None,
    acks: int,
    timeout_ms: int,
    topics: list[tuple[str, list[tuple[int, bytes | None]]]],
) -> bytes:
    request = SPEC.request[version]
    data = request.TopicProduceData
    message = request(
        transactional_id=transactional_id,
        acks=acks,
        timeout_ms=timeout_ms,
        topic_data=[
            data(
                name=name,
                partition_data=[
                    data.PartitionProduceData(index=index, records=records)
                    for index, records in partitions
                ],
            )
            for name, partitions in topics
        ],
    )
    return bytes(message.encode(version=version))


@given(
    VERSIONS,
    st.one_of(st.none(), NAMES),
    st.sampled_from([-1, 0, 1]),
    INT32,
    st.lists(
        st.tuples(NAMES, st.lists(st.tuples(INT32, st.binary(max_size=40)), max_size=4)),
        max_size=4,
    ),
)
def test_a_request_for_many_partitions_is_kafka_pythons_bytes(
    version: int,
    transactional_id: str | None,
    acks: int,
    timeout_ms: int,
    topics: list[tuple[str, list[tuple[int, bytes]]]],
) -> None:
    """The producer's one request per broker (every ready partition) and what the broker
    reads from it."""
    typed: list[tuple[str, list[tuple[int, bytes | None]]]] = [
        (name, list(partitions)) for name, partitions in topics
    ]
    reference = _reference_body(version, transactional_id, acks, timeout_ms, typed)
    mine = encode_produce_requests(version, topics, acks, timeout_ms, transactional_id)
    assert bytes(mine) == reference
    assert _listener_verdict(version, bytes(mine)) == _library_verdict(version, reference)


def _frame(version: int, body: bytes) -> bytes:
    return request_frame(ApiKey.PRODUCE, version, body)[4:]


def _library_verdict(version: int, body: bytes) -> ProduceData | str:
    """What the listener made of these bytes before the hand-written reader: kafka-python's
    message (refused when it does not decode or holds a forbidden null), flat."""
    try:
        message = SPEC.request[version].decode(memoryview(body), version=version)
    except DECODE_ERRORS:
        return REFUSED
    if null_field(message._struct, message, version) is not None:
        return REFUSED
    return produce_data_of(message)


def _listener_verdict(version: int, body: bytes) -> ProduceData | str:
    try:
        decoded = decode_request(_frame(version, body)).body
    except MalformedRequestError:
        return REFUSED
    assert isinstance(decoded, ProduceData)
    return decoded


def _check_agrees(version: int, body: bytes) -> None:
    expected = _library_verdict(version, body)
    assert _listener_verdict(version, body) == expected
    mine = read_produce_request(memoryview(body), version)
    if mine is not None:  # the reader vouches only for what kafka-python reads the same
        assert mine == expected


REQUESTS = st.tuples(VERSIONS, st.one_of(st.none(), NAMES), INT16, INT32, TOPICS).map(
    lambda fields: (fields[0], _reference_body(*fields))
)


@given(REQUESTS)
def test_the_reader_reads_every_plain_request_as_kafka_python_does(
    request: tuple[int, bytes],
) -> None:
    version, body = request
    mine = read_produce_request(memoryview(body), version)
    assert mine is not None  # what clients send never needs kafka-python
    assert mine == _library_verdict(version, body)


@settings(max_examples=400)
@given(REQUESTS, st.data())
def test_corrupted_requests_get_kafka_pythons_verdict(
    request: tuple[int, bytes], data: st.DataObject
) -> None:
    """Bytes overwritten (nulls, negative and huge lengths, tagged fields, bad UTF-8),
    truncated or with bytes after the end: the same request, or the same refusal."""
    version, body = request
    mutated = bytearray(body)
    for _ in range(data.draw(st.integers(0, 3))):
        if not mutated:
            break
        at = data.draw(st.integers(0, len(mutated) - 1))
        patch = data.draw(
            st.one_of(
                st.binary(min_size=1, max_size=4),
                st.sampled_from([b"\xff", b"\xff\xff", b"\xff\xff\xff\xff", b"\x80", b"\x00"]),
            )
        )
        mutated[at : at + len(patch)] = patch
    cut = data.draw(st.integers(0, len(mutated)))
    tail = data.draw(st.sampled_from([b"", b"\x00", b"\x01\x02\x03"]))
    _check_agrees(version, bytes(mutated[:cut]) + tail)


@settings(max_examples=300)
@given(st.sampled_from(range(3, 12)), st.binary(max_size=80))
def test_random_bodies_get_kafka_pythons_verdict(version: int, body: bytes) -> None:
    _check_agrees(version, body)


@pytest.mark.parametrize("version", range(9, 12))
def test_unusual_flexible_encodings_are_read_as_kafka_python_reads_them(version: int) -> None:
    """Tagged fields and varints longer than 5 bytes are left to kafka-python (the
    reader declines them); a longer varint than needed is read by both, the same."""
    plain = _reference_body(version, None, -1, 1000, [("t", [(0, b"rec")])])
    expected = ProduceData(None, -1, 1000, (("t", 0, b"rec"),))
    tagged = plain[:-1] + b"\x01\x05\x02hi"  # the request's tagged fields: one, tag 5
    six_bytes = plain[:7] + b"\x82\x80\x80\x80\x80\x00" + plain[8:]  # one topic
    for body in (tagged, six_bytes):
        assert read_produce_request(memoryview(body), version) is None
        assert _listener_verdict(version, body) == expected
    two_bytes = plain[:7] + b"\x82\x00" + plain[8:]
    assert read_produce_request(memoryview(two_bytes), version) == expected


@pytest.mark.parametrize("version", range(3, 12))
def test_records_are_views_of_the_frame_not_copies(version: int) -> None:
    frame = _frame(version, bytes(encode_produce_request(version, "t", 2, b"batches", -1, 5)))
    decoded = decode_request(frame).body
    ((topic, partition, records),) = decoded.partitions
    assert (topic, partition, bytes(records)) == ("t", 2, b"batches")
    assert isinstance(records, memoryview) and records.obj is frame
