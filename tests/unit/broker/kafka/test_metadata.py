"""Metadata answers: a partition is advertised once a replica reports hosting it."""

from __future__ import annotations

from conveyor.broker.kafka.metadata import KafkaNode, _response, _topic, with_own_leadership
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


def _partition(
    partition: int, leader: int, epoch: int, high_watermark: int | None
) -> PartitionInfo:
    return PartitionInfo(
        partition=partition,
        leader=BrokerId(leader),
        leader_epoch=Epoch(epoch),
        replicas=[BrokerId(1), BrokerId(2)],
        isr=[BrokerId(1), BrokerId(2)],
        high_watermark=high_watermark,
    )


def test_a_broker_answers_its_own_leadership_before_the_coordinator_has_its_report() -> None:
    """Broker 2 leads t-0 at epoch 1 (high watermark 7) before its report reaches the
    coordinator: it answers t-0 served. It does not vouch for t-1 (its own epoch is older
    than the coordinator's), t-2 (another broker's) or t-3 (it does not lead it)."""
    described = TopicDescription(
        name="t",
        partitions=[
            _partition(0, 2, 1, None),
            _partition(1, 2, 4, None),
            _partition(2, 1, 1, None),
            _partition(3, 2, 1, None),
        ],
        replication_factor=2,
        config=TopicConfig(),
    )
    metadata = Metadata(cluster_id="c", brokers=[], topics=[described])
    leads = {("t", 0): (1, 7), ("t", 1): (3, 9), ("t", 2): (1, 5)}
    answer = with_own_leadership(metadata, 2, lambda t, p: leads.get((t, p)))
    assert [p.high_watermark for p in answer.topics[0].partitions] == [7, None, None, None]
    topic_cls = SERVED[ApiKey.METADATA].response[12].MetadataResponseTopic
    served = _topic(topic_cls, answer.topics[0], live={1, 2}).partitions
    assert [p.leader_id for p in served] == [2, -1, -1, -1]


def test_what_the_coordinator_already_reported_is_left_as_it_is() -> None:
    described = TopicDescription(
        name="t", partitions=[_partition(0, 2, 1, 3)], replication_factor=2, config=TopicConfig()
    )
    metadata = Metadata(cluster_id="c", brokers=[], topics=[described])
    assert with_own_leadership(metadata, 2, lambda t, p: (1, 9)) is metadata
