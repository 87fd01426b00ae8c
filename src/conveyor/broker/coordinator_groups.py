"""The coordinator's group operations as a broker's Kafka listener calls them: its internal
routes (``coordinator/kafka_http.py``) over the broker's HTTP client, with the cluster's
identity, to the active coordinator (``transport/coordinators.py`` follows a standby's
NOT_COORDINATOR). Errors arrive typed, as the coordinator raised them.

A JoinGroup waits at the coordinator's barrier for up to the group's rebalance timeout
(plus a new group's initial delay): its call is given that long and a margin.
"""

from __future__ import annotations

from typing import Final, TypeVar
from urllib.parse import quote

import msgspec

from conveyor.protocol.group_messages import (
    ClassicHeartbeatRequest,
    ClassicJoinRequest,
    ClassicJoinResponse,
    ClassicLeaveRequest,
    ClassicLeaveResponse,
    ClassicSyncRequest,
    ClassicSyncResponse,
    ConsumerGroupDescriptions,
    ConsumerHeartbeatRequest,
    ConsumerHeartbeatResponse,
    GroupResult,
    KafkaCommitRequest,
    KafkaCommitResponse,
    KafkaGroupDeletions,
    KafkaGroupDescriptions,
    KafkaGroupList,
    KafkaGroupsRequest,
    KafkaListGroupsRequest,
    KafkaOffsetFetchRequest,
    KafkaOffsetFetchResponse,
    OffsetDeleteRequest,
    OffsetDeleteResponse,
)
from conveyor.transport.client import AsyncHTTP

T = TypeVar("T")
TIMEOUT_S: Final = 30.0
# beyond the rebalance timeout a JoinGroup or SyncGroup may wait at the barrier: the
# coordinator's initial delay (up to 5 min, default 3 s) and its own margin
PARKED_EXTRA_S: Final = 330.0


class CoordinatorGroups:
    def __init__(self, http: AsyncHTTP, coordinator_url: str, timeout_s: float = TIMEOUT_S):
        self._http = http
        self._url = coordinator_url.rstrip("/") + "/internal/v1/kafka/groups"
        self._timeout_s = timeout_s

    async def _post(
        self, path: str, body: msgspec.Struct, answer: type[T], timeout_s: float | None = None
    ) -> T:
        return await self._http.call(
            "POST", self._url + path, answer, body=body, timeout_s=timeout_s or self._timeout_s
        )

    @staticmethod
    def _group(name: str) -> str:
        return "/" + quote(name, safe="")

    async def join(self, group: str, request: ClassicJoinRequest) -> ClassicJoinResponse:
        wait_s = request.rebalance_timeout_ms / 1000 + PARKED_EXTRA_S
        return await self._post(self._group(group) + "/join", request, ClassicJoinResponse, wait_s)

    async def sync(
        self, group: str, request: ClassicSyncRequest, rebalance_timeout_ms: int
    ) -> ClassicSyncResponse:
        wait_s = rebalance_timeout_ms / 1000 + PARKED_EXTRA_S
        return await self._post(self._group(group) + "/sync", request, ClassicSyncResponse, wait_s)

    async def heartbeat(self, group: str, request: ClassicHeartbeatRequest) -> GroupResult:
        return await self._post(self._group(group) + "/heartbeat", request, GroupResult)

    async def leave(self, group: str, request: ClassicLeaveRequest) -> ClassicLeaveResponse:
        return await self._post(self._group(group) + "/leave", request, ClassicLeaveResponse)

    async def commit(self, group: str, request: KafkaCommitRequest) -> KafkaCommitResponse:
        path = self._group(group) + "/offsets/commit"
        return await self._post(path, request, KafkaCommitResponse)

    async def delete_offsets(
        self, group: str, request: OffsetDeleteRequest
    ) -> OffsetDeleteResponse:
        path = self._group(group) + "/offsets/delete"
        return await self._post(path, request, OffsetDeleteResponse)

    async def consumer_heartbeat(
        self, group: str, request: ConsumerHeartbeatRequest
    ) -> ConsumerHeartbeatResponse:
        path = self._group(group) + "/consumer-heartbeat"
        return await self._post(path, request, ConsumerHeartbeatResponse)

    async def fetch_offsets(self, request: KafkaOffsetFetchRequest) -> KafkaOffsetFetchResponse:
        return await self._post("/offsets/fetch", request, KafkaOffsetFetchResponse)

    async def listing(self, request: KafkaListGroupsRequest) -> KafkaGroupList:
        return await self._post("/list", request, KafkaGroupList)

    async def describe(self, groups: list[str]) -> KafkaGroupDescriptions:
        body = KafkaGroupsRequest(groups=groups)
        return await self._post("/describe", body, KafkaGroupDescriptions)

    async def delete(self, groups: list[str]) -> KafkaGroupDeletions:
        return await self._post("/delete", KafkaGroupsRequest(groups=groups), KafkaGroupDeletions)

    async def consumer_describe(self, groups: list[str]) -> ConsumerGroupDescriptions:
        body = KafkaGroupsRequest(groups=groups)
        return await self._post("/consumer-describe", body, ConsumerGroupDescriptions)
