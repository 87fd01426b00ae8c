"""Kafka's "consumer" embedded protocol: the bytes a classic group's members put in
JoinGroup (their subscription) and the leader puts in SyncGroup (each member's assigned
partitions). The coordinator treats them as opaque for the protocol itself; it reads them
only to describe a group (members' topics, assignment, lag) and writes them to describe
Conveyor's own groups to Kafka tools. kafka-python's message classes (generated from
Kafka's ``ConsumerProtocolSubscription``/``ConsumerProtocolAssignment`` schemas) decode;
their errors on malformed bytes are translated here, once (None: not readable).
"""

from __future__ import annotations

import warnings
from collections.abc import Iterable
from typing import Final

from conveyor.protocol.kafka.codec import DECODE_ERRORS

with warnings.catch_warnings():  # kafka-python's schema loading (see apis.py)
    warnings.simplefilter("ignore", DeprecationWarning)
    from kafka.protocol.consumer.metadata import (
        ConsumerProtocolAssignment,
        ConsumerProtocolSubscription,
    )

PROTOCOL_TYPE: Final = "consumer"
# The assignor a Conveyor group is described with (its one server-side assignor,
# coordinator/groups.assign): how a client tells Conveyor's own groups from classic ones.
CONVEYOR_ASSIGNOR: Final = "uniform"
TOPICS_MAX: Final = 10_000  # a description reads at most this many entries
BYTES_MAX: Final = 4 * 1024 * 1024


def subscribed_topics(metadata: bytes) -> list[str] | None:
    """The topics a member's subscription names (sorted, distinct), or None."""
    if not metadata or len(metadata) > BYTES_MAX:
        return None
    try:
        decoded = ConsumerProtocolSubscription.decode(metadata)
        topics = list(decoded.topics or ())
    except DECODE_ERRORS:
        return None
    if len(topics) > TOPICS_MAX or not all(isinstance(t, str) for t in topics):
        return None
    return sorted(set(topics))


def assigned_partitions(assignment: bytes) -> list[tuple[str, int]] | None:
    """The (topic, partition) pairs of a member's assignment (sorted), or None; empty bytes
    are an empty assignment (Kafka's for a member the leader left out)."""
    if not assignment:
        return []
    if len(assignment) > BYTES_MAX:
        return None
    try:
        decoded = ConsumerProtocolAssignment.decode(assignment)
        pairs = [
            (entry.topic, int(p))
            for entry in decoded.assigned_partitions or ()
            for p in entry.partitions
        ]
    except DECODE_ERRORS:
        return None
    if len(pairs) > TOPICS_MAX * 100 or not all(isinstance(t, str) for t, _ in pairs):
        return None
    return sorted(set(pairs))


def encode_subscription(topics: Iterable[str]) -> bytes:
    message = ConsumerProtocolSubscription(version=0, topics=sorted(topics), user_data=None)
    return bytes(message.encode(version=0))


def encode_assignment(partitions: Iterable[tuple[str, int]]) -> bytes:
    by_topic: dict[str, list[int]] = {}
    for topic, partition in sorted(partitions):
        by_topic.setdefault(topic, []).append(partition)
    entry = ConsumerProtocolAssignment.TopicPartition
    message = ConsumerProtocolAssignment(
        version=0,
        assigned_partitions=[entry(topic=t, partitions=p) for t, p in by_topic.items()],
        user_data=None,
    )
    return bytes(message.encode(version=0))
