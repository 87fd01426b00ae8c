"""The pure parts of the client's Kafka transport: Metadata answers as routes, Produce
answers as offsets or typed errors (with KIP-951's leader hint), credentials as SASL, and
which transport a producer's settings pick."""

from __future__ import annotations

import base64
from typing import Any

import pytest

from conveyor.client.errors import KafkaOnlyError
from conveyor.client.kafka_fetcher import fetch_request, fetch_result
from conveyor.client.kafka_metadata import metadata_from_kafka, parse_bootstrap
from conveyor.client.kafka_sender import partition_result, produce_request, produce_results
from conveyor.client.transport_choice import data_transport, pick_transport
from conveyor.client.types import TopicPartition
from conveyor.protocol.errors import ConveyorError, ErrorCode, RetriableError
from conveyor.protocol.kafka.apis import SERVED, ApiKey
from conveyor.protocol.kafka.codec import decode_request, encode_request
from conveyor.protocol.kafka.errors import KafkaError
from conveyor.protocol.records import BatchBuilder, encode_batch
from conveyor.transport.kafka_client import sasl_from_authorization

METADATA = SERVED[ApiKey.METADATA].response[12]
PRODUCE = SERVED[ApiKey.PRODUCE].response[11]


def _metadata(*topics: object) -> object:
    brokers = [
        METADATA.MetadataResponseBroker(node_id=2, host="b2", port=9002, rack=None),
        METADATA.MetadataResponseBroker(node_id=1, host="b1", port=9001, rack=None),
    ]
    return METADATA(brokers=brokers, topics=list(topics), cluster_id="c1", controller_id=1)


def _topic(name: str, error: int = 0, leaders: tuple[int, ...] = ()) -> object:
    topic = METADATA.MetadataResponseTopic
    partitions = [
        topic.MetadataResponsePartition(
            error_code=0,
            partition_index=index,
            leader_id=leader,
            leader_epoch=7,
            replica_nodes=[1, 2],
            isr_nodes=[1],
            offline_replicas=[],
        )
        for index, leader in enumerate(leaders)
    ]
    return topic(error_code=error, name=name, is_internal=False, partitions=partitions)


def test_metadata_routes_point_at_the_leaders_kafka_addresses() -> None:
    metadata = metadata_from_kafka(
        _metadata(
            _topic("t", leaders=(2, 1, -1)), _topic("gone", KafkaError.UNKNOWN_TOPIC_OR_PARTITION)
        )
    )
    assert [b.kafka_address for b in metadata.brokers] == ["b1:9001", "b2:9002"]
    (topic,) = metadata.topics  # the unknown topic is left out: the cache marks it missing
    assert [p.leader_url for p in topic.partitions] == ["b2:9002", "b1:9001", None]
    assert [p.leader for p in topic.partitions] == [2, 1, None]
    assert topic.partitions[0].leader_epoch == 7 and topic.replication_factor == 2


def test_a_topic_being_created_is_a_retriable_error() -> None:
    with pytest.raises(RetriableError) as creating:
        metadata_from_kafka(_metadata(_topic("new", KafkaError.LEADER_NOT_AVAILABLE)))
    assert creating.value.code is ErrorCode.LEADER_NOT_AVAILABLE
    with pytest.raises(ConveyorError) as denied:
        metadata_from_kafka(_metadata(_topic("private", KafkaError.TOPIC_AUTHORIZATION_FAILED)))
    assert denied.value.code is ErrorCode.FORBIDDEN


def _answer(error: int, leader: tuple[int, int] | None = None, offset: int = -1) -> object:
    topic = PRODUCE.TopicProduceResponse
    partition = topic.PartitionProduceResponse
    current = partition.LeaderIdAndEpoch(leader_id=-1, leader_epoch=-1)
    if leader is not None:
        current = partition.LeaderIdAndEpoch(leader_id=leader[0], leader_epoch=leader[1])
    answer = partition(
        index=3, error_code=error, base_offset=offset, error_message=None, current_leader=current
    )
    endpoints = [PRODUCE.NodeEndpoint(node_id=5, host="b5", port=9005, rack=None)]
    return PRODUCE(
        responses=[topic(name="t", partition_responses=[answer])], node_endpoints=endpoints
    )


def produce_result(reply: Any, topic: str, partition: int) -> int:
    return partition_result(produce_results(reply), topic, partition)


def test_produce_answers_give_offsets_or_typed_errors() -> None:
    assert produce_result(_answer(0, offset=42), "t", 3) == 42
    with pytest.raises(RetriableError) as moved:
        produce_result(_answer(KafkaError.NOT_LEADER_OR_FOLLOWER, leader=(5, 9)), "t", 3)
    assert moved.value.code is ErrorCode.NOT_LEADER
    assert moved.value.details["leader_url"] == "b5:9005"
    assert moved.value.details["leader_epoch"] == 9
    with pytest.raises(ConveyorError) as unhinted:
        produce_result(_answer(KafkaError.NOT_LEADER_OR_FOLLOWER), "t", 3)
    assert "leader_url" not in unhinted.value.details
    with pytest.raises(ConveyorError) as duplicate:
        produce_result(_answer(KafkaError.DUPLICATE_SEQUENCE_NUMBER), "t", 3)
    assert duplicate.value.code is ErrorCode.DUPLICATE_SEQUENCE  # the sender's "done"
    with pytest.raises(ConveyorError, match="without"):
        produce_result(_answer(0), "t", 4)


