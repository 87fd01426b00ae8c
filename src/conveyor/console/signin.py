"""Signing in (user and password, or an API token) and out."""

from __future__ import annotations

import hmac
from typing import Final

from aiohttp import web

from conveyor.console.core import COOKIE, PREFIX, SECURITY_HEADERS, Console, Ctx
from conveyor.console.sessions import new_secret
from conveyor.protocol.errors import ConveyorError, ErrorCode
from conveyor.transport.auth import authorization_header

LOGIN_COOKIE: Final = "conveyor_console_login"


def safe_next(raw: str) -> str:
    """Where to go after signing in: a console path only (no open redirect)."""
    if raw.startswith(PREFIX + "/") and not raw.startswith("//") and "\\" not in raw:
        return raw
    return PREFIX + "/"


class SignIn:
    def __init__(self, console: Console) -> None:
        self.console = console

    async def form(
        self,
        request: web.Request,
        status: int = 200,
        error: str | None = None,
        next_path: str | None = None,
    ) -> web.StreamResponse:
        console = self.console
        if not console.auth_enabled:
            raise web.HTTPSeeOther(PREFIX + "/")
        # Login CSRF: a random value in an HttpOnly, SameSite=Strict cookie and in the form
        # (double submit), so another site cannot sign a browser into its own account.
        login_token = new_secret()
        response = console.render_plain(
            request,
            "login.html",
            status,
            perms=None,
            htmx=False,
            login_token=login_token,
            next=safe_next(next_path or request.query.get("next", "")),
            expired=request.query.get("expired") == "1",
            signed_out=request.query.get("signed_out") == "1",
            error=error,
        )
        response.set_cookie(
            LOGIN_COOKIE,
            login_token,
            path=PREFIX,
            httponly=True,
            samesite="Strict",
            secure=console.settings.secure_cookies,
        )
        return response

    async def get(self, request: web.Request) -> web.StreamResponse:
        return await self.form(request)

    async def post(self, request: web.Request) -> web.StreamResponse:
        console = self.console
        if not console.auth_enabled:
            raise web.HTTPSeeOther(PREFIX + "/")
        data = await request.post()
        fields = {k: v for k, v in data.items() if isinstance(v, str)}
        next_path = fields.get("next", "")
        expected = request.cookies.get(LOGIN_COOKIE, "")
        submitted = fields.get("login_token", "")
        if not expected or not hmac.compare_digest(expected.encode(), submitted.encode()):
            return await self.form(request, 403, "The sign-in form expired: try again.", next_path)
        token = fields.get("token", "").strip()
        user = fields.get("user", "").strip()
        password = fields.get("password", "")
        if len(token) > 1000 or len(user) > 200 or len(password) > 1000:
            return await self.form(request, 400, "Credentials too long.", next_path)
        if token:
            authorization, how = authorization_header(token=token), "token"
        elif user and password:
            authorization, how = authorization_header(user=user, password=password), "password"
        else:
            return await self.form(
                request, 400, "Give a user name and password, or a token.", next_path
            )
        try:
            whoami = await console.api_for(authorization, request).whoami()
            session_id, _ = console.sign_in(whoami, authorization, how)
        except ConveyorError as exc:
            if exc.code is ErrorCode.UNAUTHENTICATED:
                return await self.form(
                    request, 401, "Wrong user name, password or token.", next_path
                )
            return await self.form(request, exc.code.http_status, exc.message, next_path)
        response = web.Response(status=303, headers={"Location": safe_next(fields.get("next", ""))})
        response.headers.update(SECURITY_HEADERS)
        console.set_session_cookie(response, session_id)
        response.del_cookie(LOGIN_COOKIE, path=PREFIX)
        return response

    async def sign_out(self, ctx: Ctx) -> web.StreamResponse:
        self.console.sessions.drop(ctx.session_id)
        location = f"{PREFIX}/login?signed_out=1" if self.console.auth_enabled else PREFIX + "/"
        response = web.Response(status=303, headers={"Location": location})
        response.headers.update(SECURITY_HEADERS)
        response.del_cookie(COOKIE, path=PREFIX)
        return response
