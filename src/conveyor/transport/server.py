"""The HTTP adapter kit: a typed route table, error translation, health, OpenAPI.

Services keep their logic transport-independent (methods taking decoded requests and
returning responses); this module turns HTTP into those calls and back. Every route is
declared once as a :class:`Route` with its request and response types; the OpenAPI
document at ``/openapi.json`` is generated from that table, and so is any check that every
endpoint is covered (the security issue enumerates endpoints from it).
"""

from __future__ import annotations

import asyncio
import hmac
import json
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, Final, TypeVar

import msgspec
from aiohttp import web
from aiohttp.typedefs import Middleware

from conveyor._version import __version__
from conveyor.protocol.errors import (
    AuthenticationError,
    ConveyorError,
    ErrorCode,
    InvalidRequestError,
)
from conveyor.protocol.messages import BATCH_CONTENT_TYPE, ErrorBody, Health, HealthStatus
from conveyor.transport.access import request_id_middleware
from conveyor.transport.metrics import (
    HTTP_METRICS_KEY,
    METRICS_PATH,
    REGISTRY_KEY,
    HttpMetrics,
    metrics_response,
    new_registry,
    route_template,
)

log = logging.getLogger(__name__)

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
T = TypeVar("T")

_ENCODER = msgspec.json.Encoder()
ROUTES_KEY = web.AppKey("conveyor_routes", list)
READY_KEY = web.AppKey("conveyor_ready", dict)
SERVICE_KEY_NAME = web.AppKey("conveyor_service_name", str)
# What a request for a path this service does not serve is told besides "no such route"
# (a broker says it is not the coordinator, and where the coordinator is).
NOT_FOUND_HINT_KEY = web.AppKey("conveyor_not_found_hint", str)
# The scrape token ``GET /metrics`` requires when set (CONVEYOR_METRICS_TOKEN).
METRICS_TOKEN_KEY = web.AppKey("conveyor_metrics_token", str)
# Which setting raises the request body limit (a 413 says it).
REQUEST_LIMIT_HINT_KEY = web.AppKey("conveyor_request_limit_hint", str)


@dataclass(frozen=True, slots=True)
class Route:
    method: str
    path: str
    handler: Handler
    summary: str
    request: type | None = None  # JSON body type, for the OpenAPI document
    response: type | None = None
    binary_request: bool = False  # also accepts a record-batch body
    binary_response: bool = False  # can answer with record batches (by Accept)
    internal: bool = False  # cluster-internal (heartbeats, replication): closed to clients
    query: tuple[tuple[str, str, str], ...] = ()  # (name, type, description)
    tags: tuple[str, ...] = field(default_factory=tuple)


def json_response(
    body: msgspec.Struct | list[Any] | dict[str, Any], status: int = 200
) -> web.Response:
    return web.Response(body=_ENCODER.encode(body), status=status, content_type="application/json")


