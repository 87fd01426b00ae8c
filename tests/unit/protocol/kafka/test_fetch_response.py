"""The hand-written Fetch response encoder equals kafka-python's, byte for byte, for every
served version (kafka-python's classes are the reference for the format), and its parts
keep the record sets as given (the same objects: nothing copied)."""

from __future__ import annotations

from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from conveyor.protocol.kafka.apis import SERVED, ApiKey
from conveyor.protocol.kafka.codec import encode_response
from conveyor.protocol.kafka.fetch_response import (
    EncodedParts,
    FetchedPartition,
    encode_fetch_response,
)

SPEC = SERVED[ApiKey.FETCH]
VERSIONS = st.integers(SPEC.min_version, SPEC.max_version)
INT32 = st.integers(-(2**31), 2**31 - 1)
INT64 = st.integers(-(2**63), 2**63 - 1)

partitions = st.builds(
    FetchedPartition,
    partition_index=INT32,
    error_code=st.integers(-1, 200),
    high_watermark=INT64,
    last_stable_offset=INT64,
    log_start_offset=INT64,
    aborted=st.one_of(st.none(), st.lists(st.tuples(INT64, INT64), max_size=3).map(tuple)),
    records=st.binary(max_size=300),
)
topics = st.lists(
    st.tuples(st.text(min_size=1, max_size=20), st.lists(partitions, max_size=4)), max_size=3
)


def _reference(version: int, data: list[tuple[str, list[FetchedPartition]]]) -> bytes:
    response = SPEC.response[version]
    topic_cls = response.FetchableTopicResponse
    partition_cls = topic_cls.PartitionData
    aborted_cls = partition_cls.AbortedTransaction
    built = response(
        throttle_time_ms=0,
        error_code=0,
        session_id=0,
        responses=[
            topic_cls(
                topic=name,
                partitions=[
                    partition_cls(
                        partition_index=p.partition_index,
                        error_code=p.error_code,
                        high_watermark=p.high_watermark,
                        last_stable_offset=p.last_stable_offset,
                        log_start_offset=p.log_start_offset,
                        aborted_transactions=None
                        if p.aborted is None
                        else [
                            aborted_cls(producer_id=pid, first_offset=first)
                            for pid, first in p.aborted
                        ],
                        preferred_read_replica=-1,
                        records=p.records,
                    )
                    for p in partitions
                ],
            )
            for name, partitions in data
        ],
    )
    return bytes(built.encode(version=version))


@settings(max_examples=300)
@given(VERSIONS, topics)
def test_equals_kafka_pythons_encoder(version: int, data: list[Any]) -> None:
    encoded = encode_fetch_response(version, data)
    assert b"".join(encoded) == _reference(version, data)
    assert encoded.encode(version) == b"".join(encoded)
    assert encoded.size_bytes == len(b"".join(encoded))
    # and it reads back with kafka-python's decoder
    decoded = SPEC.response[version].decode(b"".join(encoded), version=version)
    assert [t.topic for t in decoded.responses] == [name for name, _ in data]


@settings(max_examples=100)
@given(VERSIONS, topics)
def test_record_sets_are_parts_of_their_own_uncopied(version: int, data: list[Any]) -> None:
    encoded = encode_fetch_response(version, data)
    records = [p.records for _, ps in data for p in ps if p.records]
    # [fields, records, fields, records, ..., fields (if any)]
    assert len(encoded[1::2]) == len(records)
    assert all(part is given for part, given in zip(encoded[1::2], records, strict=True))
    assert all(part for part in encoded)


def test_the_response_header_joins_the_first_part() -> None:
    body = encode_fetch_response(11, [("t", [FetchedPartition(0, 0, 5, 5, 0, None, b"r" * 9)])])
    framed = encode_response(ApiKey.FETCH, 11, 42, body)
    assert isinstance(framed, EncodedParts)
    assert framed[0][:4] == (42).to_bytes(4, "big") and framed[1] == b"r" * 9
    assert b"".join(framed) == (42).to_bytes(4, "big") + b"".join(body)
