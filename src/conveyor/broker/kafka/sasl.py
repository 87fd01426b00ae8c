"""SaslHandshake and SaslAuthenticate: PLAIN (Conveyor users, or an API token as the
password) and SCRAM-SHA-256/512 (users, with the SCRAM credentials the coordinator derives
when a password is set), against the same security state as HTTP (users, tokens; the
ACLs then apply to the principal).

A failed authentication is answered SASL_AUTHENTICATION_FAILED with one message whatever
failed (so a client learns nothing about which users exist), then the connection is
closed, as Kafka does. Failures count against the same password-guessing limit as HTTP
Basic (``transport/authlimit.py``: per user name and per client address); past it an
exchange is refused unchecked. Re-authentication (KIP-368) is not offered: the session
lifetime is 0 (unlimited). With authentication off on this broker, PLAIN is accepted
without a check (everything is open anyway) and SCRAM is refused with a message saying
to connect without SASL.
"""

from __future__ import annotations

import asyncio
import logging
import secrets
import time
from collections.abc import Callable
from typing import Any, Final

from conveyor.broker.kafka.registry import RequestContext
from conveyor.protocol.kafka.apis import SERVED, ApiKey
from conveyor.protocol.kafka.errors import KafkaError
from conveyor.protocol.kafka.sasl import (
    MECHANISMS,
    PLAIN,
    SaslError,
    ScramFirst,
    parse_plain,
    scram_final,
    scram_first,
)
from conveyor.protocol.security import (
    ScramCredential,
    SecuritySnapshot,
    authenticate_password,
    authenticate_token,
    split_token,
)
from conveyor.transport.auth import SecuritySource
from conveyor.transport.authlimit import AuthFailureLimiter

log = logging.getLogger(__name__)

FAILED: Final = "authentication failed: wrong user name, password or token"


def _now_ms() -> int:
    return time.time_ns() // 1_000_000


