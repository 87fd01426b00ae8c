"""The broker's HTTP adapter: routes onto :class:`BrokerService`, nothing more.

Binary bodies (``application/vnd.conveyor.record-batch`` or ``application/octet-stream``)
are handed to the service as received; JSON goes through ``jsonrecords``. Errors leave as
``ErrorBody`` through the transport's error middleware.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
import struct
from typing import Final

import msgspec
from aiohttp import web

from conveyor.broker.heartbeat import Heartbeat
from conveyor.broker.jsonrecords import to_fetched
from conveyor.broker.peers import LISTENER_PATH
from conveyor.broker.replica_listener import ReplicaAccess, ReplicaListener
from conveyor.broker.rules import parse_acks
from conveyor.broker.service import BrokerService, FetchResult
from conveyor.broker.share.routes import share_routes
from conveyor.broker.txn_markers import MarkerWriter
from conveyor.protocol.batch import peek_length
from conveyor.protocol.errors import ErrorCode, InvalidRequestError, RetriableError
from conveyor.protocol.fetchframe import ReplicaListenerAddress
from conveyor.protocol.messages import (
    BATCH_CONTENT_TYPE,
    DeletedRecords,
    ErrorBody,
    FetchResponse,
    HostedPartitions,
    JsonProduceRequest,
    PartitionOffsets,
    ProduceResponse,
    RoutedProduceResponse,
)
from conveyor.protocol.records import decode_batches
from conveyor.protocol.txn import (
    ABORTED_HEADER,
    ABORTED_IN_HEADER_MAX,
    LAST_STABLE_OFFSET_HEADER,
    encode_aborted,
    without_aborted,
)
from conveyor.transport.kafka_server import KafkaListener
from conveyor.transport.metrics import install as install_metrics
from conveyor.transport.server import (
    NOT_FOUND_HINT_KEY,
    REQUEST_LIMIT_HINT_KEY,
    Route,
    build_app,
    decode_json,
    is_batch_content,
    json_response,
    query_int,
    set_ready,
)

log = logging.getLogger(__name__)

PARTITION_PATH: Final = "/v1/topics/{topic}/partitions/{partition}"
# The JSON fetch decodes records on the event loop; keep each answer small.
JSON_FETCH_BYTES_MAX: Final = 1024 * 1024
# Fetch answers go out in chunks of this size (aiohttp drains its writer past 64 KiB).
WRITE_CHUNK_BYTES: Final = 64 * 1024
HEADER_HIGH_WATERMARK: Final = "X-Conveyor-High-Watermark"
HEADER_LOG_START_OFFSET: Final = "X-Conveyor-Log-Start-Offset"
HEADER_LOG_END_OFFSET: Final = "X-Conveyor-Log-End-Offset"
HEADER_LEADER_EPOCH: Final = "X-Conveyor-Leader-Epoch"
_BINARY_TYPES: Final = (BATCH_CONTENT_TYPE, "application/octet-stream")

SERVICE_KEY: Final = web.AppKey("conveyor_broker_service", BrokerService)
_TASKS_KEY: Final = web.AppKey("conveyor_broker_tasks", list)
KAFKA_LISTENER_KEY: Final = web.AppKey("conveyor_kafka_listener", KafkaListener)
REPLICA_LISTENER_KEY: Final = web.AppKey("conveyor_replica_listener", ReplicaListener)


def _topic_partition(request: web.Request) -> tuple[str, int]:
    raw = request.match_info["partition"]
    # isascii: str.isdigit accepts "³" and other digits int() refuses (found by fuzzing)
    if not (raw.isascii() and raw.isdigit()) or len(raw) > 9:
        raise InvalidRequestError(
            f"partition must be a non-negative integer, not {raw[:20]!r}",
            code=ErrorCode.UNKNOWN_PARTITION if raw.lstrip("-").isdigit() else None,
        )
    return request.match_info["topic"], int(raw)


def _optional_int(request: web.Request, name: str) -> int | None:
    return query_int(request, name) if name in request.query else None


def _wants_binary(request: web.Request) -> bool:
    accept = request.headers.get("Accept", "")
    return any(kind in accept for kind in _BINARY_TYPES)


def _offset_headers(result: FetchResult) -> dict[str, str]:
    headers = {
        HEADER_HIGH_WATERMARK: str(result.high_watermark),
        HEADER_LOG_START_OFFSET: str(result.log_start_offset),
        HEADER_LOG_END_OFFSET: str(result.log_end_offset),
        HEADER_LEADER_EPOCH: str(result.leader_epoch),
        LAST_STABLE_OFFSET_HEADER: str(result.last_stable_offset),
    }
    if result.aborted:
        headers[ABORTED_HEADER] = encode_aborted(_aborted_pairs(result))
    return headers


def _aborted_pairs(result: FetchResult) -> list[tuple[int, int]]:
    return [(a.producer_id, a.first_offset) for a in result.aborted[:ABORTED_IN_HEADER_MAX]]


def _isolation(request: web.Request) -> bool:
    """read_committed? (a typed 400 for anything but the two levels)"""
    value = request.query.get("isolation", "read_uncommitted")
    if value not in ("read_uncommitted", "read_committed"):
        raise InvalidRequestError("isolation must be read_uncommitted or read_committed")
    return value == "read_committed"


def _end_of_batches(data: bytes, offset: int) -> int:
    """The offset after the last whole batch (``offset`` when there is none): the same as
    last record + 1, and still right when the batches hold no visible record."""
    position, end = 0, offset
    while len(data) - position >= 12:
        base_offset, size_bytes = peek_length(data, position)
        if position + size_bytes > len(data):
            break
        # last_offset_delta sits at byte 23 of the header; records_count confirms it.
        end = base_offset + int.from_bytes(data[position + 23 : position + 27], "big") + 1
        position += size_bytes
    return max(end, offset)


def _reset(request: web.Request) -> None:
    """Close with a TCP reset (SO_LINGER 0): a plain close would leave the kernel sending
    the megabytes already queued to a peer that reads a few KiB a second."""
    transport = request.transport
    if transport is None:
        return
    sock = transport.get_extra_info("socket")
    if sock is not None:
        with contextlib.suppress(OSError):
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    transport.abort()


PRODUCE_QUERY: Final = (
    ("acks", "string", "0, 1 or all (default all; -1 means all)"),
    ("timeout_ms", "integer", "acks=all waits at most this long (default 30000)"),
    ("leader_epoch", "integer", "optional fencing: the epoch the client knows"),
    ("isolation", "string", "read_uncommitted (default) or read_committed (below the LSO)"),
)
FETCH_QUERY: Final = (
    ("offset", "integer", "required: first offset wanted"),
    ("max_bytes", "integer", "default 1048576, capped at 16 MiB (1 MiB for JSON)"),
    ("max_wait_ms", "integer", "long-poll up to this long (default 0, capped 30000)"),
    ("leader_epoch", "integer", "optional fencing: the epoch the client knows"),
)
DELETE_RECORDS_QUERY: Final = (
    ("before_offset", "integer", "required: delete every record below it; -1 = high watermark"),
    ("timeout_ms", "integer", "wait at most this long for the in-sync replicas (default 30000)"),
)


class _Handlers:
    """HTTP in, service call, HTTP out; no decisions here."""

    def __init__(self, service: BrokerService) -> None:
        self.service = service

    async def produce(self, request: web.Request) -> web.Response:
        topic, partition = _topic_partition(request)
        acks = parse_acks(request.query.get("acks", "all"))
        timeout_ms = query_int(request, "timeout_ms", 30_000)
        leader_epoch = _optional_int(request, "leader_epoch")
        if is_batch_content(request):
            body = await request.read()
            answer = await self.service.produce(
                topic, partition, body, acks=acks, timeout_ms=timeout_ms, leader_epoch=leader_epoch
            )
        elif request.content_type == "application/json":
            records = await decode_json(request, JsonProduceRequest)
            answer = await self.service.produce_json(
                topic,
                partition,
                records,
                acks=acks,
                timeout_ms=timeout_ms,
                leader_epoch=leader_epoch,
            )
        else:
            raise InvalidRequestError(
                f"Content-Type must be {BATCH_CONTENT_TYPE}, application/octet-stream or "
                f"application/json, not {request.content_type!r}",
                code=ErrorCode.UNSUPPORTED_MEDIA_TYPE,
            )
        return json_response(answer)

    async def fetch(self, request: web.Request) -> web.StreamResponse:
        topic, partition = _topic_partition(request)
        offset = query_int(request, "offset")
        binary = _wants_binary(request)
        max_bytes = query_int(request, "max_bytes", 1024 * 1024)
        if not binary:
            max_bytes = min(max_bytes, JSON_FETCH_BYTES_MAX)
        read_committed = _isolation(request)
        result = await self.service.fetch(
            topic,
            partition,
            offset,
            max_bytes=max_bytes,
            max_wait_ms=query_int(request, "max_wait_ms", 0),
            leader_epoch=_optional_int(request, "leader_epoch"),
            read_committed=read_committed,
        )
        try:
            headers = _offset_headers(result)
            if binary:
                return await self._send(request, result.batches, BATCH_CONTENT_TYPE, headers)
            visible = without_aborted(result.batches, _aborted_pairs(result))
            records = to_fetched(decode_batches(visible, start_offset=offset))
            answer = FetchResponse(
                topic=topic,
                partition=partition,
                high_watermark=result.high_watermark,
                log_start_offset=result.log_start_offset,
                log_end_offset=result.log_end_offset,
                next_offset=_end_of_batches(result.batches, offset),
                records=records,
            )
            body = msgspec.json.encode(answer)
            return await self._send(request, body, "application/json", headers)
        finally:
            self.service.fetch_memory.release(len(result.batches))

    async def _send(
        self, request: web.Request, body: bytes, content_type: str, headers: dict[str, str]
    ) -> web.StreamResponse:
        """Write a fetch answer in chunks, waiting for the socket to drain between them, so
        a consumer that stops reading holds ~2 chunks in the transport instead of a copy of
        the whole answer; past the write deadline its connection is closed."""
        response = web.StreamResponse(headers=headers)
        response.content_type = content_type
        response.content_length = len(body)
        try:
            async with asyncio.timeout(self.service.config.fetch_write_timeout_ms / 1000):
                await response.prepare(request)
                view = memoryview(body)
                for start in range(0, len(body), WRITE_CHUNK_BYTES):
                    await response.write(view[start : start + WRITE_CHUNK_BYTES])
                await response.write_eof()
        except TimeoutError:
            self.service.metrics.slow_consumer_closed()
            log.warning(
                "closed a connection from %s: its fetch answer of %d bytes was not read "
                "within %d ms",
                request.remote,
                len(body),
                self.service.config.fetch_write_timeout_ms,
            )
            _reset(request)
        return response

    async def delete_records(self, request: web.Request) -> web.Response:
        topic, partition = _topic_partition(request)
        answer = await self.service.delete_records(
            topic,
            partition,
            query_int(request, "before_offset"),
            timeout_ms=query_int(request, "timeout_ms", 30_000),
        )
        return json_response(answer)

    async def offsets(self, request: web.Request) -> web.Response:
        topic, partition = _topic_partition(request)
        timestamp_ms = _optional_int(request, "timestamp_ms")
        return json_response(await self.service.offsets(topic, partition, timestamp_ms))

    async def route(self, request: web.Request) -> web.Response:
        topic = request.match_info["topic"]
        acks = parse_acks(request.query.get("acks", "all"))
        timeout_ms = query_int(request, "timeout_ms", 30_000)
        records = await decode_json(request, JsonProduceRequest)
        answer = await self.service.route_json(topic, records, acks=acks, timeout_ms=timeout_ms)
        failed = routed_failure(answer)
        if isinstance(failed, ErrorBody):
            known = ErrorCode.__members__.get(failed.code, ErrorCode.INTERNAL_ERROR)
            return json_response(failed, status=known.http_status)
        return json_response(answer, status=failed)

    async def hosted(self, _: web.Request) -> web.Response:
        return json_response(self.service.hosted())

    async def replica_listener(self, request: web.Request) -> web.Response:
        listener = request.app.get(REPLICA_LISTENER_KEY)
        if listener is None:
            raise RetriableError("the replica listener is not open yet", code=ErrorCode.NOT_READY)
        return json_response(ReplicaListenerAddress(port=listener.port))


MULTI_STATUS: Final = 207


def routed_failure(answer: RoutedProduceResponse) -> ErrorBody | int:
    """The HTTP answer to a routed produce (docs/api.md): 200 when every record was
    written; when every record failed with the same code, that error with its own
    status (413 for a batch over ``max_message_bytes``) as a plain ``ErrorBody``, so a
    client that only checks the status (curl -f) sees the failure; 207 Multi-Status with
    the per-record results when some failed (some written, or different errors)."""
    errors = [r.error for r in answer.results if r.error is not None]
    if not errors:
        return 200
    codes = {e.code for e in errors}
    if len(errors) == len(answer.results) and len(codes) == 1:
        first = errors[0]
        details = dict(first.details or {})
        details["failed_records"] = len(errors)
        return ErrorBody(
            code=first.code, message=first.message, retriable=first.retriable, details=details
        )
    return MULTI_STATUS


def broker_routes(service: BrokerService) -> list[Route]:
    """The broker's routes; exact paths the clients code against (docs/api.md, "Broker API")."""
    handlers = _Handlers(service)
    data = ("data",)
    return [
        Route(
            "POST",
            PARTITION_PATH + "/records",
            handlers.produce,
            "Produce record batches (binary) or JSON records to a partition this broker leads",
            request=JsonProduceRequest,
            response=ProduceResponse,
            binary_request=True,
            query=PRODUCE_QUERY,
            tags=data,
        ),
        Route(
            "GET",
            PARTITION_PATH + "/records",
            handlers.fetch,
            "Fetch whole batches from an offset (binary by Accept, else JSON), long-polling",
            response=FetchResponse,
            binary_response=True,
            query=FETCH_QUERY,
            tags=data,
        ),
        Route(
            "DELETE",
            PARTITION_PATH + "/records",
            handlers.delete_records,
            "Delete the records below an offset (Kafka's DeleteRecords) on the partition's "
            "leader; answers once every in-sync replica's log starts there",
            response=DeletedRecords,
            query=DELETE_RECORDS_QUERY,
            tags=data,
        ),
        Route(
            "GET",
            PARTITION_PATH + "/offsets",
            handlers.offsets,
            "Log start, high watermark, log end; optionally the offset for a timestamp",
            response=PartitionOffsets,
            query=(("timestamp_ms", "integer", "first offset with a timestamp >= this"),),
            tags=data,
        ),
        Route(
            "POST",
            "/v1/topics/{topic}/records",
            handlers.route,
            "Produce JSON records to a topic on any broker: each goes to its key's partition",
            request=JsonProduceRequest,
            response=RoutedProduceResponse,
            query=PRODUCE_QUERY[:2],
            tags=data,
        ),
        Route(
            "GET",
            "/v1/partitions",
            handlers.hosted,
            "The partition replicas this broker hosts",
            response=HostedPartitions,
            tags=("broker",),
        ),
        Route(
            "GET",
            LISTENER_PATH,
            handlers.replica_listener,
            "The port of this broker's replica listener (on the host of its URL), where "
            "followers fetch and ask where epochs end (docs/replication.md)",
            response=ReplicaListenerAddress,
            internal=True,
        ),
        MarkerWriter(
            lambda *args, **kwargs: service.produce(*args, **kwargs),  # noqa: PLW0108 -- service may be None here (OpenAPI)
            lambda: service.clock.now_ms(),  # noqa: PLW0108 -- the same
        ).route(),
        *share_routes(lambda: service.share, lambda topic: service.led_partitions(topic)),  # noqa: PLW0108 -- service may be None here (OpenAPI)
    ]


