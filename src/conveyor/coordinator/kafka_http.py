"""The coordinator's internal routes for brokers' Kafka listeners: Kafka's group APIs,
forwarded by the broker that received them (``broker/kafka/groups.py``), answered by the
one group registry (``kafka_groups.py``, ``consumer_groups.py``, ``classic_service.py``).

Internal: only the cluster's identity may call them (the broker checked the Kafka
principal's ACLs first, as HTTP's middleware does for Conveyor's routes). A standby
coordinator answers NOT_COORDINATOR and the broker's client follows to the active one
(``transport/coordinators.py``), so the fencing of members and commits is always the
active coordinator's.
"""

from __future__ import annotations

from aiohttp import web

from conveyor.coordinator.consumer_groups import ConsumerGroups
from conveyor.coordinator.kafka_groups import KafkaGroups
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
from conveyor.transport.server import Handler, Route, decode_json, json_response

PREFIX = "/internal/v1/kafka/groups"


class KafkaGroupRoutes:
    def __init__(self, kafka: KafkaGroups, consumer: ConsumerGroups) -> None:
        self._kafka = kafka
        self._consumer = consumer

    async def join(self, request: web.Request) -> web.Response:
        body = await decode_json(request, ClassicJoinRequest)
        return json_response(await self._kafka.join(request.match_info["group"], body))

    async def sync(self, request: web.Request) -> web.Response:
        body = await decode_json(request, ClassicSyncRequest)
        return json_response(await self._kafka.sync(request.match_info["group"], body))

    async def heartbeat(self, request: web.Request) -> web.Response:
        body = await decode_json(request, ClassicHeartbeatRequest)
        group = request.match_info["group"]
        return json_response(
            self._kafka.heartbeat(group, body.member_id, body.instance_id, body.generation)
        )

    async def leave(self, request: web.Request) -> web.Response:
        body = await decode_json(request, ClassicLeaveRequest)
        return json_response(self._kafka.leave(request.match_info["group"], body))

    async def commit(self, request: web.Request) -> web.Response:
        body = await decode_json(request, KafkaCommitRequest)
        return json_response(await self._kafka.commit(request.match_info["group"], body))

    async def delete_offsets(self, request: web.Request) -> web.Response:
        body = await decode_json(request, OffsetDeleteRequest)
        return json_response(await self._kafka.delete_offsets(request.match_info["group"], body))

    async def consumer_heartbeat(self, request: web.Request) -> web.Response:
        body = await decode_json(request, ConsumerHeartbeatRequest)
        return json_response(await self._consumer.heartbeat(request.match_info["group"], body))

    async def fetch_offsets(self, request: web.Request) -> web.Response:
        body = await decode_json(request, KafkaOffsetFetchRequest)
        return json_response(self._kafka.fetch_offsets(body))

    async def listing(self, request: web.Request) -> web.Response:
        body = await decode_json(request, KafkaListGroupsRequest)
        return json_response(self._kafka.listing(body.states, body.types))

    async def describe(self, request: web.Request) -> web.Response:
        body = await decode_json(request, KafkaGroupsRequest)
        return json_response(self._kafka.describe(body.groups))

    async def delete(self, request: web.Request) -> web.Response:
        body = await decode_json(request, KafkaGroupsRequest)
        return json_response(await self._kafka.delete(body.groups))

    async def consumer_describe(self, request: web.Request) -> web.Response:
        body = await decode_json(request, KafkaGroupsRequest)
        return json_response(self._consumer.describe(body.groups))

    def routes(self) -> list[Route]:
        one = f"{PREFIX}/{{group}}"

        def route(path: str, handler: Handler, summary: str, req: type, resp: type) -> Route:
            return Route("POST", path, handler, summary, request=req, response=resp, internal=True)

        return [
            route(f"{one}/join", self.join, "Kafka JoinGroup (parked at the barrier)",
                  ClassicJoinRequest, ClassicJoinResponse),
            route(f"{one}/sync", self.sync, "Kafka SyncGroup", ClassicSyncRequest,
                  ClassicSyncResponse),
            route(f"{one}/heartbeat", self.heartbeat, "Kafka Heartbeat (classic)",
                  ClassicHeartbeatRequest, GroupResult),
            route(f"{one}/leave", self.leave, "Kafka LeaveGroup", ClassicLeaveRequest,
                  ClassicLeaveResponse),
            route(f"{one}/offsets/commit", self.commit, "Kafka OffsetCommit",
                  KafkaCommitRequest, KafkaCommitResponse),
            route(f"{one}/offsets/delete", self.delete_offsets, "Kafka OffsetDelete",
                  OffsetDeleteRequest, OffsetDeleteResponse),
            route(f"{one}/consumer-heartbeat", self.consumer_heartbeat,
                  "Kafka ConsumerGroupHeartbeat (KIP-848)", ConsumerHeartbeatRequest,
                  ConsumerHeartbeatResponse),
            route(f"{PREFIX}/offsets/fetch", self.fetch_offsets, "Kafka OffsetFetch",
                  KafkaOffsetFetchRequest, KafkaOffsetFetchResponse),
            route(f"{PREFIX}/list", self.listing, "Kafka ListGroups", KafkaListGroupsRequest,
                  KafkaGroupList),
            route(f"{PREFIX}/describe", self.describe, "Kafka DescribeGroups",
                  KafkaGroupsRequest, KafkaGroupDescriptions),
            route(f"{PREFIX}/delete", self.delete, "Kafka DeleteGroups", KafkaGroupsRequest,
                  KafkaGroupDeletions),
            route(f"{PREFIX}/consumer-describe", self.consumer_describe,
                  "Kafka ConsumerGroupDescribe (KIP-848)", KafkaGroupsRequest,
                  ConsumerGroupDescriptions),
        ]  # fmt: skip
