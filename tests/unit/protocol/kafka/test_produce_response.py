"""The hand-written Produce response encoder equals kafka-python's, byte for byte, for every
served version, and the producer's hand reader of plain answers reads what kafka-python's
decoder reads (kafka-python's classes are the reference for the format)."""

from __future__ import annotations

from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from conveyor.client.kafka_sender import produce_answer, produce_results
from conveyor.protocol.kafka.apis import SERVED, ApiKey
from conveyor.protocol.kafka.codec import ResponseError, decode_response
from conveyor.protocol.kafka.header import response_header
from conveyor.protocol.kafka.produce_response import (
    Endpoint,
    PartitionAnswer,
    encode_produce_response,
    read_produce_offsets,
)

SPEC = SERVED[ApiKey.PRODUCE]
INT32 = st.integers(-(2**31), 2**31 - 1)
INT64 = st.integers(-(2**63), 2**63 - 1)

answers = st.builds(
    PartitionAnswer,
    index=INT32,
    error_code=st.integers(-1, 200),
    base_offset=INT64,
    log_start_offset=INT64,
    error_message=st.one_of(st.none(), st.text(max_size=40)),
    leader=st.one_of(st.none(), st.tuples(INT32, INT32)),
    record_errors=st.lists(
        st.tuples(INT32, st.one_of(st.none(), st.text(max_size=20))), max_size=3
    ).map(tuple),
)
topics = st.lists(
    st.tuples(st.text(min_size=1, max_size=20), st.lists(answers, max_size=4)), max_size=3
)
endpoints = st.lists(
    st.builds(Endpoint, node_id=INT32, host=st.text(max_size=20), port=INT32), max_size=3
)


def _reference(version: int, data: list[Any], nodes: list[Endpoint]) -> bytes:
    response = SPEC.response[version]
    topic_cls = response.TopicProduceResponse
    partition_cls = topic_cls.PartitionProduceResponse
    extra: dict[str, Any] = {}
    if version >= 10:
        extra["node_endpoints"] = [
            response.NodeEndpoint(node_id=n.node_id, host=n.host, port=n.port, rack=None)
            for n in nodes
        ]
    built = response(
        responses=[
            topic_cls(
                name=name,
                partition_responses=[
                    partition_cls(
                        index=p.index,
                        error_code=p.error_code,
                        base_offset=p.base_offset,
                        log_append_time_ms=-1,
                        log_start_offset=p.log_start_offset,
                        record_errors=[
                            partition_cls.BatchIndexAndErrorMessage(
                                batch_index=index, batch_index_error_message=message
                            )
                            for index, message in p.record_errors
                        ],
                        error_message=p.error_message,
                        **(
                            {
                                "current_leader": partition_cls.LeaderIdAndEpoch(
                                    leader_id=p.leader[0], leader_epoch=p.leader[1]
                                )
                            }
                            if p.leader is not None and version >= 10
                            else {}
                        ),
                    )
                    for p in partitions
                ],
            )
            for name, partitions in data
        ],
        throttle_time_ms=0,
        **extra,
    )
    return bytes(built.encode(version=version))


@settings(max_examples=300)
@given(st.integers(SPEC.min_version, SPEC.max_version), topics, endpoints)
def test_equals_kafka_python(version: int, data: list[Any], nodes: list[Endpoint]) -> None:
    assert encode_produce_response(version, data, nodes) == _reference(version, data, nodes)


def _kafka_python_offsets(frame: bytes, version: int) -> dict[tuple[str, int], int] | None:
    """What the producer took from an answer before: kafka-python's decode, then every
    partition's base offset; None when the decode fails, an array is null or a partition
    has an error."""
    try:
        reply = decode_response(ApiKey.PRODUCE, version, frame)
    except ResponseError:
        return None
    if reply.responses is None:
        return None
    offsets: dict[tuple[str, int], int] = {}
    for topic in reply.responses:
        if topic.partition_responses is None:
            return None
        for answer in topic.partition_responses:
            if answer.error_code:
                return None
            offsets[topic.name, answer.index] = answer.base_offset
    return offsets


