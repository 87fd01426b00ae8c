"""The hand-written Produce response encoder equals kafka-python's, byte for byte, for every
served version (kafka-python's classes are the reference for the format)."""

from __future__ import annotations

from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from conveyor.protocol.kafka.apis import SERVED, ApiKey
from conveyor.protocol.kafka.produce_response import (
    Endpoint,
    PartitionAnswer,
    encode_produce_response,
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
