"""The coordinator's HTTP adapter: routes -> :class:`CoordinatorService` calls -> JSON.

Every route is declared once in :func:`routes` with its request and response types; the
OpenAPI document (``/openapi.json``) is generated from that list. Handlers only decode,
call the service and encode: all rules live in the service and the pure core below it.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable
from typing import Final

from aiohttp import web
from aiohttp.typedefs import Handler, Middleware

from conveyor.coordinator.kafka_http import KafkaGroupRoutes
from conveyor.coordinator.leadership import HaSettings
from conveyor.coordinator.service import CoordinatorService, CoordinatorSettings
from conveyor.coordinator.share_group_http import share_group_routes
from conveyor.coordinator.txn_http import TransactionRoutes
from conveyor.protocol.errors import InvalidRequestError
from conveyor.protocol.messages import (
    AddPartitionsRequest,
    AlterIsrRequest,
    AlterIsrResponse,
    AlterTopicConfigRequest,
    BrokerHeartbeat,
    BrokerId,
    ClusterStatus,
    CoordinatorStatus,
    CreateTopicRequest,
    DecommissionResponse,
    GroupDescription,
    GroupHeartbeatRequest,
    GroupHeartbeatResponse,
    GroupList,
    HeartbeatResponse,
    InitProducerIdRequest,
    InitProducerIdResponse,
    Metadata,
    OffsetCommitRequest,
    OffsetFetchResponse,
    ResetOffsetsRequest,
    TopicDescription,
    TopicList,
)
from conveyor.transport.auth import CONSOLE_PREFIX
from conveyor.transport.clock import Clock
from conveyor.transport.metrics import install as install_metrics
from conveyor.transport.server import Route, build_app, decode_json, json_response, set_ready

SERVICE_KEY = web.AppKey("coordinator_service", CoordinatorService)
LEADERSHIP_KEY = web.AppKey("coordinator_leadership", object)  # with etcd: a Leadership
# What a standby still answers itself; every other route says NOT_COORDINATOR and names
# the active coordinator (clients and brokers follow it: transport/coordinators.py).
STANDBY_PATHS: Final = frozenset(
    {"/healthz", "/readyz", "/metrics", "/openapi.json", "/v1/coordinator"}
)

_TRUE = ("1", "true", "yes", "on")
_FALSE = ("0", "false", "no", "off")


def query_bool(request: web.Request, name: str, default: bool) -> bool:
    raw = request.query.get(name)
    if raw is None or raw == "":
        return default
    if raw.lower() in _TRUE:
        return True
    if raw.lower() in _FALSE:
        return False
    raise InvalidRequestError(f"query parameter {name!r} must be true or false, not {raw!r}")


def query_topics(request: web.Request) -> list[str] | None:
    """``?topics=a,b``: the listed names; absent or empty: None, meaning every topic."""
    raw = request.query.get("topics")
    if raw is None:
        return None
    names = [n.strip() for n in raw.split(",") if n.strip()]
    return names or None


def _broker_id(request: web.Request) -> BrokerId:
    raw = request.match_info["broker_id"]
    if not raw.isdigit() or len(raw) > 10:
        raise InvalidRequestError(f"broker id must be a non-negative integer, not {raw[:20]!r}")
    return BrokerId(int(raw))


class CoordinatorHTTP:
    def __init__(self, service: CoordinatorService) -> None:
        self.service = service
        # with etcd, leadership.py tells the role; alone on SQLite it is always "single"
        self.status: Callable[[], CoordinatorStatus] = lambda: CoordinatorStatus(role="single")

    async def coordinator(self, _: web.Request) -> web.Response:
        return json_response(self.status())

    async def heartbeat(self, request: web.Request) -> web.Response:
        heartbeat = await decode_json(request, BrokerHeartbeat)
        return json_response(await self.service.heartbeat(heartbeat))

    async def alter_isr(self, request: web.Request) -> web.Response:
        body = await decode_json(request, AlterIsrRequest)
        return json_response(await self.service.alter_isr(body))

    async def init_producer_id(self, request: web.Request) -> web.Response:
        body = await decode_json(request, InitProducerIdRequest)
        return json_response(await self.service.init_producer_id(body))

    async def decommission(self, request: web.Request) -> web.Response:
        broker_id = _broker_id(request)
        return json_response(await self.service.decommission(broker_id))

    async def decommission_status(self, request: web.Request) -> web.Response:
        return json_response(self.service.decommission_status(_broker_id(request)))

    async def metadata(self, request: web.Request) -> web.Response:
        topics = query_topics(request)
        auto_create = query_bool(request, "auto_create", default=False)
        return json_response(await self.service.metadata(topics, auto_create))

    async def create_topic(self, request: web.Request) -> web.Response:
        body = await decode_json(request, CreateTopicRequest)
        return json_response(await self.service.create_topic(body), status=201)

    async def list_topics(self, _: web.Request) -> web.Response:
        return json_response(self.service.list_topics())

    async def describe_topic(self, request: web.Request) -> web.Response:
        return json_response(self.service.describe_topic(request.match_info["topic"]))

    async def delete_topic(self, request: web.Request) -> web.Response:
        await self.service.delete_topic(request.match_info["topic"])
        return web.Response(status=204)

    async def add_partitions(self, request: web.Request) -> web.Response:
        body = await decode_json(request, AddPartitionsRequest)
        topic = request.match_info["topic"]
        return json_response(await self.service.add_partitions(topic, body))

    async def alter_topic_config(self, request: web.Request) -> web.Response:
        body = await decode_json(request, AlterTopicConfigRequest)
        topic = request.match_info["topic"]
        return json_response(await self.service.alter_topic_config(topic, body))

    async def cluster(self, _: web.Request) -> web.Response:
        return json_response(self.service.cluster_status())

    async def commit_offsets(self, request: web.Request) -> web.Response:
        body = await decode_json(request, OffsetCommitRequest)
        group = request.match_info["group"]
        return json_response(await self.service.commit_offsets(group, body))

    async def fetch_offsets(self, request: web.Request) -> web.Response:
        topic = request.query.get("topic") or None
        return json_response(self.service.fetch_offsets(request.match_info["group"], topic))

    async def group_heartbeat(self, request: web.Request) -> web.Response:
        body = await decode_json(request, GroupHeartbeatRequest)
        group = request.match_info["group"]
        host = request.remote or ""
        return json_response(await self.service.groups.heartbeat(group, body, host))

    async def list_groups(self, _: web.Request) -> web.Response:
        return json_response(self.service.groups.list())

    async def describe_group(self, request: web.Request) -> web.Response:
        return json_response(self.service.groups.describe(request.match_info["group"]))

    async def delete_group(self, request: web.Request) -> web.Response:
        await self.service.groups.delete(request.match_info["group"])
        return web.Response(status=204)

    async def reset_offsets(self, request: web.Request) -> web.Response:
        body = await decode_json(request, ResetOffsetsRequest)
        group = request.match_info["group"]
        return json_response(await self.service.groups.reset_offsets(group, body))

    def routes(self) -> list[Route]:
        return [
            Route(
                "POST",
                "/v1/brokers/heartbeat",
                self.heartbeat,
                "Register a broker or renew its session; answers its desired assignments",
                request=BrokerHeartbeat,
                response=HeartbeatResponse,
                internal=True,
            ),
            Route(
                "GET",
                "/v1/metadata",
                self.metadata,
                "Brokers and, per topic, partition leaders with their URLs and epochs",
                response=Metadata,
                query=(
                    ("topics", "string", "comma-separated topic names; absent: every topic"),
                    ("auto_create", "boolean", "create unknown topics with defaults (false)"),
                ),
                tags=("metadata",),
            ),
            Route(
                "GET",
                "/v1/coordinator",
                self.coordinator,
                "Which coordinator is active: answered by every coordinator, standbys too",
                response=CoordinatorStatus,
                tags=("cluster",),
            ),
            Route(
                "GET",
                "/v1/cluster",
                self.cluster,
                "Cluster status: brokers, counts, offline partitions",
                response=ClusterStatus,
                tags=("cluster",),
            ),
            *self._topic_routes(),
            *self._group_routes(),
            *share_group_routes(lambda: self.service.share_groups),
            *self._replication_routes(),
            *KafkaGroupRoutes(self.service.kafka_groups, self.service.consumer_groups).routes(),
            *TransactionRoutes(self.service.transactions).routes(),
        ]

    def _replication_routes(self) -> list[Route]:
        return [
            Route(
                "POST",
                "/internal/v1/partitions/isr",
                self.alter_isr,
                "A partition leader changes the ISR; 409 STALE_EPOCH unless it is the leader "
                "at the current leader and partition epochs",
                request=AlterIsrRequest,
                response=AlterIsrResponse,
                internal=True,
            ),
            Route(
                "POST",
                "/v1/producers/init",
                self.init_producer_id,
                "A new idempotent producer id, or the epoch of a known one bumped",
                request=InitProducerIdRequest,
                response=InitProducerIdResponse,
                tags=("producers",),
            ),
            Route(
                "POST",
                "/v1/brokers/{broker_id}/decommission",
                self.decommission,
                "Drain a broker: its replicas move to other brokers; done when it holds none",
                response=DecommissionResponse,
                tags=("cluster",),
            ),
            Route(
                "GET",
                "/v1/brokers/{broker_id}/decommission",
                self.decommission_status,
                "A draining broker's progress",
                response=DecommissionResponse,
                tags=("cluster",),
            ),
        ]

    def _topic_routes(self) -> list[Route]:
        return [
            Route(
                "POST",
                "/v1/topics",
                self.create_topic,
                "Create a topic (201); 409 TOPIC_ALREADY_EXISTS",
                request=CreateTopicRequest,
                response=TopicDescription,
                tags=("topics",),
            ),
            Route(
                "GET",
                "/v1/topics",
                self.list_topics,
                "List topics",
                response=TopicList,
                tags=("topics",),
            ),
            Route(
                "GET",
                "/v1/topics/{topic}",
                self.describe_topic,
                "Describe a topic: partitions, replicas, ISR, leaders, epochs, offsets",
                response=TopicDescription,
                tags=("topics",),
            ),
            Route(
                "DELETE",
                "/v1/topics/{topic}",
                self.delete_topic,
                "Delete a topic and its committed offsets (204)",
                tags=("topics",),
            ),
            Route(
                "POST",
                "/v1/topics/{topic}/partitions",
                self.add_partitions,
                "Grow a topic to N partitions (never shrinks: 400 INVALID_PARTITIONS)",
                request=AddPartitionsRequest,
                response=TopicDescription,
                tags=("topics",),
            ),
            Route(
                "PATCH",
                "/v1/topics/{topic}/config",
                self.alter_topic_config,
                "Change some of a topic's settings (brokers apply them without a restart)",
                request=AlterTopicConfigRequest,
                response=TopicDescription,
                tags=("topics",),
            ),
        ]

    def _group_routes(self) -> list[Route]:
        return [
            Route(
                "POST",
                "/v1/groups/{group}/heartbeat",
                self.group_heartbeat,
                "Join, stay in or leave a consumer group, reporting the partitions owned; "
                "answers what to consume (the coordinator's assignment)",
                request=GroupHeartbeatRequest,
                response=GroupHeartbeatResponse,
                tags=("groups",),
            ),
            Route(
                "GET",
                "/v1/groups",
                self.list_groups,
                "Every group with members or committed offsets: state, generation, lag",
                response=GroupList,
                tags=("groups",),
            ),
            Route(
                "GET",
                "/v1/groups/{group}",
                self.describe_group,
                "A group's members, assignment, committed offsets and lag per partition",
                response=GroupDescription,
                tags=("groups",),
            ),
            Route(
                "DELETE",
                "/v1/groups/{group}",
                self.delete_group,
                "Delete an empty group's committed offsets (204); 409 GROUP_NOT_EMPTY while "
                "it has members, 404 UNKNOWN_GROUP when it committed nothing",
                tags=("groups",),
            ),
            Route(
                "POST",
                "/v1/groups/{group}/offsets/reset",
                self.reset_offsets,
                "Set a group's committed offsets; 409 GROUP_NOT_EMPTY while it has members",
                request=ResetOffsetsRequest,
                response=OffsetFetchResponse,
                tags=("groups",),
            ),
            Route(
                "POST",
                "/v1/groups/{group}/offsets",
                self.commit_offsets,
                "Commit a group's offsets (durable before the reply); answers what is stored",
                request=OffsetCommitRequest,
                response=OffsetFetchResponse,
                tags=("groups",),
            ),
            Route(
                "GET",
                "/v1/groups/{group}/offsets",
                self.fetch_offsets,
                "A group's committed offsets",
                response=OffsetFetchResponse,
                query=(("topic", "string", "only this topic's offsets"),),
                tags=("groups",),
            ),
        ]


def _console(request: web.Request) -> bool:
    """The web console's pages: served by standbys too. The console reads nothing of this
    coordinator's state; its calls to the API follow NOT_COORDINATOR to the active one
    (``console/api.py``), so a browser may stay on any coordinator, across failovers."""
    path = request.path
    return path == CONSOLE_PREFIX or path.startswith(CONSOLE_PREFIX + "/")


def standby_middleware(service: CoordinatorService) -> Middleware:
    """While this coordinator is not the active one, every route but ``STANDBY_PATHS``
    answers 421 NOT_COORDINATOR with ``details.active_url`` (when known): nothing here may
    change or even read cluster state that only the active coordinator holds."""

    @web.middleware
    async def middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
        if service.standby and request.path not in STANDBY_PATHS and not _console(request):
            raise service.not_coordinator("this coordinator is a standby")
        return await handler(request)

    return middleware


def build_coordinator_app(
    settings: CoordinatorSettings,
    clock: Clock | None = None,
    ha: HaSettings | None = None,
) -> web.Application:
    """The coordinator's aiohttp application. Alone (``ha`` None): ready (``/readyz``
    200) once the state is loaded from SQLite; the database is closed on cleanup, after
    in-flight requests. With ``ha`` (etcd): ready at once, as a standby, while
    ``leadership.py`` campaigns; it activates the service when it wins."""
    service = CoordinatorService(settings, clock)
    routes = CoordinatorHTTP(service)
    app = build_app("coordinator", routes.routes())
    app[SERVICE_KEY] = service
    app.middlewares.append(standby_middleware(service))
    install_metrics(app, service.metrics)
    if ha is not None:
        _run_leadership(app, service, routes, ha)
        return app

    async def on_startup(app: web.Application) -> None:
        await service.start()
        set_ready(app)

    async def on_cleanup(_: web.Application) -> None:
        await service.close()

    app.on_startup.append(on_startup)
    app.on_cleanup.append(on_cleanup)
    return app


def _run_leadership(
    app: web.Application, service: CoordinatorService, routes: CoordinatorHTTP, ha: HaSettings
) -> None:
    from conveyor.coordinator.leadership import Leadership
    from conveyor.transport.etcd import EtcdClient

    client = EtcdClient(ha.etcd)
    leadership = Leadership(service, client, ha)
    app[LEADERSHIP_KEY] = leadership
    routes.status = leadership.status
    service.standby = True
    task: list[asyncio.Task[None]] = []

    async def on_startup(app: web.Application) -> None:
        task.append(asyncio.create_task(leadership.run(), name="coordinator-leadership"))
        set_ready(app)

    async def on_cleanup(_: web.Application) -> None:
        for running in task:  # steps down (revoking the lease) if active
            running.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await running
        await client.close()

    app.on_startup.append(on_startup)
    app.on_cleanup.append(on_cleanup)
