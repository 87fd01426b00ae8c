"""The console's web plumbing: sessions from cookies, CSRF, permissions, rendering,
security headers, static assets, and errors as pages.

Every console handler is wrapped by :meth:`Console.page` (GET) or :meth:`Console.action`
(POST: CSRF-checked first). Both resolve the session (auth on: none -> the sign-in page;
auth off: an anonymous session is made on the first visit, so that POSTs have a CSRF token
too), build the user's :class:`ClusterAPI` and :class:`Permissions`, and turn the API's
typed errors into a page with the same HTTP status (a 403 from the API is a 403 here).
"""

from __future__ import annotations

import hashlib
import importlib.resources
import logging
import mimetypes
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, Final
from urllib.parse import quote, urlsplit

import jinja2
from aiohttp import web

from conveyor._version import __version__
from conveyor.console import format as fmt
from conveyor.console.api import Caller, ClusterAPI, ConsoleHTTP
from conveyor.console.permissions import Permissions
from conveyor.console.sessions import Session, SessionTable, SignIn, csrf_ok
from conveyor.console.settings import ConsoleSettings
from conveyor.protocol.errors import ConveyorError, ErrorCode
from conveyor.protocol.security import CLUSTER_PRINCIPAL, WhoAmI
from conveyor.transport.coordinators import CoordinatorSet
from conveyor.transport.limits import peer_address

log = logging.getLogger(__name__)

PREFIX: Final = "/console"
COOKIE: Final = "conveyor_console"
THEME_COOKIE: Final = "conveyor_theme"
CSRF_HEADER: Final = "X-CSRF-Token"
CSRF_FIELD: Final = "csrf_token"
PERMISSIONS_TTL_MS: Final = 5_000
FLASH_MAX: Final = 10_000
FORM_BYTES_MAX: Final = 2 * 1024 * 1024
# No inline script or style anywhere: a value that slipped through escaping still could
# not run. htmx is configured (base.html) not to evaluate or inject anything.
CSP: Final = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
    "connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'"
)
SECURITY_HEADERS: Final = {
    "Content-Security-Policy": CSP,
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "X-Frame-Options": "DENY",
    "Cache-Control": "no-store",
}


def now_ms() -> int:
    return time.time_ns() // 1_000_000


@dataclass
class Ctx:
    """One request of a signed-in user."""

    console: Console
    request: web.Request
    session: Session
    session_id: str
    api: ClusterAPI
    perms: Permissions
    new_cookie: bool = False
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def htmx(self) -> bool:
        return self.request.headers.get("HX-Request") == "true"

    def render(self, template: str, status: int = 200, **values: Any) -> web.Response:
        return self.console.render(self, template, status, **values)

    def redirect(self, path: str, flash: str | None = None) -> web.Response:
        if flash:
            self.console.flash(self.session, flash)
        response = web.Response(status=303, headers={"Location": path})
        return self.console.finish(self, response)

    async def form(self) -> dict[str, str]:
        data = await self.request.post()
        return {k: v for k, v in data.items() if isinstance(v, str)}


Handler = Callable[[Ctx], Awaitable[web.StreamResponse]]


