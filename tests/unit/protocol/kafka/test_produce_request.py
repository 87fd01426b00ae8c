"""The client's hand-written Produce request equals kafka-python's bytes for every
version (kafka-python's classes are the reference for the format)."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from conveyor.protocol.kafka.apis import SERVED, ApiKey
from conveyor.protocol.kafka.produce_request import (
    encode_produce_request,
)

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
