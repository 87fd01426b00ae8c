"""The administrative operations as requests, once: ``Admin`` and ``GroupAdmin`` (sync)
and ``AsyncAdmin`` (asyncio) only differ in how they send them.

Each function returns a :class:`Call`: the method, the coordinator path, the body and the
wire type of the answer. Nothing here does I/O; a client speaking another transport
(issue 19) maps the same calls onto its own requests.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any, Generic, Literal, TypeVar
from urllib.parse import quote

from conveyor.client.types import TopicPartition
from conveyor.protocol.backoff import backoff_ms
from conveyor.protocol.errors import ConveyorError, ErrorCode, InvalidRequestError, RetriableError
from conveyor.protocol.messages import (
    AddPartitionsRequest,
    AlterTopicConfigRequest,
    BrokerId,
    ClusterStatus,
    ConfigValue,
    CreateTopicRequest,
    DecommissionResponse,
    DeletedRecords,
    GroupDescription,
    GroupList,
    Metadata,
    OffsetFetchResponse,
    PartitionInfo,
    PartitionOffset,
    PartitionOffsets,
    ResetOffsetsRequest,
    TopicConfig,
    TopicDescription,
    TopicList,
)
from conveyor.protocol.share import (
    ShareGroupConfig,
    ShareGroupConfigRequest,
    ShareGroupDescription,
    ShareGroupInfo,
    ShareGroupList,
)

T = TypeVar("T")


@dataclass(frozen=True, slots=True)
class Call(Generic[T]):
    method: str
    path: str  # below the coordinator's URL
    response: type[T] | None  # None: no body in the answer (204)
    body: Any = None


def _topic(name: str) -> str:
    return f"/v1/topics/{quote(name, safe='')}"


def _group(name: str) -> str:
    return f"/v1/groups/{quote(name, safe='')}"


def topic_config(config: TopicConfig | dict[str, Any] | None) -> TopicConfig | None:
    """A creation's settings as given to ``create_topic``: a dict holds TopicConfig fields
    (an unknown key is a TypeError, as ``TopicConfig(**config)`` raises)."""
    return TopicConfig(**config) if isinstance(config, dict) else config


def create_topic(
    name: str,
    partitions: int,
    replication_factor: int | None,
    config: TopicConfig | dict[str, Any] | None,
) -> Call[TopicDescription]:
    config = topic_config(config)
    request = CreateTopicRequest(
        name=name, partitions=partitions, replication_factor=replication_factor, config=config
    )
    return Call("POST", "/v1/topics", TopicDescription, request)


def list_topics() -> Call[TopicList]:
    return Call("GET", "/v1/topics", TopicList)


def describe_topic(name: str) -> Call[TopicDescription]:
    return Call("GET", _topic(name), TopicDescription)


def delete_topic(name: str) -> Call[None]:
    return Call("DELETE", _topic(name), None)


def add_partitions(name: str, partitions: int) -> Call[TopicDescription]:
    request = AddPartitionsRequest(partitions=partitions)
    return Call("POST", f"{_topic(name)}/partitions", TopicDescription, request)


def alter_topic_config(
    name: str, values: dict[str, ConfigValue] | None, reset: list[str] | None
) -> Call[TopicDescription]:
    request = AlterTopicConfigRequest(set=values or {}, reset=reset or [])
    return Call("PATCH", f"{_topic(name)}/config", TopicDescription, request)


def cluster() -> Call[ClusterStatus]:
    return Call("GET", "/v1/cluster", ClusterStatus)


def decommission(broker_id: int, start: bool) -> Call[DecommissionResponse]:
    path = f"/v1/brokers/{BrokerId(broker_id)}/decommission"
    return Call("POST" if start else "GET", path, DecommissionResponse)


def metadata(topics: Iterable[str]) -> Call[Metadata]:
    names = quote(",".join(topics), safe=",")
    return Call("GET", f"/v1/metadata?topics={names}", Metadata)


def list_groups() -> Call[GroupList]:
    return Call("GET", "/v1/groups", GroupList)


def describe_group(group: str) -> Call[GroupDescription]:
    return Call("GET", _group(group), GroupDescription)


def delete_group(group: str) -> Call[None]:
    return Call("DELETE", _group(group), None)


def _share_group(name: str) -> str:
    return f"/v1/share-groups/{quote(name, safe='')}"


def list_share_groups() -> Call[ShareGroupList]:
    return Call("GET", "/v1/share-groups", ShareGroupList)


def describe_share_group(group: str) -> Call[ShareGroupDescription]:
    return Call("GET", _share_group(group), ShareGroupDescription)


def configure_share_group(group: str, config: ShareGroupConfig) -> Call[ShareGroupInfo]:
    request = ShareGroupConfigRequest(config=config)
    return Call("PUT", f"{_share_group(group)}/config", ShareGroupInfo, request)


def delete_share_group(group: str) -> Call[None]:
    return Call("DELETE", _share_group(group), None)


def set_group_offsets(group: str, offsets: list[PartitionOffset]) -> Call[OffsetFetchResponse]:
    request = ResetOffsetsRequest(offsets=offsets)
    return Call("POST", f"{_group(group)}/offsets/reset", OffsetFetchResponse, request)


def partitions_to_reset(
    answer: Metadata, topic: str, partitions: Iterable[int] | None
) -> list[PartitionInfo]:
    """The partitions of ``topic`` a reset touches (all, or the ones named), checked."""
    described = next((t for t in answer.topics if t.name == topic), None)
    if described is None:
        raise InvalidRequestError(f"unknown topic {topic!r}", code=ErrorCode.UNKNOWN_TOPIC)
    if partitions is None:
        return list(described.partitions)
    wanted = set(partitions)
    chosen = [p for p in described.partitions if p.partition in wanted]
    missing = sorted(wanted - {p.partition for p in chosen})
    if missing:
        raise InvalidRequestError(
            f"topic {topic!r} has no partition {missing[0]} (it has {len(described.partitions)})",
            code=ErrorCode.UNKNOWN_PARTITION,
        )
    return chosen


def leader_offsets_path(topic: str, partition: int, to: ResetTarget) -> str:
    """Where a partition's leader answers the offsets a reset to ``to`` needs."""
    query = f"?timestamp_ms={to.timestamp_ms}" if isinstance(to, Timestamp) else ""
    return f"{_topic(topic)}/partitions/{partition}/offsets{query}"