def build_broker_app(service: BrokerService) -> web.Application:
    app = build_app(
        "broker", broker_routes(service), client_max_size=service.config.request_max_bytes
    )
    app[SERVICE_KEY] = service
    app[NOT_FOUND_HINT_KEY] = (
        f"this is a broker (broker {service.config.broker_id}), not the coordinator; the "
        f"coordinator is at {service.config.coordinator_url}: point CONVEYOR_URL (or --url) "
        "at it"
    )
    app[REQUEST_LIMIT_HINT_KEY] = (
        f"the broker's --request-max-bytes ({service.config.request_max_bytes}) raises it; "
        "each batch is also limited by its topic's max_message_bytes"
    )
    app[_TASKS_KEY] = []
    install_metrics(app, service.metrics)

    async def on_ready() -> None:
        """Registered with the coordinator and reconciled: serve Kafka clients now, as a
        Kafka broker enables request processing once unfenced. Answering before, a broker
        just restarted told clients a cluster without itself in it (the coordinator still
        counted it dead), and librdkafka dropped every broker it knew, the group
        coordinator included (docs/testing.md, Flaky tests)."""
        listener = app.get(KAFKA_LISTENER_KEY)
        if listener is not None:
            await listener.serve()
        set_ready(app)

    heartbeat = Heartbeat(service.heartbeat_link(), on_ready=on_ready, start=service.start)

    async def on_startup(_: web.Application) -> None:
        await _start_replica_listener(app, service)
        await _start_kafka(app, service)
        tasks = app[_TASKS_KEY]
        tasks.append(asyncio.create_task(heartbeat.run(), name="heartbeat"))
        tasks.append(asyncio.create_task(service.retention_loop(), name="retention"))
        tasks.append(asyncio.create_task(service.share.manager.run(), name="share-groups"))
        for task in tasks:
            task.add_done_callback(_log_task_end)

    async def on_shutdown(_: web.Application) -> None:
        service.begin_shutdown()
        listener = app.get(KAFKA_LISTENER_KEY)
        if listener is not None:
            await listener.close()
        replica_listener = app.get(REPLICA_LISTENER_KEY)
        if replica_listener is not None:
            await replica_listener.close()

    async def on_cleanup(_: web.Application) -> None:
        for task in app[_TASKS_KEY]:
            task.cancel()
        for task in app[_TASKS_KEY]:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        await service.close()
        log.info("broker %d stopped: logs closed and flushed", service.broker_id)

    app.on_startup.append(on_startup)
    app.on_shutdown.append(on_shutdown)
    app.on_cleanup.append(on_cleanup)
    return app


