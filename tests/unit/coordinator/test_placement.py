from __future__ import annotations

import math
from collections import Counter

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from conveyor.coordinator.placement import place_partitions, topic_seed
from conveyor.protocol.errors import ErrorCode, InvalidRequestError
from conveyor.protocol.messages import BrokerId


def ids(*numbers: int) -> list[BrokerId]:
    return [BrokerId(n) for n in numbers]


def test_worked_example() -> None:
    """The example in placement.py's docstring, checked."""
    load = {BrokerId(1): 2, BrokerId(2): 0, BrokerId(3): 1}
    placement = place_partitions(ids(1, 2, 3), 4, 2, seed=0, leader_load=load, replica_load=load)
    assert placement == [[2, 3], [3, 1], [1, 2], [2, 3]]


@pytest.mark.parametrize(
    ("brokers", "partitions", "rf", "leaders_per_broker"),
    [
        ([1, 2, 3], 8, 1, [3, 3, 2]),
        ([1, 2, 3], 3, 3, [1, 1, 1]),
        ([1], 8, 1, [8]),
        ([1, 2, 3, 4], 2, 1, [1, 1, 0, 0]),
        ([5, 9], 7, 2, [4, 3]),
    ],
)
def test_leaders_are_spread(
    brokers: list[int], partitions: int, rf: int, leaders_per_broker: list[int]
) -> None:
    placement = place_partitions(ids(*brokers), partitions, rf, seed=1)
    leaders = Counter(replicas[0] for replicas in placement)
    assert sorted((leaders[b] for b in brokers), reverse=True) == leaders_per_broker


def test_extra_leaders_go_to_the_least_loaded_brokers() -> None:
    load = {BrokerId(1): 10, BrokerId(2): 0, BrokerId(3): 5}
    placement = place_partitions(ids(1, 2, 3), 4, 1, seed=3, leader_load=load)
    assert [r[0] for r in placement] == [2, 3, 1, 2]


def test_the_seed_breaks_ties_between_idle_brokers() -> None:
    firsts = {place_partitions(ids(1, 2, 3), 1, 1, seed=seed)[0][0] for seed in range(30)}
    assert firsts == {1, 2, 3}


def test_topic_seed_is_stable() -> None:
    assert topic_seed("orders") == topic_seed("orders") != topic_seed("payments")


@pytest.mark.parametrize(
    ("brokers", "partitions", "rf", "message"),
    [
        ([1, 2], 4, 3, "exceeds the 2 live broker"),
        ([], 1, 1, "exceeds the 0 live broker"),
        ([1], 1, 0, "replication_factor must be >= 1"),
        ([1], 0, 1, "partitions must be between 1"),
        ([1], 10_001, 1, "partitions must be between 1"),
    ],
)
def test_impossible_requests_are_typed_errors(
    brokers: list[int], partitions: int, rf: int, message: str
) -> None:
    with pytest.raises(InvalidRequestError, match=message) as caught:
        place_partitions(ids(*brokers), partitions, rf, seed=0)
    assert caught.value.code is ErrorCode.INVALID_CONFIG


@st.composite
def placements(draw: st.DrawFn) -> tuple[list[BrokerId], int, int, int, dict[BrokerId, int]]:
    brokers = draw(st.lists(st.integers(0, 60), min_size=1, max_size=16, unique=True))
    rf = draw(st.integers(1, min(len(brokers), 5)))
    partitions = draw(st.integers(1, 120))
    seed = draw(st.integers(0, 2**32 - 1))
    load = draw(st.dictionaries(st.sampled_from(brokers), st.integers(0, 50)))
    return ids(*brokers), partitions, rf, seed, {BrokerId(b): n for b, n in load.items()}


@settings(max_examples=300)
@given(placements())
def test_properties(case: tuple[list[BrokerId], int, int, int, dict[BrokerId, int]]) -> None:
    brokers, partitions, rf, seed, load = case
    placement = place_partitions(
        brokers, partitions, rf, seed=seed, leader_load=load, replica_load=load
    )
    assert len(placement) == partitions
    # RF distinct live brokers per partition
    for replicas in placement:
        assert len(replicas) == rf
        assert len(set(replicas)) == rf
        assert set(replicas) <= set(brokers)
    # leaders: nobody above its ceil share, and within one of each other
    leaders = Counter(replicas[0] for replicas in placement)
    leader_counts = [leaders[b] for b in brokers]
    assert max(leader_counts) <= math.ceil(partitions / len(brokers))
    assert max(leader_counts) - min(leader_counts) <= 1
    # replicas of this topic: within one of each other
    replicas_held = Counter(b for replicas in placement for b in replicas)
    replica_counts = [replicas_held[b] for b in brokers]
    assert max(replica_counts) - min(replica_counts) <= 1
    # deterministic: the same inputs give the same placement
    again = place_partitions(
        list(brokers), partitions, rf, seed=seed, leader_load=dict(load), replica_load=dict(load)
    )
    assert again == placement


@settings(max_examples=100)
@given(placements())
def test_a_balanced_cluster_stays_balanced(
    case: tuple[list[BrokerId], int, int, int, dict[BrokerId, int]],
) -> None:
    """If leader counts were within one before a topic, they are within one after it."""
    brokers, partitions, rf, seed, _ = case
    base = seed % 7
    before = {b: base + (i % 2) for i, b in enumerate(brokers)}
    placement = place_partitions(brokers, partitions, rf, seed=seed, leader_load=before)
    after = Counter(before)
    after.update(replicas[0] for replicas in placement)
    counts = [after[b] for b in brokers]
    assert max(counts) - min(counts) <= 1