def resolved(to: ResetTarget, answer: PartitionOffsets | None) -> int:
    """The offset to commit for a partition (``answer``: its leader's offsets, not needed
    for an explicit offset)."""
    if isinstance(to, int):
        return to
    assert answer is not None
    return reset_offset(to, answer)


@dataclass(frozen=True, slots=True)
class Timestamp:
    timestamp_ms: int


ResetTarget = Literal["earliest", "latest"] | int | Timestamp


def reset_offset(to: ResetTarget, answer: PartitionOffsets) -> int:
    """The offset a reset to ``to`` sets, from the partition leader's offsets (asked with
    ``timestamp_ms`` for a time): a time after the last message means the high watermark.
    Used by ``GroupAdmin`` and the web console alike."""
    if isinstance(to, int):
        return to
    if to == "earliest":
        return answer.log_start_offset
    if to == "latest" or answer.offset_for_timestamp is None:
        return answer.high_watermark
    return answer.offset_for_timestamp


# ---- deleting records (on each partition's leader) ---------------------------------------

RecordsTarget = int | Timestamp  # an offset (-1: the high watermark) or a time
RecordsTargets = Mapping[TopicPartition, RecordsTarget] | Mapping[tuple[str, int], RecordsTarget]
# A partition's leader moved or is not serving yet: ask the coordinator again and retry.
LEADER_CODES = frozenset((ErrorCode.NOT_LEADER, ErrorCode.LEADER_NOT_AVAILABLE))
DELETE_RECORDS_ATTEMPTS = 5


def leader_urls(
    answer: Metadata, partitions: Iterable[tuple[str, int]], *, kafka: bool = False
) -> dict[tuple[str, int], str | ConveyorError]:
    """Each partition's leader URL (``kafka``: its Kafka listener's HOST:PORT), or why
    there is none: UNKNOWN_TOPIC and UNKNOWN_PARTITION (final), LEADER_NOT_AVAILABLE
    (retried after a new metadata)."""
    addresses = {b.broker_id: b.kafka_address if kafka else b.url for b in answer.brokers}
    urls = {broker: address for broker, address in addresses.items() if address}
    topics = {t.name: {p.partition: p for p in t.partitions} for t in answer.topics}
    out: dict[tuple[str, int], str | ConveyorError] = {}
    for topic, partition in partitions:
        described = topics.get(topic)
        info = None if described is None else described.get(partition)
        if described is None:
            out[topic, partition] = InvalidRequestError(
                f"unknown topic {topic!r}", code=ErrorCode.UNKNOWN_TOPIC, topic=topic
            )
        elif info is None:
            out[topic, partition] = InvalidRequestError(
                f"topic {topic!r} has no partition {partition}",
                code=ErrorCode.UNKNOWN_PARTITION,
                topic=topic,
                partition=partition,
            )
        elif info.leader is None or info.leader not in urls:
            out[topic, partition] = RetriableError(
                f"{topic}[{partition}] has no leader", code=ErrorCode.LEADER_NOT_AVAILABLE
            )
        else:
            out[topic, partition] = urls[info.leader]
    return out


