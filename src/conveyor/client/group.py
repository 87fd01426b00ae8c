"""Consumer-group plumbing: committed offsets and the partition assignment.

In this release a consumer owns every partition of its topics (``assign_all``); the
consumer-groups issue replaces ``assign_all`` with the coordinator's assignment and fills
``generation`` and ``member_id`` from the join protocol. Commits already carry both, so
the coordinator can fence a stale member without a change on this side.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from urllib.parse import quote

from conveyor.client.types import TopicPartition
from conveyor.protocol.messages import OffsetCommitRequest, OffsetFetchResponse, PartitionOffset
from conveyor.transport.client import AsyncHTTP

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
