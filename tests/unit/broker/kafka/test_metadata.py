"""Metadata answers: a partition is advertised once a replica reports hosting it."""

from __future__ import annotations

from conveyor.broker.kafka.metadata import KafkaNode, _response, _topic
from conveyor.protocol.kafka.apis import SERVED, ApiKey
from conveyor.protocol.kafka.errors import KafkaError
from conveyor.protocol.messages import (
    BrokerId,
    BrokerInfo,
    Epoch,
    Metadata,
    PartitionInfo,
    TopicConfig,
    TopicDescription,
)


def test_a_partition_nobody_reported_yet_is_leader_not_available() -> None:
    def info(partition: int, high_watermark: int | None) -> PartitionInfo:
        return PartitionInfo(
            partition=partition,
            leader=BrokerId(1),
            leader_epoch=Epoch(0),
            replicas=[BrokerId(1)],
            isr=[BrokerId(1)],
            high_watermark=high_watermark,
        )

    described = TopicDescription(
        name="t",
        partitions=[info(0, 5), info(1, None)],
        replication_factor=1,
        config=TopicConfig(),
    )
    topic_cls = SERVED[ApiKey.METADATA].response[12].MetadataResponseTopic
    answer = _topic(topic_cls, described, live={1})
    served, unreported = answer.partitions
    assert (served.error_code, served.leader_id) == (KafkaError.NONE, 1)
    assert (unreported.error_code, unreported.leader_id) == (KafkaError.LEADER_NOT_AVAILABLE, -1)


def test_the_answering_broker_is_listed_before_the_coordinator_has_heard_from_it() -> None:
    """A broker just restarted answers Metadata before its first heartbeat reaches the
    coordinator: it still lists itself (librdkafka drops a broker missing from an answer)
    but leads nothing until the coordinator says so."""
    other = BrokerInfo(broker_id=BrokerId(2), url="http://b2", kafka_address="127.0.0.1:9093")
    unheard = BrokerInfo(broker_id=BrokerId(1), url="http://b1", alive=False)
    this = KafkaNode(1, "127.0.0.1", 9092)
    metadata = Metadata(cluster_id="c", brokers=[unheard, other], topics=[])
    answer = _response(12, metadata, None, {}, this)
    assert [(b.node_id, b.port) for b in answer.brokers] == [(1, 9092), (2, 9093)]
    assert answer.controller_id == 2
    known = Metadata(cluster_id="c", brokers=[other], topics=[])
    assert [b.node_id for b in _response(12, known, None, {}, None).brokers] == [2]
    listed = BrokerInfo(broker_id=BrokerId(1), url="http://b1", kafka_address="10.0.0.1:9092")
    said = _response(12, Metadata(cluster_id="c", brokers=[listed], topics=[]), None, {}, this)
    assert [(b.node_id, b.host) for b in said.brokers] == [(1, "10.0.0.1")]  # as registered
