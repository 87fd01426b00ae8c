"""Access (auth on): users, tokens (a new secret is shown once), ACL rules. Every action
is the coordinator's ``/v1/security`` API, which needs ``admin`` on the cluster."""

from __future__ import annotations

from typing import Any

from aiohttp import web

from conveyor.console import forms
from conveyor.console.core import PREFIX, Ctx
from conveyor.console.overview import settle
from conveyor.protocol.errors import ConveyorError, ErrorCode
from conveyor.protocol.security import OPERATIONS, RESOURCE_TYPES
from conveyor.transport.waits import gather_all


class Access:
    async def page(self, ctx: Ctx, status: int = 200, **values: Any) -> web.StreamResponse:
        users = tokens = acls = None
        if ctx.perms.admin and ctx.console.auth_enabled:
            users, tokens, acls = await gather_all(
                settle(ctx.api.users()), settle(ctx.api.tokens()), settle(ctx.api.acls())
            )
        values.setdefault("created_token", None)
        values.setdefault("form_error", None)
        return ctx.render(
            "access.html",
            status,
            users=users,
            tokens=tokens,
            acls=acls,
            operations=OPERATIONS,
            resource_types=RESOURCE_TYPES,
            page="access",
            **values,
        )

    async def _do(self, ctx: Ctx, action: Any, done: str) -> web.StreamResponse:
        try:
            await action
        except ConveyorError as exc:
            if exc.code in (ErrorCode.UNAUTHENTICATED, ErrorCode.FORBIDDEN):
                raise
            return await self.page(ctx, exc.code.http_status, form_error=exc.message)
        return ctx.redirect(f"{PREFIX}/access", done)

    async def add_user(self, ctx: Ctx) -> web.StreamResponse:
        form = await ctx.form()
        name = forms.text(form, "name", 128, required=True).strip()
        password = forms.text(form, "password", 1000, required=True)
        return await self._do(ctx, ctx.api.add_user(name, password), f"Added user {name}.")

    async def remove_user(self, ctx: Ctx) -> web.StreamResponse:
        name = ctx.request.match_info["name"]
        return await self._do(ctx, ctx.api.remove_user(name), f"Removed user {name}.")

    async def create_token(self, ctx: Ctx) -> web.StreamResponse:
        form = await ctx.form()
        try:
            created = await ctx.api.create_token(forms.token_request(form))
        except ConveyorError as exc:
            if exc.code in (ErrorCode.UNAUTHENTICATED, ErrorCode.FORBIDDEN):
                raise
            return await self.page(ctx, exc.code.http_status, form_error=exc.message)
        # Rendered, not redirected: the secret exists in this answer only (Cache-Control:
        # no-store, as every console page).
        return await self.page(ctx, created_token=created)

    async def revoke_token(self, ctx: Ctx) -> web.StreamResponse:
        token_id = ctx.request.match_info["token_id"]
        return await self._do(ctx, ctx.api.revoke_token(token_id), f"Revoked token {token_id}.")

    async def add_acl(self, ctx: Ctx) -> web.StreamResponse:
        form = await ctx.form()
        try:
            rule = forms.acl_rule(form)
        except ConveyorError as exc:
            return await self.page(ctx, exc.code.http_status, form_error=exc.message)
        return await self._do(ctx, ctx.api.add_acl(rule), "Added the rule.")

    async def remove_acl(self, ctx: Ctx) -> web.StreamResponse:
        form = await ctx.form()
        rule = forms.acl_rule(form)
        return await self._do(ctx, ctx.api.remove_acl(rule), "Removed the rule.")
