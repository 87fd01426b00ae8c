from __future__ import annotations

import warnings

from hypothesis import given
from hypothesis import strategies as st

from conveyor.client.partitioner import KeyPartitioner, StickyPartitioner

with warnings.catch_warnings():
    warnings.simplefilter("ignore", DeprecationWarning)
    from kafka.partitioner.default import DefaultPartitioner


class _Cluster:
    """The bits of kafka-python's ClusterMetadata that DefaultPartitioner reads."""

    def __init__(self, count: int) -> None:
        self.count = count

    def topics(self) -> set[str]:
        return {"t"}

    def partitions_for_topic(self, topic: str) -> set[int]:
        return set(range(self.count))

    def available_partitions_for_topic(self, topic: str) -> set[int]:
        return set(range(self.count))


@given(st.binary(max_size=40), st.integers(min_value=1, max_value=300))
def test_keys_map_as_kafka_python_default_partitioner(key: bytes, count: int) -> None:
    expected = DefaultPartitioner().partition("t", key, key, b"", b"", _Cluster(count))
    assert KeyPartitioner().partition(key, count) == expected


def test_key_cache_is_bounded_and_per_partition_count() -> None:
    keys = KeyPartitioner(entries_max=4)
    results = {key: keys.partition(key, 8) for key in (b"%d" % i for i in range(20))}
    assert all(keys.partition(key, 8) == p for key, p in results.items())
    assert keys.partition(b"1", 3) == KeyPartitioner().partition(b"1", 3)
    assert all(len(cache) <= 4 for cache in keys._cache.values())


def test_sticky_moves_round_robin_and_only_once_per_batch() -> None:
    sticky = StickyPartitioner(start=6)
    assert sticky.partition("t", 8) == 6
    assert sticky.next("t", 8, previous=6) == 7
    assert sticky.next("t", 8, previous=6) == 7  # a second caller that saw 6 does not skip
    assert sticky.next("t", 8, previous=7) == 0
    assert sticky.partition("other", 4) == 2  # start modulo the topic's count


def test_sticky_survives_a_smaller_partition_count() -> None:
    sticky = StickyPartitioner(start=7)
    assert sticky.partition("t", 8) == 7
    assert sticky.partition("t", 2) == 1