def _answer_frame(version: int, data: list[Any], nodes: list[Endpoint]) -> bytes:
    return response_header(7, version >= 9) + _reference(version, data, nodes)


ok_answers = st.builds(PartitionAnswer, index=INT32, base_offset=INT64, log_start_offset=INT64)
ok_topics = st.lists(
    st.tuples(st.text(min_size=1, max_size=200), st.lists(ok_answers, max_size=4)), max_size=3
)


@settings(max_examples=300)
@given(st.integers(SPEC.min_version, SPEC.max_version), ok_topics)
def test_the_producer_reads_a_plain_answer_as_kafka_python_does(
    version: int, data: list[Any]
) -> None:
    """Every partition succeeded and nothing else is said: read by hand, the same offsets
    (topic names past 126 bytes take two-byte varints in flexible versions)."""
    frame = _answer_frame(version, data, [])
    offsets = read_produce_offsets(frame, version)
    assert offsets is not None
    assert offsets == _kafka_python_offsets(frame, version)
    assert produce_answer(ApiKey.PRODUCE, version, frame) == offsets


@settings(max_examples=300)
@given(st.integers(SPEC.min_version, SPEC.max_version), topics, endpoints)
def test_an_answer_with_anything_but_success_is_left_to_kafka_python(
    version: int, data: list[Any], nodes: list[Endpoint]
) -> None:
    """Errors, error messages, record errors, leader hints, endpoints: the hand reader
    either reads exactly kafka-python's offsets or gives the answer back (None), and the
    producer's results are then kafka-python's, errors and all."""
    frame = _answer_frame(version, data, nodes)
    offsets = read_produce_offsets(frame, version)
    if offsets is not None:
        assert offsets == _kafka_python_offsets(frame, version)
    expected = produce_results(decode_response(ApiKey.PRODUCE, version, frame))
    got = produce_answer(ApiKey.PRODUCE, version, frame)
    assert {k: str(v) for k, v in got.items()} == {k: str(v) for k, v in expected.items()}
    if any(p.error_code for _, partitions in data for p in partitions):
        assert offsets is None


@settings(max_examples=500)
@given(
    st.integers(SPEC.min_version, SPEC.max_version),
    ok_topics,
    st.data(),
)
def test_a_truncated_or_corrupted_answer_is_never_misread(
    version: int, data: list[Any], draw: st.DataObject
) -> None:
    """Cut or with a byte changed: the hand reader reads what kafka-python reads, or gives
    the answer back; it never raises and never invents offsets kafka-python would not."""
    frame = bytearray(_answer_frame(version, data, []))
    if draw.draw(st.booleans()):
        del frame[draw.draw(st.integers(0, len(frame))) :]
    elif frame:
        frame[draw.draw(st.integers(0, len(frame) - 1))] = draw.draw(st.integers(0, 255))
    offsets = read_produce_offsets(bytes(frame), version)
    if offsets is not None:
        assert offsets == _kafka_python_offsets(bytes(frame), version)


def null_partitions_answer(correlation_id: int) -> bytes:
    """A Produce v11 answer whose one topic has a null partition array."""
    body = b"\x02" + b"\x02t" + b"\x00" + b"\x00" + b"\x00\x00\x00\x00" + b"\x00"
    return response_header(correlation_id, True) + body


def test_a_null_partition_array_is_left_to_kafka_python_which_reads_none() -> None:
    """The hand reader gives it back; kafka-python reads the array as None, which the
    producer cannot use (tests/unit/transport/test_kafka_client.py: the connection treats
    the answer as broken)."""
    frame = null_partitions_answer(7)
    assert read_produce_offsets(frame, 11) is None
    assert decode_response(ApiKey.PRODUCE, 11, frame).responses[0].partition_responses is None
