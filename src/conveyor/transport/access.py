"""Request ids and the access log.

Every HTTP request gets an id: the client's ``X-Request-Id`` when it is a sane token (up
to 128 characters of ``A-Za-z0-9._:-``), else a new random one. It is echoed in the
response's ``X-Request-Id``, kept on the request, and set in ``logs.REQUEST_ID`` while the
request is handled, so every line logged on its behalf carries ``request_id``.

The access log (``--access-log``, off by default) is one INFO line per request on the
``conveyor.access`` logger, written by aiohttp once the response is sent (so ``bytes`` is
what went out): method, path (never the query string), status, bytes, duration_ms,
principal (``-`` before authentication or with auth off), remote address, request_id.
Never a header: credentials travel in ``Authorization``.
"""

from __future__ import annotations

import itertools
import logging
import re
import secrets
from collections.abc import Awaitable, Callable
from typing import Final

from aiohttp import web
from aiohttp.abc import AbstractAccessLogger

from conveyor.transport.logs import REQUEST_ID

REQUEST_ID_HEADER: Final = "X-Request-Id"
REQUEST_ID_KEY: Final = web.RequestKey("conveyor_request_id", str)
ACCESS_LOGGER: Final = "conveyor.access"
# Set by a service's command line when --access-log is on (transport/listener.py reads it).
ACCESS_LOG_KEY: Final = web.AppKey("conveyor_access_log", bool)
_SANE_ID = re.compile(r"[A-Za-z0-9._:-]{1,128}")


# A new id is this process's random prefix and a counter: unique across processes and
# requests without a getrandom(2) call per request (profiled: 2 % of a commit's CPU).
_ID_PREFIX: Final = secrets.token_hex(4)
_id_counter = itertools.count(1)


def request_id_for(given: str | None) -> str:
    """The client's id when it is sane (it ends up in logs), else a new one."""
    if given is not None and _SANE_ID.fullmatch(given):
        return given
    return f"{_ID_PREFIX}{next(_id_counter):08x}"


@web.middleware
async def request_id_middleware(
    request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
) -> web.StreamResponse:
    request_id = request_id_for(request.headers.get(REQUEST_ID_HEADER))
    request[REQUEST_ID_KEY] = request_id
    token = REQUEST_ID.set(request_id)
    try:
        try:
            response = await handler(request)
        except web.HTTPException as exc:
            exc.headers[REQUEST_ID_HEADER] = request_id
            raise
        if not response.prepared:  # a streamed answer has sent its headers already
            response.headers[REQUEST_ID_HEADER] = request_id
        return response
    finally:
        REQUEST_ID.reset(token)


class AccessLogger(AbstractAccessLogger):
    """aiohttp's hook, called after each response is written."""

    def log(self, request: web.BaseRequest, response: web.StreamResponse, time: float) -> None:
        from conveyor.transport.auth import PRINCIPAL_KEY

        self.logger.info(
            "%s %s %d",
            request.method,
            request.path,
            response.status,
            extra={
                "method": request.method,
                "path": request.path,
                "status": response.status,
                "bytes": response.body_length,
                "duration_ms": round(time * 1000, 3),
                "principal": request.get(PRINCIPAL_KEY) or "-",
                "remote": request.remote or "-",
                "request_id": request.get(REQUEST_ID_KEY) or "-",
            },
        )


def access_logger(app: web.Application) -> logging.Logger | None:
    """``web.AppRunner``'s ``access_log`` (with ``access_log_class=AccessLogger``): the
    access log's logger when the app asks for it, else None (off)."""
    if not app.get(ACCESS_LOG_KEY, False):
        return None
    logger = logging.getLogger(ACCESS_LOGGER)
    logger.setLevel(logging.INFO)  # asked for explicitly: shown even at --log-level WARNING
    return logger