def error_response(error: ConveyorError) -> web.Response:
    """The error's ``ErrorBody`` with its code's status; a ``retry_after_ms`` detail (429
    ``THROTTLED``) is also sent as ``Retry-After`` (whole seconds, rounded up)."""
    body = ErrorBody(
        code=error.code.name,
        message=error.message,
        retriable=error.retriable,
        details=error.details or None,
    )
    response = json_response(body, status=error.code.http_status)
    retry_after_ms = error.details.get("retry_after_ms")
    if isinstance(retry_after_ms, int) and retry_after_ms > 0:
        response.headers["Retry-After"] = str(-(-retry_after_ms // 1000))
    return response


async def decode_json(request: web.Request, kind: type[T]) -> T:
    """Decode a JSON body into ``kind``: 415 for another content type, 400 when malformed."""
    if request.content_type != "application/json":
        raise InvalidRequestError(
            f"expected Content-Type application/json, got {request.content_type!r}",
            code=ErrorCode.UNSUPPORTED_MEDIA_TYPE,
        )
    raw = await request.read()
    try:
        return msgspec.json.decode(raw, type=kind)
    except msgspec.ValidationError as exc:
        raise InvalidRequestError(f"invalid {kind.__name__}: {exc}") from exc
    except msgspec.DecodeError as exc:
        raise InvalidRequestError(f"malformed JSON: {exc}") from exc


def is_batch_content(request: web.Request) -> bool:
    return request.content_type in (BATCH_CONTENT_TYPE, "application/octet-stream")


def query_int(request: web.Request, name: str, default: int | None = None) -> int:
    raw = request.query.get(name)
    if raw is None:
        if default is None:
            raise InvalidRequestError(f"query parameter {name!r} is required")
        return default
    try:
        return int(raw)
    except ValueError:
        raise InvalidRequestError(
            f"query parameter {name!r} must be an integer, not {raw!r}"
        ) from None


_HTTP_ERROR_CODES = {
    404: ErrorCode.INVALID_REQUEST,
    405: ErrorCode.INVALID_REQUEST,
    413: ErrorCode.MESSAGE_TOO_LARGE,
    415: ErrorCode.UNSUPPORTED_MEDIA_TYPE,
}


def http_error_code(status: int) -> ErrorCode:
    """The code an aiohttp HTTP error (404 no route, 413 body too large, ...) leaves with."""
    return _HTTP_ERROR_CODES.get(status, ErrorCode.INVALID_REQUEST)


# A write to a client that has gone (it closed its connection during a long poll, or was
# killed): a normal event, not an error of ours (nginx's 499).
CLIENT_GONE: Final = (ConnectionResetError, BrokenPipeError)
CLIENT_GONE_STATUS: Final = 499


@web.middleware
async def error_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Every error leaves as ``ErrorBody`` with its code's HTTP status; nothing else leaks.
    A client that went away is logged at DEBUG, not as aiohttp's ERROR traceback."""
    try:
        return await handler(request)
    except CLIENT_GONE as exc:
        log.debug(
            "%s %s from %s: the client went away (%s)",
            request.method,
            request.path,
            request.remote,
            exc,
        )
        return web.Response(status=CLIENT_GONE_STATUS)  # aiohttp writes nothing more
    except ConveyorError as exc:
        if exc.code.http_status >= 500:
            log.warning("%s %s failed: %s", request.method, request.path, exc)
        return error_response(exc)
    except web.HTTPException as exc:
        if exc.status < 400:
            raise
        code = http_error_code(exc.status)
        message = exc.reason or str(exc)
        details: dict[str, Any] | None = None
        if exc.status == 404 and request.match_info.route.resource is None:  # no route
            service = request.app.get(SERVICE_KEY_NAME, "service")
            message = f"no route {request.method} {request.path} on this {service}"
            hint = request.app.get(NOT_FOUND_HINT_KEY)
            if hint:
                message += f": {hint}"
            details = {"service": service}
        elif exc.status == 413:  # the body is over the app's client_max_size
            limit = request.app.get(REQUEST_LIMIT_HINT_KEY, "")
            message = f"{exc.text or message}{': ' + limit if limit else ''}"
        body = ErrorBody(code=code.name, message=message, retriable=False, details=details)
        return json_response(body, status=exc.status)


def metrics_middleware(metrics: HttpMetrics) -> Middleware:
    """Count and time every request by route template, with its error code. Runs inside
    ``error_middleware``, so it sees the typed error before it becomes a response."""

    @web.middleware
    async def middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
        if metrics.open_connections() is None:
            metrics.watch_connections(request)
        started = time.perf_counter()
        status: int = 500  # a bug: aiohttp answers 500
        code: str | None = ErrorCode.INTERNAL_ERROR.name
        metrics.in_flight.inc()
        try:
            response = await handler(request)
            status, code = response.status, None
            return response
        except ConveyorError as exc:
            status, code = exc.code.http_status, exc.code.name
            raise
        except web.HTTPException as exc:
            status, code = (
                exc.status,
                None if exc.status < 400 else http_error_code(exc.status).name,
            )
            raise
        except (asyncio.CancelledError, *CLIENT_GONE):
            status, code = CLIENT_GONE_STATUS, None  # the client went away: not our error
            raise
        finally:
            metrics.in_flight.dec()
            seconds = time.perf_counter() - started
            metrics.observe(request, route_template(request), status, code, seconds)

    return middleware


def build_app(
    service: str, routes: list[Route], *, client_max_size: int = 8 * 1024 * 1024
) -> web.Application:
    """An aiohttp application with the error and metrics middlewares, health, readiness,
    ``/metrics`` (its own registry: see ``transport/metrics.py``) and OpenAPI."""
    registry, http_metrics = new_registry(service)
    app = web.Application(
        middlewares=[request_id_middleware, error_middleware, metrics_middleware(http_metrics)],
        client_max_size=client_max_size,
    )
    app[REGISTRY_KEY] = registry
    app[HTTP_METRICS_KEY] = http_metrics
    app[SERVICE_KEY_NAME] = service
    ready: dict[str, bool] = {"ready": False, "stopping": False}
    app[READY_KEY] = ready

    async def healthz(_: web.Request) -> web.Response:
        status: HealthStatus = "stopping" if ready["stopping"] else "ok"
        return json_response(Health(status=status, service=service, version=__version__))

    async def readyz(_: web.Request) -> web.Response:
        if ready["ready"] and not ready["stopping"]:
            return json_response(Health(status="ok", service=service, version=__version__))
        status: HealthStatus = "stopping" if ready["stopping"] else "starting"
        body = Health(status=status, service=service, version=__version__)
        return json_response(body, status=503)

    async def prometheus_metrics(request: web.Request) -> web.Response:
        token = request.app.get(METRICS_TOKEN_KEY)
        if token is not None and not bearer_matches(request, token):
            raise AuthenticationError(
                "/metrics needs the scrape token: Authorization: Bearer <CONVEYOR_METRICS_TOKEN>"
            )
        return metrics_response(registry)

    all_routes = [
        Route("GET", "/healthz", healthz, "Liveness: the process answers", response=Health),
        Route(
            "GET", "/readyz", readyz, "Readiness: 200 once serving, 503 otherwise", response=Health
        ),
        Route(
            "GET",
            METRICS_PATH,
            prometheus_metrics,
            "Prometheus metrics, text exposition format (docs/monitoring.md)",
            tags=("monitoring",),
        ),
        *routes,
    ]

    async def openapi(_: web.Request) -> web.Response:
        return web.Response(
            text=json.dumps(openapi_document(service, all_routes)), content_type="application/json"
        )

    all_routes.append(Route("GET", "/openapi.json", openapi, "This OpenAPI document"))
    for route in all_routes:
        app.router.add_route(route.method, route.path, route.handler)
    app[ROUTES_KEY] = all_routes

    async def on_shutdown(_: web.Application) -> None:
        ready["stopping"] = True

    app.on_shutdown.append(on_shutdown)
    return app


def bearer_matches(request: web.Request, token: str) -> bool:
    """The request carries ``Authorization: Bearer <token>`` (compared in constant time)."""
    scheme, _, value = request.headers.get("Authorization", "").partition(" ")
    return scheme.lower() == "bearer" and hmac.compare_digest(
        value.strip().encode(), token.encode()
    )


def set_ready(app: web.Application, ready: bool = True) -> None:
    app[READY_KEY]["ready"] = ready


def _operation_id(route: Route) -> str:
    path = route.path.strip("/").replace("/", "_").replace("{", "").replace("}", "")
    return f"{route.method.lower()}_{path}"


def openapi_document(service: str, routes: list[Route]) -> dict[str, Any]:
    """OpenAPI 3.1 from the route table and the msgspec types it names."""
    types = {t for r in routes for t in (r.request, r.response) if t is not None}
    types.add(ErrorBody)
    ordered = sorted(types, key=lambda t: t.__name__)
    refs, components = msgspec.json.schema_components(
        ordered, ref_template="#/components/schemas/{name}"
    )
    ref_of = dict(zip(ordered, refs, strict=True))
    error_ref = {"application/json": {"schema": ref_of[ErrorBody]}}
    paths: dict[str, dict[str, Any]] = {}
    for route in routes:
        operation: dict[str, Any] = {
            "summary": route.summary,
            "operationId": _operation_id(route),
            "responses": {"default": {"description": "error", "content": error_ref}},
        }
        if route.internal:
            operation["tags"] = ["internal"]
        elif route.tags:
            operation["tags"] = list(route.tags)
        parameters = [
            {"name": name.strip("{}"), "in": "path", "required": True, "schema": {"type": "string"}}
            for name in route.path.split("/")
            if name.startswith("{")
        ]
        parameters += [
            {
                "name": name,
                "in": "query",
                "required": False,
                "schema": {"type": kind},
                "description": text,
            }
            for name, kind, text in route.query
        ]
        if parameters:
            operation["parameters"] = parameters
        content: dict[str, Any] = {}
        if route.request is not None:
            content["application/json"] = {"schema": ref_of[route.request]}
        if route.binary_request:
            content[BATCH_CONTENT_TYPE] = {"schema": {"type": "string", "format": "binary"}}
        if content:
            operation["requestBody"] = {"required": True, "content": content}
        ok: dict[str, Any] = {"description": "success"}
        ok_content: dict[str, Any] = {}
        if route.response is not None:
            ok_content["application/json"] = {"schema": ref_of[route.response]}
        if route.binary_response:
            ok_content[BATCH_CONTENT_TYPE] = {"schema": {"type": "string", "format": "binary"}}
        if ok_content:
            ok["content"] = ok_content
        operation["responses"]["200"] = ok
        paths.setdefault(route.path, {})[route.method.lower()] = operation
    return {
        "openapi": "3.1.0",
        "info": {"title": f"Conveyor {service}", "version": __version__},
        "paths": paths,
        "components": {"schemas": components},
    }
