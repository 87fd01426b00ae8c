from __future__ import annotations

from conveyor.client.group import assign_all
from conveyor.client.metadata import MetadataCache
from conveyor.client.types import TopicPartition
from conveyor.protocol.messages import (
    BrokerId,
    Epoch,
    Metadata,
    PartitionInfo,
    TopicConfig,
    TopicDescription,
)


def topic(name: str, count: int, url: str = "http://b1/") -> TopicDescription:
    partitions = [
        PartitionInfo(
            partition=p,
            leader=BrokerId(1),
            leader_epoch=Epoch(3),
            replicas=[BrokerId(1)],
            isr=[BrokerId(1)],
            leader_url=url,
        )
        for p in range(count)
    ]
    return TopicDescription(
        name=name, partitions=partitions, replication_factor=1, config=TopicConfig()
    )


def test_update_routes_and_missing_topics() -> None:
    cache = MetadataCache()
    cache.update(Metadata(cluster_id="c", brokers=[], topics=[topic("a", 3)]), ["a", "b"], 0)
    assert cache.partition_count("a") == 3 and cache.partition_counts == {"a": 3}
    assert cache.leader_url("a", 2) == "http://b1"
    assert cache.is_missing("b") and cache.partition_count("b") is None
    assert cache.version == 1


def test_not_leader_hint_moves_one_partition() -> None:
    cache = MetadataCache()
    cache.update(Metadata(cluster_id="c", brokers=[], topics=[topic("a", 2)]), ["a"], 0)
    cache.move_leader("a", 1, "http://b2/")
    assert cache.leader_url("a", 1) == "http://b2"
    assert cache.leader_url("a", 0) == "http://b1"


def test_a_topic_that_disappears_is_dropped() -> None:
    cache = MetadataCache()
    cache.update(Metadata(cluster_id="c", brokers=[], topics=[topic("a", 2)]), ["a"], 0)
    cache.update(Metadata(cluster_id="c", brokers=[], topics=[]), ["a"], 1)
    assert cache.partitions("a") is None and "a" not in cache.partition_counts


def test_assign_all_takes_every_partition() -> None:
    assignment = assign_all({"b": 1, "a": 2})
    assert assignment.partitions == (
        TopicPartition("a", 0),
        TopicPartition("a", 1),
        TopicPartition("b", 0),
    )
    assert assignment.generation == -1 and assignment.member_id is None
