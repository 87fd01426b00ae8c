"""Consumer-group plumbing: committed offsets, the assignment, and operators' tools.

A consumer without ``group_id`` owns every partition of its topics (``assign_all``); a
group member gets its share from the coordinator (``membership.py``), and its commits
carry ``generation`` and ``member_id`` so the coordinator can fence a stale member.
:class:`GroupAdmin` lists and describes groups and resets their offsets.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Literal
from urllib.parse import quote

from conveyor.client.types import TopicPartition
from conveyor.protocol.errors import ErrorCode, InvalidRequestError, RetriableError
from conveyor.protocol.messages import (
    BrokerId,
    GroupDescription,
    GroupList,
    GroupSummary,
    Metadata,
    OffsetCommitRequest,
    OffsetFetchResponse,
    PartitionInfo,
    PartitionOffset,
    PartitionOffsets,
    ResetOffsetsRequest,
)
from conveyor.transport.client import AsyncHTTP, SyncHTTP, coordinator_set
from conveyor.transport.tls import TLSConfig

NO_GENERATION = -1  # a simple consumer, outside group membership


@dataclass(frozen=True, slots=True)
class Assignment:
    """Which partitions this member owns, in which generation of its group."""

    partitions: tuple[TopicPartition, ...]
    generation: int = NO_GENERATION
    member_id: str | None = None


def assign_all(partition_counts: Mapping[str, int]) -> Assignment:
    """Every partition of every topic: the assignment of a consumer alone in its group."""
    partitions = tuple(
        TopicPartition(topic, partition)
        for topic in sorted(partition_counts)
        for partition in range(partition_counts[topic])
    )
    return Assignment(partitions)


class GroupClient:
    """Committed offsets of one group, at the coordinator."""

    def __init__(self, http: AsyncHTTP, url: str, group: str, request_timeout_ms: int) -> None:
        self.group = group
        self._http = http
        self._base = f"{url}/v1/groups/{quote(group, safe='')}/offsets"
        self._timeout_s = request_timeout_ms / 1000

    async def fetch_offsets(self, topic: str) -> dict[int, int]:
        """partition -> committed offset (the next to read) for ``topic``."""
        response = await self._http.call(
            "GET",
            f"{self._base}?topic={quote(topic, safe='')}",
            OffsetFetchResponse,
            timeout_s=self._timeout_s,
        )
        return {
            o.partition: o.offset for o in response.offsets if o.topic == topic and o.offset >= 0
        }

    async def commit(self, offsets: Mapping[TopicPartition, int], assignment: Assignment) -> None:
        request = OffsetCommitRequest(
            offsets=[
                PartitionOffset(topic=tp.topic, partition=tp.partition, offset=offset)
                for tp, offset in sorted(offsets.items())
            ],
            member_id=assignment.member_id,
            generation=assignment.generation,
        )
        await self._http.call(
            "POST", self._base, OffsetFetchResponse, body=request, timeout_s=self._timeout_s
        )


class GroupAdmin:
    """Operators' view of consumer groups (sync): list, describe with lag, reset offsets.

    ``reset_offsets`` resolves ``earliest``/``latest``/an offset/a timestamp per partition
    (asking each partition's leader), then sets the group's committed offsets at the
    coordinator, which refuses with 409 GROUP_NOT_EMPTY while the group has members.
    """

    def __init__(
        self,
        url: str | None = None,
        *,
        tls: TLSConfig | None = None,
        timeout_s: float = 30.0,
        token: str | None = None,
        user: str | None = None,
        password: str | None = None,
    ) -> None:
        """Credentials as :class:`conveyor.Admin` takes them; none given: the environment."""
        from conveyor.transport.credentials import authorization_header

        coordinators = coordinator_set(url)
        self.url = coordinators.primary  # requests go to the active coordinator
        self._http = SyncHTTP(
            tls,
            timeout_s=timeout_s,
            pool_size=4,
            authorization=authorization_header(token, user, password),
            coordinators=coordinators,
        )

    def list_groups(self) -> list[GroupSummary]:
        return self._http.call("GET", f"{self.url}/v1/groups", GroupList).groups

    def describe_group(self, group: str) -> GroupDescription:
        return self._http.call("GET", self._group_url(group), GroupDescription)

    def reset_offsets(self, group: str, topic: str, to: ResetTarget) -> OffsetFetchResponse:
        metadata = self._http.call(
            "GET", f"{self.url}/v1/metadata?topics={quote(topic, safe='')}", Metadata
        )
        described = next((t for t in metadata.topics if t.name == topic), None)
        if described is None:
            raise InvalidRequestError(f"unknown topic {topic!r}", code=ErrorCode.UNKNOWN_TOPIC)
        urls = {b.broker_id: b.url for b in metadata.brokers}
        offsets = []
        for p in described.partitions:
            offsets.append(
                PartitionOffset(
                    topic=topic, partition=p.partition, offset=self._resolve(urls, topic, p, to)
                )
            )
        request = ResetOffsetsRequest(offsets=offsets)
        return self._http.call(
            "POST", f"{self._group_url(group)}/offsets/reset", OffsetFetchResponse, body=request
        )

    def _resolve(
        self, urls: Mapping[BrokerId, str], topic: str, partition: PartitionInfo, to: ResetTarget
    ) -> int:
        if isinstance(to, int):
            return to
        if partition.leader is None or partition.leader not in urls:
            raise RetriableError(
                f"{topic}[{partition.partition}] has no leader",
                code=ErrorCode.LEADER_NOT_AVAILABLE,
            )
        query = f"?timestamp_ms={to.timestamp_ms}" if isinstance(to, Timestamp) else ""
        answer = self._http.call(
            "GET",
            f"{urls[partition.leader]}/v1/topics/{quote(topic, safe='')}/partitions/"
            f"{partition.partition}/offsets{query}",
            PartitionOffsets,
        )
        return reset_offset(to, answer)

    def delete_group(self, group: str) -> None:
        """Forget an empty group's committed offsets; 409 GROUP_NOT_EMPTY while it has
        members, 404 UNKNOWN_GROUP when it committed nothing."""
        self._http.request("DELETE", self._group_url(group))

    def _group_url(self, group: str) -> str:
        return f"{self.url}/v1/groups/{quote(group, safe='')}"

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> GroupAdmin:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()


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