def test_produce_requests_decode_on_the_listener() -> None:
    request = produce_request(11, "t", 3, b"batch-bytes", -1, 30_000)
    decoded = decode_request(encode_request(0, 11, 1, "c", request)[4:])
    ((topic, partition, records),) = decoded.body.partitions
    assert (decoded.body.acks, topic, partition) == (-1, "t", 3)
    assert bytes(records) == b"batch-bytes"


def test_credentials_as_sasl() -> None:
    assert sasl_from_authorization(None) is None
    token = sasl_from_authorization("Bearer cvy_abc")
    assert token is not None and (token.mechanism, token.password) == ("PLAIN", "cvy_abc")
    basic = "Basic " + base64.b64encode(b"alice:pw:with:colons").decode()
    user = sasl_from_authorization(basic)
    assert user is not None and (user.mechanism, user.user) == ("SCRAM-SHA-512", "alice")
    assert user.password == "pw:with:colons" and "pw" not in repr(user)
    for bad in ("Digest x", "Basic !!!", "Bearer "):
        with pytest.raises(ValueError):
            sasl_from_authorization(bad)


def test_which_transport() -> None:
    assert data_transport(None) == data_transport("kafka") == "kafka"  # the data path
    for removed in ("http", "HTTP", "smtp"):
        with pytest.raises(KafkaOnlyError):
            data_transport(removed)
    # Admin's default given a coordinator URL: reads over Kafka, changes at the coordinator
    assert pick_transport(None, None) == "routed"
    assert pick_transport("http", None) == "http"
    assert pick_transport(None, "b:1") == "kafka"
    assert pick_transport("kafka", None) == "kafka"
    for transport, servers in (("http", "b:1"), ("smtp", None)):
        with pytest.raises(ValueError):
            pick_transport(transport, servers)
    assert parse_bootstrap(" a:1, [::1]:2 ,") == ["a:1", "[::1]:2"]
    for bad in ("", ",", "a", "a:1,b"):
        with pytest.raises(ValueError, match="bootstrap_servers"):
            parse_bootstrap(bad)


FETCH = SERVED[ApiKey.FETCH].response[12]


def _fetched(
    error: int = 0, records: bytes | None = b"", aborted: bool = False, stable: int = 10
) -> object:
    topic = FETCH.FetchableTopicResponse
    partition = topic.PartitionData
    transactions = [partition.AbortedTransaction(producer_id=7, first_offset=0)] if aborted else []
    answer = partition(
        partition_index=3,
        error_code=error,
        high_watermark=10,
        last_stable_offset=stable,
        log_start_offset=0,
        aborted_transactions=transactions,
        preferred_read_replica=-1,
        records=records,
    )
    return FETCH(error_code=0, session_id=0, responses=[topic(topic="t", partitions=[answer])])


def test_fetch_answers_give_bytes_or_typed_errors() -> None:
    tp = TopicPartition("t", 3)
    kept = encode_batch([(b"k", b"kept")], producer_id=8, producer_epoch=0, base_sequence=0)
    builder = BatchBuilder()
    builder.append(b"gone", b"k")
    builder.set_producer(7, 0, 0, transactional=True)  # producer 7's aborted transaction
    dropped = builder.build()
    data = dropped + kept
    body, visible, high_watermark = fetch_result(
        _fetched(records=data, aborted=True), tp, read_committed=True
    )
    assert (body, visible, high_watermark) == (data, kept, 10)
    assert fetch_result(_fetched(records=data, aborted=True), tp, read_committed=False)[1] == data
    # an open transaction holds the last stable offset back: read_committed reads to it
    assert fetch_result(_fetched(stable=4), tp, read_committed=True)[2] == 4
    assert fetch_result(_fetched(stable=4), tp, read_committed=False)[2] == 10
    assert fetch_result(_fetched(records=None), tp, read_committed=False)[:2] == (b"", b"")
    with pytest.raises(ConveyorError) as out_of_range:
        fetch_result(_fetched(KafkaError.OFFSET_OUT_OF_RANGE), tp, read_committed=False)
    assert out_of_range.value.code is ErrorCode.OFFSET_OUT_OF_RANGE
    with pytest.raises(ConveyorError, match="without"):
        fetch_result(_fetched(), TopicPartition("t", 4), read_committed=False)
    request = fetch_request(
        12, [(tp, 5)], max_wait_ms=100, partition_max_bytes=1000, read_committed=True
    )
    decoded = decode_request(encode_request(1, 12, 1, "c", request)[4:]).body
    assert decoded.isolation_level == 1 and decoded.topics[0].partitions[0].fetch_offset == 5