class Console:
    """``forwarding_key`` signs each user's browser address on their calls (the services
    key their failed-password limit by it: ``transport/forwarded.py``)."""

    def __init__(
        self,
        settings: ConsoleSettings,
        http: ConsoleHTTP,
        auth_enabled: bool,
        forwarding_key: bytes | None = None,
    ) -> None:
        self.settings = settings
        self.http = http
        self.auth_enabled = auth_enabled
        self.forwarding_key = forwarding_key
        # the coordinator this console runs in, and the active one once a standby names it
        self.coordinators = CoordinatorSet([settings.api_url])
        self.sessions = SessionTable(
            settings.session_idle_ms, settings.session_lifetime_ms, settings.sessions_max
        )
        self._permissions: dict[str, tuple[int, Permissions]] = {}
        self._flashes: dict[str, list[str]] = {}
        self.env = jinja2.Environment(
            loader=jinja2.PackageLoader("conveyor.console", "templates"),
            autoescape=True,
            undefined=jinja2.StrictUndefined,
            trim_blocks=True,
            lstrip_blocks=True,
        )
        self.env.filters.update(fmt.FILTERS)
        self.static = load_static()
        self.static_version = hashlib.sha256(
            b"".join(body for body, _ in self.static.values())
        ).hexdigest()[:12]

    # ---- sessions ------------------------------------------------------------------------

    def api_for(self, authorization: str | None, request: web.Request | None = None) -> ClusterAPI:
        """The API as the user of ``request`` (their credentials; their address)."""
        address = peer_address((request.remote,)) if request is not None else None
        caller = Caller(authorization, address, self.forwarding_key)
        return ClusterAPI(self.http, self.settings.api_url, caller, self.coordinators)

    async def permissions(self, session: Session, api: ClusterAPI) -> Permissions:
        key = session.csrf_token
        cached = self._permissions.get(key)
        now = now_ms()
        if cached is not None and now - cached[0] < PERMISSIONS_TTL_MS:
            return cached[1]
        if not self.auth_enabled:
            perms = Permissions(session.principal, False)
        else:
            perms = Permissions.of(await api.whoami())
        if len(self._permissions) >= FLASH_MAX:
            self._permissions.clear()
        self._permissions[key] = (now, perms)
        return perms

    def sign_in(self, whoami: WhoAmI, authorization: str | None, how: str) -> tuple[str, Session]:
        if whoami.principal == CLUSTER_PRINCIPAL:
            raise ConveyorError(
                "the cluster secret is the services' identity: sign in as a user or with a token",
                code=ErrorCode.FORBIDDEN,
            )
        sign_in: SignIn = "token" if how == "token" else "password"
        return self.sessions.create(whoami.principal, authorization, sign_in, now_ms())

    def flash(self, session: Session, text: str) -> None:
        if len(self._flashes) >= FLASH_MAX:
            self._flashes.clear()
        self._flashes.setdefault(session.csrf_token, []).append(text)

    def take_flashes(self, session: Session) -> list[str]:
        return self._flashes.pop(session.csrf_token, [])

    async def context(self, request: web.Request) -> Ctx | web.Response:
        session_id = request.cookies.get(COOKIE, "")
        session = self.sessions.get(session_id, now_ms())
        new_cookie = False
        if session is None:
            if self.auth_enabled:
                return self.to_sign_in(request, expired=bool(session_id))
            if request.method != "GET":
                raise ConveyorError("no console session: reload the page", code=ErrorCode.FORBIDDEN)
            session_id, session = self.sessions.create("anonymous", None, "anonymous", now_ms())
            new_cookie = True
        api = self.api_for(session.authorization, request)
        perms = await self.permissions(session, api)
        return Ctx(self, request, session, session_id, api, perms, new_cookie)

    def to_sign_in(self, request: web.Request, expired: bool = False) -> web.Response:
        target = request.path_qs if request.method == "GET" else PREFIX + "/"
        location = f"{PREFIX}/login?next={quote(target, safe='')}"
        if expired:
            location += "&expired=1"
        if request.headers.get("HX-Request") == "true":  # htmx: navigate the whole page
            response = web.Response(status=401, headers={"HX-Redirect": location})
        else:
            response = web.Response(status=303, headers={"Location": location})
        response.headers.update(SECURITY_HEADERS)
        return response

    # ---- wrappers ------------------------------------------------------------------------

    def page(self, handler: Handler) -> Callable[[web.Request], Awaitable[web.StreamResponse]]:
        async def wrapped(request: web.Request) -> web.StreamResponse:
            return await self._run(request, handler, check_csrf=False)

        return wrapped

    def action(self, handler: Handler) -> Callable[[web.Request], Awaitable[web.StreamResponse]]:
        async def wrapped(request: web.Request) -> web.StreamResponse:
            return await self._run(request, handler, check_csrf=True)

        return wrapped

    async def _run(
        self, request: web.Request, handler: Handler, check_csrf: bool
    ) -> web.StreamResponse:
        try:
            ctx = await self.context(request)
        except ConveyorError as exc:
            if exc.code is ErrorCode.UNAUTHENTICATED and self.auth_enabled:
                # The credentials stopped working (token revoked or expired, password
                # changed): the session ends here.
                self.sessions.drop(request.cookies.get(COOKIE))
                return self.to_sign_in(request, expired=True)
            return self.error_page(request, None, exc)
        if isinstance(ctx, web.Response):
            return ctx
        try:
            if check_csrf:
                await self.check_csrf(ctx)
            return await handler(ctx)
        except ConveyorError as exc:
            if exc.code is ErrorCode.UNAUTHENTICATED and self.auth_enabled:
                self.sessions.drop(ctx.session_id)
                return self.to_sign_in(request, expired=True)
            return self.error_page(request, ctx, exc)

    async def check_csrf(self, ctx: Ctx) -> None:
        request = ctx.request
        origin = request.headers.get("Origin")
        if origin and origin != "null" and urlsplit(origin).netloc != request.host:
            raise ConveyorError(
                f"cross-origin request from {origin[:100]}", code=ErrorCode.FORBIDDEN
            )
        submitted = request.headers.get(CSRF_HEADER)
        if submitted is None and request.content_type in (
            "application/x-www-form-urlencoded",
            "multipart/form-data",
        ):
            form = await request.post()
            value = form.get(CSRF_FIELD)
            submitted = value if isinstance(value, str) else None
        if not csrf_ok(ctx.session, submitted):
            log.warning(
                "console: %s %s refused: CSRF token missing or wrong (principal %s)",
                request.method,
                request.path,
                ctx.session.principal,
            )
            raise ConveyorError(
                "missing or wrong CSRF token: reload the page and try again",
                code=ErrorCode.FORBIDDEN,
            )

    # ---- rendering -----------------------------------------------------------------------

    def common(self, request: web.Request, session: Session | None) -> dict[str, Any]:
        theme = request.cookies.get(THEME_COOKIE, "")
        return {
            "prefix": PREFIX,
            "version": __version__,
            "static_version": self.static_version,
            "theme": theme if theme in ("light", "dark") else "",
            "auth_enabled": self.auth_enabled,
            "session": session,
            "csrf": session.csrf_token if session is not None else "",
            "poll_ms": self.settings.poll_interval_ms,
            "path": request.path,
            "flashes": [],
            "page": "",
        }

    def render(self, ctx: Ctx, template: str, status: int = 200, **values: Any) -> web.Response:
        data = self.common(ctx.request, ctx.session)
        data.update(perms=ctx.perms, htmx=ctx.htmx, flashes=self.take_flashes(ctx.session))
        data.update(values)
        body = self.env.get_template(template).render(**data)
        response = web.Response(text=body, status=status, content_type="text/html")
        return self.finish(ctx, response)

    def finish(self, ctx: Ctx, response: web.Response) -> web.Response:
        response.headers.update(SECURITY_HEADERS)
        if ctx.new_cookie:
            self.set_session_cookie(response, ctx.session_id)
        return response

    def set_session_cookie(self, response: web.StreamResponse, session_id: str) -> None:
        response.set_cookie(
            COOKIE,
            session_id,
            path=PREFIX,
            httponly=True,
            samesite="Strict",
            secure=self.settings.secure_cookies,
        )

    def render_plain(
        self, request: web.Request, template: str, status: int = 200, **values: Any
    ) -> web.Response:
        """A page outside a session (sign-in)."""
        data = self.common(request, None)
        data.update(values)
        body = self.env.get_template(template).render(**data)
        response = web.Response(text=body, status=status, content_type="text/html")
        response.headers.update(SECURITY_HEADERS)
        return response

    def error_page(self, request: web.Request, ctx: Ctx | None, exc: ConveyorError) -> web.Response:
        status = exc.code.http_status
        message = exc.message
        if exc.code is ErrorCode.NOT_COORDINATOR:
            # Every coordinator's API said so for a few seconds (an election): for a
            # browser that is "unavailable, retry", not the API's 421 "misdirected".
            status = 503
            message = f"No coordinator is active right now; reload in a few seconds. ({message})"
        if status >= 500:
            log.warning("console: %s %s failed: %s", request.method, request.path, exc)
        values = {"error": exc, "code": exc.code.name, "message": message, "http_status": status}
        if ctx is None:
            return self.render_plain(
                request, "error.html", status, perms=None, htmx=False, **values
            )
        return self.render(ctx, "error.html", status, **values)

    # ---- static --------------------------------------------------------------------------

    async def static_file(self, request: web.Request) -> web.Response:
        name = request.match_info["name"]
        found = self.static.get(name)
        if found is None:
            raise web.HTTPNotFound()
        body, content_type = found
        headers = dict(SECURITY_HEADERS)
        headers["Cache-Control"] = "public, max-age=31536000, immutable"  # URLs carry ?v=
        return web.Response(body=body, content_type=content_type, headers=headers)


def load_static() -> dict[str, tuple[bytes, str]]:
    """Every file of ``static/``, read once (they ship in the wheel; no network)."""
    out: dict[str, tuple[bytes, str]] = {}
    for item in importlib.resources.files("conveyor.console").joinpath("static").iterdir():
        if item.is_file() and not item.name.startswith("."):
            content_type = mimetypes.guess_type(item.name)[0] or "application/octet-stream"
            out[item.name] = (item.read_bytes(), content_type)
    return out
