"""The HTTP adapter kit: a typed route table, error translation, health, OpenAPI.

Services keep their logic transport-independent (methods taking decoded requests and
returning responses); this module turns HTTP into those calls and back. Every route is
declared once as a :class:`Route` with its request and response types; the OpenAPI
document at ``/openapi.json`` is generated from that table, and so is any check that every
endpoint is covered (the security issue enumerates endpoints from it).
"""

from __future__ import annotations

import json
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, TypeVar

import msgspec
from aiohttp import web

from conveyor._version import __version__
from conveyor.protocol.errors import ConveyorError, ErrorCode, InvalidRequestError
from conveyor.protocol.messages import BATCH_CONTENT_TYPE, ErrorBody, Health, HealthStatus

log = logging.getLogger(__name__)

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
T = TypeVar("T")

_ENCODER = msgspec.json.Encoder()
ROUTES_KEY = web.AppKey("conveyor_routes", list)
READY_KEY = web.AppKey("conveyor_ready", dict)


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
    body = ErrorBody(
        code=error.code.name,
        message=error.message,
        retriable=error.retriable,
        details=error.details or None,
    )
    return json_response(body, status=error.code.http_status)


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


@web.middleware
async def error_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Every error leaves as ``ErrorBody`` with its code's HTTP status; nothing else leaks."""
    try:
        return await handler(request)
    except ConveyorError as exc:
        if exc.code.http_status >= 500:
            log.warning("%s %s failed: %s", request.method, request.path, exc)
        return error_response(exc)
    except web.HTTPException as exc:
        if exc.status < 400:
            raise
        code = {
            404: ErrorCode.INVALID_REQUEST,
            405: ErrorCode.INVALID_REQUEST,
            413: ErrorCode.MESSAGE_TOO_LARGE,
            415: ErrorCode.UNSUPPORTED_MEDIA_TYPE,
        }.get(exc.status, ErrorCode.INVALID_REQUEST)
        body = ErrorBody(code=code.name, message=exc.reason or str(exc), retriable=False)
        return json_response(body, status=exc.status)


def build_app(
    service: str, routes: list[Route], *, client_max_size: int = 8 * 1024 * 1024
) -> web.Application:
    """An aiohttp application with the error middleware, health, readiness and OpenAPI."""
    app = web.Application(middlewares=[error_middleware], client_max_size=client_max_size)
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

    all_routes = [
        Route("GET", "/healthz", healthz, "Liveness: the process answers", response=Health),
        Route(
            "GET", "/readyz", readyz, "Readiness: 200 once serving, 503 otherwise", response=Health
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