async def _start_kafka(app: web.Application, service: BrokerService) -> None:
    """The Kafka listener (on by default; ``kafka_listen = off``: none), with the same
    TLS context as HTTPS: its port bound at start (a port in use stops the broker here),
    its address reported in every heartbeat from the first, its connections served from
    the first heartbeat the coordinator answered (``on_ready``)."""
    settings = service.config.kafka
    if settings is None:
        return
    from conveyor.broker.kafka.listener import start_listener
    from conveyor.transport.secure import SSL_CONTEXT_KEY

    listener, bound = await start_listener(service, settings, app.get(SSL_CONTEXT_KEY))
    service.kafka_address = bound.advertise
    log.info(
        "kafka listener bound on %s:%d, advertised as %s: serving once registered",
        bound.listen_host,
        bound.listen_port,
        bound.advertise,
    )
    app[KAFKA_LISTENER_KEY] = listener
    service.metrics.kafka_listener = listener


async def _start_replica_listener(app: web.Application, service: BrokerService) -> None:
    """Followers' fetches, on the replica protocol (broker/replica_listener.py): the same
    TLS context as HTTPS, and the same rule for who may use it as the internal routes."""
    from conveyor.transport.auth import AUTH_KEY
    from conveyor.transport.secure import SSL_CONTEXT_KEY

    config = service.config
    auth = app.get(AUTH_KEY)
    auth_enabled = auth is not None and auth.settings.enabled
    access = ReplicaAccess(
        auth_enabled=auth_enabled,
        cluster_secret=config.cluster_secret,
        client_cert_required=config.tls.enabled
        and (config.tls.internal_mtls or config.tls.require_client_cert),
        client_cert_accepted=config.tls.internal_mtls,
    )
    context = app.get(SSL_CONTEXT_KEY) if config.tls.enabled else None
    listener = ReplicaListener(service.replica_server, access, service.broker_id, context)
    await listener.start(config.replica_listen_host, config.replica_port)
    app[REPLICA_LISTENER_KEY] = listener


def _log_task_end(task: asyncio.Task[None]) -> None:
    if task.cancelled():
        return
    exc = task.exception()
    if exc is not None:
        log.critical("background task %s died: %r", task.get_name(), exc, exc_info=exc)