def delete_records(
    topic: str, partition: int, offset: int, timeout_ms: int
) -> Call[DeletedRecords]:
    """Below the partition's *leader's* URL (see ``leader_urls``), not the coordinator's."""
    path = f"{_topic(topic)}/partitions/{partition}/records"
    return Call("DELETE", f"{path}?before_offset={offset}&timeout_ms={timeout_ms}", DeletedRecords)


def first_error(failed: dict[tuple[str, int], ConveyorError]) -> None:
    """Raise the error of the first failed partition (in topic, partition order)."""
    if failed:
        raise failed[min(failed)]


def leader(route: str | ConveyorError) -> str:
    """A partition's leader URL from ``leader_urls``, or why there is none, raised."""
    if isinstance(route, ConveyorError):
        raise route
    return route


class RecordsDeletion:
    """One ``delete_records`` over many partitions: what is asked of each leader, which
    partitions are left after each attempt, when to give up. ``Admin`` (one leader after
    another) and ``AsyncAdmin`` (all at once) only send its calls and sleep between
    attempts."""

    def __init__(self, offsets: RecordsTargets, timeout_ms: int) -> None:
        self.pending = {TopicPartition(*tp): target for tp, target in offsets.items()}
        self.timeout_ms = timeout_ms
        self.timeout_s = timeout_ms / 1000 + 10  # the leader answers REQUEST_TIMED_OUT first
        self.done: dict[TopicPartition, int] = {}
        self.failed: dict[tuple[str, int], ConveyorError] = {}
        self.attempt = 0

    def metadata(self) -> Call[Metadata]:
        """Where the pending partitions' leaders are (``leader_urls`` of the answer)."""
        return metadata(sorted({tp.topic for tp in self.pending}))

    def offsets_call(self, tp: TopicPartition) -> Call[PartitionOffsets] | None:
        """What a time target asks its leader first (None for an offset)."""
        target = self.pending[tp]
        if not isinstance(target, Timestamp):
            return None
        return Call("GET", leader_offsets_path(tp.topic, tp.partition, target), PartitionOffsets)

    def delete_call(
        self, tp: TopicPartition, offsets: PartitionOffsets | None
    ) -> Call[DeletedRecords]:
        """The deletion on ``tp``'s leader (``offsets``: its answer to ``offsets_call``)."""
        target = self.pending[tp]
        if isinstance(target, Timestamp):
            assert offsets is not None
            target = reset_offset(target, offsets)
        return delete_records(tp.topic, tp.partition, target, self.timeout_ms)

    def settle(self, outcomes: Mapping[TopicPartition, int | ConveyorError]) -> bool:
        """Each pending partition's outcome of this attempt (its low watermark, or the
        error); whether some are to be tried again (after ``pause_s``): those whose leader
        moved or was not there yet, unless this was the last attempt."""
        last = self.attempt + 1 >= DELETE_RECORDS_ATTEMPTS
        retry: dict[TopicPartition, RecordsTarget] = {}
        for tp, outcome in outcomes.items():
            if isinstance(outcome, int):
                self.done[tp] = outcome
            elif outcome.code in LEADER_CODES and not last:
                retry[tp] = self.pending[tp]
            else:
                self.failed[tp] = outcome
        self.pending = retry
        self.attempt += 1
        return bool(retry)

    def pause_s(self, draw: float) -> float:
        """The wait before the next attempt (``draw``: a random number in [0, 1))."""
        return backoff_ms(self.attempt - 1, base_ms=100, max_ms=2000, draw=draw) / 1000

    def result(self) -> dict[TopicPartition, int]:
        """Each partition's low watermark, or the first failure raised."""
        first_error(self.failed)
        return self.done
