"""The admin operations over HTTP: requests to the coordinator (``admin_ops.py`` builds
each once) and, for deleting records and resetting offsets, to the partitions' leaders.
The transport ``Admin`` and ``AsyncAdmin`` use unless told ``transport="kafka"``."""

from __future__ import annotations

import asyncio
import random
from collections.abc import Iterable
from typing import TypeVar

from conveyor.client import admin_ops as ops
from conveyor.client.admin_ops import ResetTarget
from conveyor.client.types import TopicPartition
from conveyor.protocol.errors import ConveyorError, ErrorCode, RetriableError
from conveyor.protocol.messages import (
    ClusterStatus,
    ConfigValue,
    DecommissionResponse,
    DeletedRecords,
    GroupDescription,
    GroupSummary,
    OffsetFetchResponse,
    PartitionInfo,
    PartitionOffset,
    PartitionOffsets,
    TopicConfig,
    TopicDescription,
    TopicSummary,
)
from conveyor.transport.client import AsyncHTTP, coordinator_set
from conveyor.transport.tls import TLSConfig
from conveyor.transport.waits import gather_all, settle_all

T = TypeVar("T")


class HttpAdmin:
    """:class:`~conveyor.client.admin_transport.AdminTransport` over the coordinator's
    HTTP API (the active one of those ``url`` names)."""

    def __init__(
        self, url: str | None, tls: TLSConfig | None, timeout_s: float, authorization: str | None
    ) -> None:
        coordinators = coordinator_set(url)
        self.url = coordinators.primary  # requests go to the active coordinator
        self._http = AsyncHTTP(
            tls, timeout_s=timeout_s, authorization=authorization, coordinators=coordinators
        )

    async def _run(self, call: ops.Call[T]) -> T:
        if call.response is None:
            await self._http.request(call.method, self.url + call.path, body=call.body)
            return None  # type: ignore[return-value]
        return await self._http.call(
            call.method, self.url + call.path, call.response, body=call.body
        )

    # ---- topics and the cluster -----------------------------------------------------------

    async def create_topic(
        self,
        name: str,
        partitions: int,
        replication_factor: int | None,
        config: TopicConfig | None,
    ) -> TopicDescription:
        return await self._run(ops.create_topic(name, partitions, replication_factor, config))

    async def list_topics(self) -> list[TopicSummary]:
        return (await self._run(ops.list_topics())).topics

    async def describe_topic(self, name: str) -> TopicDescription:
        return await self._run(ops.describe_topic(name))

    async def delete_topic(self, name: str) -> None:
        await self._run(ops.delete_topic(name))

    async def add_partitions(self, name: str, partitions: int) -> TopicDescription:
        return await self._run(ops.add_partitions(name, partitions))

    async def alter_topic_config(
        self, name: str, values: dict[str, ConfigValue], reset: list[str]
    ) -> TopicDescription:
        return await self._run(ops.alter_topic_config(name, values, reset))

    async def cluster(self) -> ClusterStatus:
        return await self._run(ops.cluster())

    async def broker_urls(self, topic: str) -> dict[int, str]:
        """Each live broker's REST URL, from the metadata of ``topic`` (readable by any
        authenticated principal, unlike the cluster's status)."""
        answer = await self._run(ops.metadata([topic]))
        return {b.broker_id: b.url for b in answer.brokers}

    async def decommission(self, broker_id: int, start: bool) -> DecommissionResponse:
        return await self._run(ops.decommission(broker_id, start=start))

    async def delete_records(
        self, offsets: ops.RecordsTargets, timeout_ms: int
    ) -> dict[TopicPartition, int]:
        """The partitions' leaders asked concurrently; moved leaders found again."""
        deletion = ops.RecordsDeletion(offsets, timeout_ms)
        while True:
            routes = ops.leader_urls(await self._run(deletion.metadata()), deletion.pending)
            tps = list(deletion.pending)
            answers = await settle_all(
                *(self._delete_on_leader(deletion, routes[tp], tp) for tp in tps)
            )
            outcomes: dict[TopicPartition, int | ConveyorError] = {}
            for tp, outcome in zip(tps, answers, strict=True):
                if not isinstance(outcome, int | ConveyorError):
                    raise outcome
                outcomes[tp] = outcome
            if not deletion.settle(outcomes):
                return deletion.result()
            await asyncio.sleep(deletion.pause_s(random.random()))

    async def _delete_on_leader(
        self, deletion: ops.RecordsDeletion, route: str | ConveyorError, tp: TopicPartition
    ) -> int:
        leader = ops.leader(route)
        ask = deletion.offsets_call(tp)
        offsets = None
        if ask is not None:
            offsets = await self._http.call(ask.method, leader + ask.path, PartitionOffsets)
        call = deletion.delete_call(tp, offsets)
        answer = await self._http.call(
            call.method, leader + call.path, DeletedRecords, timeout_s=deletion.timeout_s
        )
        return answer.low_watermark

    # ---- consumer groups -----------------------------------------------------------------

    async def list_groups(self) -> list[GroupSummary]:
        return (await self._run(ops.list_groups())).groups

    async def describe_group(self, group: str) -> GroupDescription:
        return await self._run(ops.describe_group(group))

    async def delete_group(self, group: str) -> None:
        await self._run(ops.delete_group(group))

    async def reset_offsets(
        self, group: str, topic: str, to: ResetTarget, partitions: Iterable[int] | None
    ) -> OffsetFetchResponse:
        """Each partition's offset resolved on its leader (concurrently), then set at the
        coordinator, which refuses with GROUP_NOT_EMPTY while the group has members."""
        answer = await self._run(ops.metadata([topic]))
        urls = {b.broker_id: b.url for b in answer.brokers}
        chosen = ops.partitions_to_reset(answer, topic, partitions)

        async def one(info: PartitionInfo) -> PartitionOffset:
            leader_offsets = None
            if not isinstance(to, int):
                if info.leader is None or info.leader not in urls:
                    raise RetriableError(
                        f"{topic}[{info.partition}] has no leader",
                        code=ErrorCode.LEADER_NOT_AVAILABLE,
                    )
                path = ops.leader_offsets_path(topic, info.partition, to)
                leader_offsets = await self._http.call(
                    "GET", urls[info.leader] + path, PartitionOffsets
                )
            offset = ops.resolved(to, leader_offsets)
            return PartitionOffset(topic=topic, partition=info.partition, offset=offset)

        offsets = list(await gather_all(*(one(info) for info in chosen)))
        return await self._run(ops.set_group_offsets(group, offsets))

    async def close(self) -> None:
        await self._http.close()
