"""Metadata answers: a partition is advertised once a replica reports hosting it."""

from __future__ import annotations

from conveyor.broker.kafka.metadata import _topic
from conveyor.protocol.kafka.apis import SERVED, ApiKey
from conveyor.protocol.kafka.errors import KafkaError
from conveyor.protocol.messages import (
    BrokerId,
    Epoch,
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
