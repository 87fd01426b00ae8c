"""What a consumer reads: topics by name or by pattern, or partitions assigned by hand.

Pure values, as Kafka's consumer keeps them (``SubscriptionState``): ``subscribe`` names
topics or a regular expression (matched against the whole topic name, as Kafka's
``Pattern.matcher().matches()``), ``assign`` names partitions, and the two are exclusive.
With a ``group_id`` a subscription makes the consumer a member of its group (the group
shares the partitions out); without one, or with ``assign``, the consumer reads what it
names by itself. Nothing here does I/O.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass

from conveyor.client.types import TopicPartition
from conveyor.protocol.errors import InvalidRequestError


@dataclass(frozen=True, slots=True)
class Subscription:
    topics: tuple[str, ...] = ()
    pattern: re.Pattern[str] | None = None
    manual: tuple[TopicPartition, ...] | None = None  # assign(): exactly these

    @property
    def empty(self) -> bool:
        return not self.topics and self.pattern is None and not self.manual

    @property
    def by_pattern(self) -> bool:
        return self.pattern is not None

    def matching(self, names: Iterable[str]) -> tuple[str, ...]:
        """The topics to read among ``names`` (every topic of the cluster, for a pattern)."""
        if self.pattern is None:
            return self.topics
        pattern = self.pattern
        return tuple(sorted(n for n in names if pattern.fullmatch(n)))


def subscription(topics: str | Iterable[str] | None, pattern: str | None) -> Subscription:
    """A subscription to ``topics`` or to ``pattern``; an invalid pattern is refused."""
    if pattern is not None and topics:
        raise InvalidRequestError("subscribe to topics or to a pattern, not both")
    if pattern is not None:
        try:
            return Subscription(pattern=re.compile(pattern))
        except re.error as exc:
            raise InvalidRequestError(f"invalid topic pattern {pattern!r}: {exc}") from None
    if topics is None:
        return Subscription()
    names = (topics,) if isinstance(topics, str) else tuple(dict.fromkeys(topics))
    return Subscription(topics=names)


def partitions_of(
    items: Iterable[TopicPartition | tuple[str, int] | tuple[str, int, int]],
) -> tuple[tuple[TopicPartition, ...], dict[TopicPartition, int]]:
    """``assign``'s argument: partitions, optionally with the offset to start at (a
    ``(topic, partition, offset)`` triple) -> (partitions, start offsets)."""
    partitions: dict[TopicPartition, None] = {}
    offsets: dict[TopicPartition, int] = {}
    for item in items:
        if len(item) not in (2, 3) or not isinstance(item[0], str):
            raise InvalidRequestError(
                f"partitions are (topic, partition) or (topic, partition, offset), not {item!r}"
            )
        tp = TopicPartition(item[0], int(item[1]))
        if tp.partition < 0:
            raise InvalidRequestError(f"partition must be >= 0, not {tp.partition}")
        partitions[tp] = None
        if len(item) == 3:
            offsets[tp] = int(item[2])
    return tuple(partitions), offsets
