"""The coordinator's share-group routes (issue 23): an adapter over ShareGroupManager."""

from __future__ import annotations

from collections.abc import Callable

from aiohttp import web

from conveyor.coordinator.share_group_service import ShareGroupManager
from conveyor.protocol.share import (
    ShareGroupConfigRequest,
    ShareGroupDescription,
    ShareGroupHeartbeatRequest,
    ShareGroupHeartbeatResponse,
    ShareGroupInfo,
    ShareGroupList,
)
from conveyor.transport.server import Route, decode_json, json_response

PATH = "/v1/share-groups/{group}"


def share_group_routes(manager: Callable[[], ShareGroupManager]) -> list[Route]:
    """``manager`` is called per request (routes are listed for OpenAPI before a service)."""

    async def heartbeat(request: web.Request) -> web.Response:
        body = await decode_json(request, ShareGroupHeartbeatRequest)
        group = request.match_info["group"]
        return json_response(await manager().heartbeat(group, body, request.remote or ""))

    async def configure(request: web.Request) -> web.Response:
        body = await decode_json(request, ShareGroupConfigRequest)
        return json_response(await manager().configure(request.match_info["group"], body))

    async def config(request: web.Request) -> web.Response:
        return json_response(manager().config(request.match_info["group"]))

    async def describe(request: web.Request) -> web.Response:
        return json_response(manager().describe(request.match_info["group"]))

    async def listing(_: web.Request) -> web.Response:
        return json_response(manager().list())

    async def delete(request: web.Request) -> web.Response:
        await manager().delete(request.match_info["group"])
        return web.Response(status=204)

    tags = ("share-groups",)
    return [
        Route(
            "POST",
            PATH + "/heartbeat",
            heartbeat,
            "Join, stay in or leave a share group (a queue); the first member creates it "
            "with its mode; answers the partitions to read and the group's settings",
            request=ShareGroupHeartbeatRequest,
            response=ShareGroupHeartbeatResponse,
            tags=tags,
        ),
        Route(
            "PUT",
            PATH + "/config",
            configure,
            "Create a share group or change its settings (mode, lock duration, delivery "
            "attempts, dead-letter topic, window, retry backoff)",
            request=ShareGroupConfigRequest,
            response=ShareGroupInfo,
            tags=tags,
        ),
        Route(
            "GET",
            PATH + "/config",
            config,
            "A share group's settings and their version (404 UNKNOWN_GROUP)",
            response=ShareGroupInfo,
            tags=tags,
        ),
        Route(
            "GET",
            PATH,
            describe,
            "A share group's members, assignment and per-partition counts: in flight, "
            "available, archived, the oldest lock's age",
            response=ShareGroupDescription,
            tags=tags,
        ),
        Route(
            "GET",
            "/v1/share-groups",
            listing,
            "Every share group with its counts",
            response=ShareGroupList,
            tags=tags,
        ),
        Route(
            "DELETE",
            PATH,
            delete,
            "Delete a share group without members (204); 409 GROUP_NOT_EMPTY with members",
            tags=tags,
        ),
    ]
