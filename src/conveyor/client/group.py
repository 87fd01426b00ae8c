"""Consumer-group plumbing: committed offsets, the assignment, and operators' tools.

A consumer without ``group_id`` owns every partition of its topics (``assign_all``); a
group member gets its share from the coordinator (``membership.py``), and its commits
carry ``generation`` and ``member_id`` so the coordinator can fence a stale member.
:class:`OffsetStore` is what the consumer needs of a group's committed offsets:
``kafka_group.KafkaGroupClient`` (Kafka's OffsetFetch and OffsetCommit to the group
coordinator; the offsets live at Conveyor's coordinator).
:class:`GroupAdmin` lists and describes groups and resets their offsets.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Protocol, TypeVar

from conveyor.client import admin_ops as ops
from conveyor.client.admin_ops import ResetTarget, Timestamp, reset_offset
from conveyor.client.types import TopicPartition
from conveyor.protocol.errors import ErrorCode, RetriableError
from conveyor.protocol.messages import (
    GroupDescription,
    GroupSummary,
    OffsetFetchResponse,
    PartitionOffset,
    PartitionOffsets,
)
from conveyor.protocol.share import ShareGroupConfig, ShareGroupDescription, ShareGroupInfo
from conveyor.transport.client import SyncHTTP, coordinator_set
from conveyor.transport.tls import TLSConfig

__all__ = [
    "GroupAdmin",
    "OffsetStore",
    "ResetTarget",
    "Timestamp",
    "reset_offset",
]

T = TypeVar("T")
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


class OffsetStore(Protocol):
    """A group's committed offsets as the consumer reads and writes them."""

    @property
    def group(self) -> str: ...

    async def fetch_offsets(self, topic: str) -> dict[int, int]:
        """partition -> committed offset (the next to read) for ``topic``."""
        ...

    async def commit(self, offsets: Mapping[TopicPartition, int], assignment: Assignment) -> None:
        """Commit as ``assignment``'s member and generation (fenced when stale)."""
        ...


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
        return self._run(ops.list_groups()).groups

    def describe_group(self, group: str) -> GroupDescription:
        return self._run(ops.describe_group(group))

    def reset_offsets(
        self, group: str, topic: str, to: ResetTarget, partitions: Iterable[int] | None = None
    ) -> OffsetFetchResponse:
        """Set ``group``'s committed offsets of ``topic`` (every partition, or the ones in
        ``partitions``) to ``to``: ``"earliest"``, ``"latest"``, an offset or a
        :class:`Timestamp`."""
        answer = self._run(ops.metadata([topic]))
        urls = {b.broker_id: b.url for b in answer.brokers}
        offsets = []
        for info in ops.partitions_to_reset(answer, topic, partitions):
            leader_offsets = None
            if not isinstance(to, int):
                if info.leader is None or info.leader not in urls:
                    raise RetriableError(
                        f"{topic}[{info.partition}] has no leader",
                        code=ErrorCode.LEADER_NOT_AVAILABLE,
                    )
                path = ops.leader_offsets_path(topic, info.partition, to)
                leader_offsets = self._http.call("GET", urls[info.leader] + path, PartitionOffsets)
            offset = ops.resolved(to, leader_offsets)
            offsets.append(PartitionOffset(topic=topic, partition=info.partition, offset=offset))
        return self._run(ops.set_group_offsets(group, offsets))

    def _run(self, call: ops.Call[T]) -> T:
        if call.response is None:
            self._http.request(call.method, self.url + call.path, body=call.body)
            return None  # type: ignore[return-value]
        return self._http.call(call.method, self.url + call.path, call.response, body=call.body)

    # ---- share groups (queues, docs/queues.md) -------------------------------------------

    def list_share_groups(self) -> list[ShareGroupDescription]:
        return self._run(ops.list_share_groups()).groups

    def describe_share_group(self, group: str) -> ShareGroupDescription:
        """Members, assignment and per-partition counts; 404 UNKNOWN_GROUP."""
        return self._run(ops.describe_share_group(group))

    def configure_share_group(self, group: str, config: ShareGroupConfig) -> ShareGroupInfo:
        """Create a share group with ``config`` or change its settings."""
        return self._run(ops.configure_share_group(group, config))

    def delete_share_group(self, group: str) -> None:
        """409 GROUP_NOT_EMPTY while it has members."""
        self._run(ops.delete_share_group(group))

    def delete_group(self, group: str) -> None:
        """Forget an empty group's committed offsets; 409 GROUP_NOT_EMPTY while it has
        members, 404 UNKNOWN_GROUP when it committed nothing."""
        self._run(ops.delete_group(group))

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> GroupAdmin:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()