class SaslHandlers:
    def __init__(
        self,
        source: SecuritySource,
        enabled: bool,
        cluster_secret: str | None,
        failures: AuthFailureLimiter,
        clock_ms: Callable[[], int] = _now_ms,
    ) -> None:
        self._source = source
        self._enabled = enabled
        self._cluster_secret = cluster_secret
        self._failures = failures
        self._clock_ms = clock_ms

    async def handshake(self, ctx: RequestContext, request: Any) -> Any:
        response = SERVED[ApiKey.SASL_HANDSHAKE].response[ctx.api_version]
        mechanism = request.mechanism
        if mechanism not in MECHANISMS:
            ctx.close_after_reply = True
            return response(
                error_code=KafkaError.UNSUPPORTED_SASL_MECHANISM, mechanisms=list(MECHANISMS)
            )
        if ctx.connection.sasl_mechanism is not None:
            ctx.close_after_reply = True
            return response(error_code=KafkaError.ILLEGAL_SASL_STATE, mechanisms=list(MECHANISMS))
        ctx.connection.sasl_mechanism = mechanism
        return response(error_code=KafkaError.NONE, mechanisms=list(MECHANISMS))

    async def authenticate(self, ctx: RequestContext, request: Any) -> Any:
        response = SERVED[ApiKey.SASL_AUTHENTICATE].response[ctx.api_version]
        connection = ctx.connection
        mechanism = connection.sasl_mechanism
        if mechanism is None or (connection.sasl_exchange is None and connection.sasl_done):
            return self._failed(ctx, response, KafkaError.ILLEGAL_SASL_STATE, "no SASL handshake")
        message = bytes(request.auth_bytes or b"")
        try:
            if mechanism == PLAIN:
                principal = await self._plain(ctx, message)
                return self._succeeded(ctx, response, principal, b"")
            if not self._enabled:
                return self._failed(
                    ctx,
                    response,
                    KafkaError.ILLEGAL_SASL_STATE,
                    "authentication is off on this broker: connect without SASL",
                )
            if connection.sasl_exchange is None:
                return await self._scram_first(ctx, response, mechanism, message)
            state: ScramFirst = connection.sasl_exchange
            server_final = scram_final(state, message)
        except SaslError as exc:
            return self._refused(ctx, response, exc)
        return self._succeeded(ctx, response, "user:" + state.user, server_final)

    async def _plain(self, ctx: RequestContext, message: bytes) -> str:
        credentials = parse_plain(message)
        if not self._enabled:
            return ctx.connection.principal or "user:ANONYMOUS"
        self._check_throttle(ctx, credentials.user)
        snapshot = await self._snapshot()
        principal = await self._plain_principal(snapshot, credentials.user, credentials.password)
        if principal is None and await self._source.catch_up():  # created a moment ago?
            snapshot = await self._snapshot()
            principal = await self._plain_principal(
                snapshot, credentials.user, credentials.password
            )
        if principal is None:
            self._failures.failed(ctx.connection.info.address, credentials.user, self._clock_ms())
            raise SaslError(FAILED)
        return principal

    async def _plain_principal(
        self, snapshot: SecuritySnapshot, user: str, password: str
    ) -> str | None:
        # an API token, or the cluster secret (the cluster's own identity, as a bearer
        # token over HTTP: an Admin given it reads over Kafka too), as the password
        principal = authenticate_token(snapshot, password, self._clock_ms(), self._cluster_secret)
        if principal is not None or split_token(password) is not None:
            return principal
        # scrypt takes tens of ms: off the event loop
        return await asyncio.to_thread(authenticate_password, snapshot, user, password)

    async def _scram_first(
        self, ctx: RequestContext, response: Any, mechanism: str, message: bytes
    ) -> Any:
        snapshot = await self._snapshot()
        missing: list[str] = []

        def lookup(user: str) -> ScramCredential | None:
            self._check_throttle(ctx, user)
            for known in snapshot.users:
                if known.name == user and known.password.scram:
                    return known.password.scram.get(mechanism)
            missing.append(user)
            return None

        nonce = secrets.token_urlsafe(18)
        try:
            state, server_first = scram_first(mechanism, message, lookup, nonce)
        except SaslError:
            # A user created a moment ago may not have reached this broker yet.
            if not missing or not await self._source.catch_up():
                raise
            snapshot = await self._snapshot()
            state, server_first = scram_first(mechanism, message, lookup, nonce)
        ctx.connection.sasl_exchange = state
        return response(
            error_code=KafkaError.NONE,
            error_message=None,
            auth_bytes=server_first,
            session_lifetime_ms=0,
        )

    def _check_throttle(self, ctx: RequestContext, user: str) -> None:
        throttled = self._failures.check(ctx.connection.info.address, user, self._clock_ms())
        if throttled is not None:
            raise SaslError(f"too many failed authentications: {throttled.message}")

    async def _snapshot(self) -> SecuritySnapshot:
        snapshot = self._source.snapshot
        if snapshot is None:
            await self._source.catch_up()
            snapshot = self._source.snapshot
        if snapshot is None:
            raise SaslError("the security state has not arrived from the coordinator yet")
        return snapshot

    def _succeeded(self, ctx: RequestContext, response: Any, principal: str, data: bytes) -> Any:
        connection = ctx.connection
        connection.principal = principal
        connection.sasl_exchange = None
        connection.sasl_done = True
        log.debug("kafka connection from %s authenticated as %s", connection.info.peer, principal)
        return response(
            error_code=KafkaError.NONE,
            error_message=None,
            auth_bytes=data,
            session_lifetime_ms=0,
        )

    def _refused(self, ctx: RequestContext, response: Any, exc: SaslError) -> Any:
        state = ctx.connection.sasl_exchange
        if isinstance(state, ScramFirst) and str(exc) == "authentication failed":
            self._failures.failed(ctx.connection.info.address, state.user, self._clock_ms())
        log.info(
            "kafka connection from %s: SASL %s failed: %s",
            ctx.connection.info.peer,
            ctx.connection.sasl_mechanism,
            exc,
        )
        message = str(exc) if str(exc).startswith("too many") else FAILED
        return self._failed(ctx, response, KafkaError.SASL_AUTHENTICATION_FAILED, message)

    def _failed(self, ctx: RequestContext, response: Any, code: KafkaError, message: str) -> Any:
        ctx.close_after_reply = True
        ctx.connection.sasl_exchange = None
        return response(
            error_code=code, error_message=message, auth_bytes=b"", session_lifetime_ms=0
        )
