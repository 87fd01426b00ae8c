"""Authentication and authorization on every route, from one policy table.

Each route (method, path template) has a :class:`Policy`: public (health, readiness,
metrics, OpenAPI), internal (the cluster's own identity only), or an operation on a
resource named by a path parameter, the body, or the cluster. A route missing from the
table needs ``admin`` on the cluster, and ``tests/integration/test_auth.py`` enumerates the
routes of both services so a new endpoint without a policy fails the test.

Per request, with auth on: the password-guessing limit (429 ``THROTTLED`` while the
user name or the client address has failed too often: ``transport/authlimit.py``), then
credentials -> principal (401 ``UNAUTHENTICATED`` when absent or wrong, counted by that
limit), internal route -> the cluster identity (a verified mTLS client certificate, or the
cluster secret as a bearer token) or 403, else :func:`authorize` or 403 ``FORBIDDEN``. The
decision reads the local :class:`SecuritySnapshot` only: the coordinator's own, or on a
broker the one the last heartbeat brought.

Passwords are checked with scrypt (tens of ms); successful checks are remembered per
snapshot version by a SHA-256 of the credentials, so a client sending Basic on every
request pays the slow hash once per change of the security state.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import hashlib
import logging
import os
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Final, Protocol

import msgspec
from aiohttp import web
from aiohttp.typedefs import Middleware

from conveyor.protocol.errors import (
    AuthenticationError,
    AuthorizationError,
    ConveyorError,
    ErrorCode,
    RetriableError,
)
from conveyor.protocol.security import (
    CLUSTER_PRINCIPAL,
    CLUSTER_RESOURCE,
    SecuritySnapshot,
    authenticate_password,
    authenticate_token,
    authorize,
)
from conveyor.transport import forwarded
from conveyor.transport.authlimit import AuthFailureLimiter, AuthLimits
from conveyor.transport.credentials import (  # re-exported: its home until clients were split off
    authorization_header as authorization_header,  # noqa: PLC0414
)
from conveyor.transport.limits import peer_address
from conveyor.transport.metrics import HTTP_METRICS_KEY, HttpMetrics, route_template
from conveyor.transport.server import ROUTES_KEY, Handler
from conveyor.transport.throttle import Throttle

log = logging.getLogger(__name__)

CACHE_ENTRIES_MAX: Final = 10_000
# Between two on-demand refreshes of a broker's security state (unknown credentials,
# a denied request): bounds the coordinator load that bad credentials can cause.
CATCH_UP_GAP_S: Final = 0.1
PRINCIPAL_KEY: Final = web.RequestKey("conveyor_principal", str)


@dataclass(frozen=True, slots=True)
class Policy:
    operation: str | None = None  # None: any authenticated principal
    resource_type: str = "topic"
    param: str | None = "topic"  # path parameter naming the resource; None: the cluster
    body_field: str | None = None  # or a JSON body field naming it ("a.b": nested)
    public: bool = False
    also: Policy | None = None  # a second permission the route needs as well


PUBLIC: Final = Policy(public=True)
AUTHENTICATED: Final = Policy(param=None)
ADMIN: Final = Policy("admin", "cluster", None)


def _topic(operation: str) -> Policy:
    return Policy(operation, "topic", "topic")


_PARTITION = "/v1/topics/{topic}/partitions/{partition}"
_TXN_INIT: Final = Policy("produce", "transactional_id", None, body_field="transactional_id")
_TXN: Final = Policy("produce", "transactional_id", None, body_field="producer.transactional_id")
_TXN_GROUP: Final = Policy(
    "produce",
    "transactional_id",
    None,
    body_field="producer.transactional_id",
    also=Policy("group", "group", None, body_field="group"),
)
POLICIES: Final[dict[tuple[str, str], Policy]] = {
    ("GET", "/healthz"): PUBLIC,
    ("GET", "/readyz"): PUBLIC,
    ("GET", "/metrics"): PUBLIC,
    ("GET", "/openapi.json"): PUBLIC,
    # coordinator
    ("GET", "/v1/metadata"): AUTHENTICATED,  # auto_create is checked by the handler's rules
    ("GET", "/v1/cluster"): Policy("describe", "cluster", None),
    # which coordinator is active: as public as /readyz (standbys answer it too)
    ("GET", "/v1/coordinator"): PUBLIC,
    # a producer id: Kafka's IDEMPOTENT_WRITE on the cluster (``produce`` on a topic implies it)
    ("POST", "/v1/producers/init"): Policy("idempotent_write", "cluster", None),
    # transactions (issue 21): ``produce`` on the transactional id (Kafka's WRITE); offsets
    # in one need the group's use as well, as committing them does (data writes are checked
    # by the brokers' produce ACL)
    ("POST", "/v1/transactions/init"): _TXN_INIT,
    ("POST", "/v1/transactions/add-partitions"): _TXN,
    ("POST", "/v1/transactions/end"): _TXN,
    ("POST", "/v1/transactions/add-offsets"): _TXN_GROUP,
    ("POST", "/v1/transactions/offset-commit"): _TXN_GROUP,
    ("POST", "/v1/brokers/{broker_id}/decommission"): ADMIN,
    ("GET", "/v1/brokers/{broker_id}/decommission"): Policy("describe", "cluster", None),
    ("POST", "/v1/topics"): Policy("create_topic", "topic", None, body_field="name"),
    ("GET", "/v1/topics"): Policy("describe", "cluster", None),
    ("GET", "/v1/topics/{topic}"): _topic("describe"),
    ("DELETE", "/v1/topics/{topic}"): _topic("delete_topic"),
    ("GET", "/v1/security/whoami"): AUTHENTICATED,
    ("GET", "/v1/groups"): Policy("describe", "cluster", None),
    ("GET", "/v1/groups/{group}"): Policy("describe", "group", "group"),  # members, lag
    ("DELETE", "/v1/groups/{group}"): Policy("group", "group", "group"),  # as resetting it
    # broker
    ("POST", _PARTITION + "/records"): _topic("produce"),
    ("GET", _PARTITION + "/records"): _topic("consume"),
    # deleting records needs Kafka's DELETE on the topic, which is Conveyor's delete_topic
    ("DELETE", _PARTITION + "/records"): _topic("delete_topic"),
    ("GET", _PARTITION + "/offsets"): _topic("consume"),
    ("POST", "/v1/topics/{topic}/records"): _topic("produce"),
    ("GET", "/v1/partitions"): Policy("describe", "cluster", None),
    # share groups (queues, issue 23): membership and settings are group use; reading a
    # topic's records through a group is consuming the topic
    ("POST", "/v1/share-groups/{group}/heartbeat"): Policy("group", "group", "group"),
    ("PUT", "/v1/share-groups/{group}/config"): Policy("group", "group", "group"),
    ("GET", "/v1/share-groups/{group}/config"): Policy("describe", "group", "group"),
    ("GET", "/v1/share-groups/{group}"): Policy("describe", "group", "group"),
    ("GET", "/v1/share-groups"): Policy("describe", "cluster", None),
    ("DELETE", "/v1/share-groups/{group}"): Policy("group", "group", "group"),
    ("POST", "/v1/share-groups/{group}/topics/{topic}/receive"): _topic("consume"),
    ("POST", "/v1/share-groups/{group}/topics/{topic}/acknowledge"): _topic("consume"),
}
# Every route under a group's path is group use of that group (offsets, membership).
GROUP_PREFIX: Final = "/v1/groups/{group}/"
GROUP_POLICY: Final = Policy("group", "group", "group")


# The web console (``conveyor.console``) signs its users in with its own session cookie
# and calls the API routes above with each user's credentials, so its pages need none here.
CONSOLE_PREFIX: Final = "/console"


def policy_for(method: str, template: str) -> Policy:
    policy = POLICIES.get((method, template))
    if policy is not None:
        return policy
    if template == CONSOLE_PREFIX or template.startswith(CONSOLE_PREFIX + "/"):
        return PUBLIC
    if template.startswith(GROUP_PREFIX):
        return GROUP_POLICY
    return ADMIN  # unknown: closed to all but administrators


class SecuritySource(Protocol):
    """Where a service reads the security state it enforces."""

    @property
    def snapshot(self) -> SecuritySnapshot | None: ...

    async def catch_up(self) -> bool:
        """Fetch a newer state now if the source is a copy; True when one arrived."""
        ...

    def stale(self) -> str | None:
        """Why the state may no longer be trusted (a copy not confirmed for too long),
        else None."""
        ...


@dataclass
class BrokerSecurity:
    """A broker's copy of the coordinator's security state (``broker/security.py``),
    replaced by each newer version; ``enabled`` is the broker's ``--auth``."""

    snapshot: SecuritySnapshot | None = None
    enabled: bool = False
    # Revocation bound: a copy not confirmed by the coordinator for this long (it cannot
    # be reached) may miss a revoked token or a removed rule, so client requests are
    # refused (503 NOT_READY) until it is confirmed again. The cluster identity (internal
    # routes) is not revocable and keeps working.
    max_staleness_ms: int = 10_000
    # the heartbeat interval the coordinator set: the bound is never under 3 of them
    interval_ms: int = 1_000
    confirmed_s: float | None = field(default=None, repr=False)  # time.monotonic()
    # Fetches the newer state from the coordinator (``broker/security.py``); set by the
    # broker so a token or rule created a moment ago works before the next heartbeat.
    refresher: Callable[[], Awaitable[None]] | None = field(default=None, repr=False)
    _round: asyncio.Future[None] | None = field(default=None, repr=False)
    _last_round_s: float = field(default=0.0, repr=False)

    def confirm(self) -> None:
        """The coordinator answered a refresh (new state or "current"): fresh again."""
        self.confirmed_s = time.monotonic()

    def stale(self) -> str | None:
        if self.confirmed_s is None:
            return None  # no state yet: answered NOT_READY anyway
        age_ms = int((time.monotonic() - self.confirmed_s) * 1000)
        limit_ms = max(self.max_staleness_ms, 3 * self.interval_ms)
        if age_ms <= limit_ms:
            return None
        return (
            f"this broker could not confirm its users, tokens and ACLs with the coordinator "
            f"for {age_ms} ms (limit {limit_ms} ms): a revocation may have been "
            "missed, so it serves no client until it can; retry, or use another broker"
        )

    def update(self, snapshot: SecuritySnapshot) -> bool:
        """Take ``snapshot`` if newer (or the first); True when taken."""
        if self.snapshot is not None and snapshot.version <= self.snapshot.version:
            return False
        self.snapshot = snapshot
        return True

    async def catch_up(self) -> bool:
        """Ask the coordinator for a newer state now (concurrent callers share one round,
        rounds at most every ``CATCH_UP_GAP_S``); True when a newer state arrived. An
        unreachable coordinator leaves the last state in force."""
        if self.refresher is None:
            return False
        before = None if self.snapshot is None else self.snapshot.version
        if self._round is None:
            self._round = asyncio.ensure_future(self._refresh_round(self.refresher))
        try:
            await asyncio.shield(self._round)
        except (ConveyorError, msgspec.DecodeError, OSError, TimeoutError):  # as heartbeats
            return False
        return self.snapshot is not None and self.snapshot.version != before

    async def _refresh_round(self, refresher: Callable[[], Awaitable[None]]) -> None:
        try:
            wait = self._last_round_s + CATCH_UP_GAP_S - time.monotonic()
            if wait > 0:
                await asyncio.sleep(wait)
            await refresher()
        finally:
            self._last_round_s = time.monotonic()
            self._round = None


@dataclass
class AuthSettings:
    enabled: bool = False
    cluster_secret: str | None = None  # bearer token of the cluster's own identity
    limits: AuthLimits = field(default_factory=AuthLimits)  # password guessing
    # verifies the web console's note of its user's address (``forwarded.py``): derived
    # from the cluster secret, else this process's own
    forwarding_key: bytes = field(default_factory=lambda: os.urandom(32), repr=False)


class _PasswordCache:
    """sha256(name, password) -> principal, valid for one snapshot version."""

    def __init__(self) -> None:
        self.version = -1
        self.entries: dict[str, str] = {}

    def check(self, snapshot: SecuritySnapshot, name: str, password: str) -> str | None:
        if snapshot.version != self.version:
            self.version, self.entries = snapshot.version, {}
        key = hashlib.sha256(f"{name}\0{password}".encode()).hexdigest()
        principal = self.entries.get(key)
        if principal is None:
            principal = authenticate_password(snapshot, name, password)
            if principal is not None and len(self.entries) < CACHE_ENTRIES_MAX:
                self.entries[key] = principal
        return principal


def basic_user(header: str) -> str | None:
    """The user name of a Basic ``Authorization`` header, None for anything else (a
    token, malformed credentials): the key the password-guessing limit counts under."""
    scheme, _, value = header.partition(" ")
    if scheme.lower() != "basic":
        return None
    try:
        name, sep, _ = base64.b64decode(value.strip(), validate=True).decode().partition(":")
    except (binascii.Error, UnicodeDecodeError):
        return None
    return name if sep else None


class FailedAuthentications:
    """The password-guessing limit of one listener (``transport/authlimit.py``), its
    metrics and its log line (one per throttled key per window)."""

    def __init__(self, limits: AuthLimits, metrics: HttpMetrics | None) -> None:
        self.limiter = AuthFailureLimiter(limits)
        self.metrics = metrics
        self._log_throttle = Throttle(limits.window_ms)

    def check(self, address: str, user: str | None, now_ms: int) -> None:
        """Raise 429 THROTTLED when this user or address has failed too often."""
        throttled = self.limiter.check(address, user, now_ms)
        if throttled is None:
            return
        if self.metrics is not None:
            self.metrics.auth_throttled.labels(throttled.scope).inc()
        raise RetriableError(
            throttled.message,
            code=ErrorCode.THROTTLED,
            scope=throttled.scope,
            retry_after_ms=throttled.retry_after_ms,
        )

    def failed(self, header: str, address: str, user: str | None, now_ms: int) -> None:
        scheme = header.partition(" ")[0].lower()
        if self.metrics is not None:
            label = scheme if scheme in ("basic", "bearer") else "other"
            self.metrics.auth_failures.labels(label).inc()
        if user is None:
            return
        for throttled in self.limiter.failed(address, user, now_ms):
            key = (throttled.scope, throttled.key)
            if self._log_throttle.decide(key, now_ms).emit:
                log.warning(
                    "possible password guessing: %d failed authentications for %s %s within "
                    "%d ms (last from %s); further attempts answered 429 THROTTLED for %d ms",
                    throttled.failures_max,
                    throttled.scope,
                    throttled.key,
                    throttled.window_ms,
                    address,
                    throttled.retry_after_ms,
                )


def credentials_principal(
    header: str,
    snapshot: SecuritySnapshot,
    now_ms: int,
    cluster_secret: str | None,
    passwords: _PasswordCache,
) -> str:
    """The principal an ``Authorization`` header proves; raises 401 otherwise."""
    scheme, _, value = header.partition(" ")
    value = value.strip()
    if scheme.lower() == "bearer" and value:
        principal = authenticate_token(snapshot, value, now_ms, cluster_secret)
        if principal is None:
            raise AuthenticationError("unknown, expired or revoked token")
        return principal
    if scheme.lower() == "basic" and value:
        try:
            name, sep, password = base64.b64decode(value, validate=True).decode().partition(":")
        except (binascii.Error, UnicodeDecodeError):
            raise AuthenticationError("malformed Basic credentials") from None
        principal = passwords.check(snapshot, name, password) if sep else None
        if principal is None:
            raise AuthenticationError("wrong user name or password")
        return principal
    raise AuthenticationError("unsupported Authorization scheme: use Basic or Bearer")


async def resource_name(request: web.Request, policy: Policy) -> str:
    if policy.param is not None:
        return request.match_info.get(policy.param, "")
    if policy.body_field is not None:
        try:
            body = msgspec.json.decode(await request.read())
        except msgspec.DecodeError:
            return ""  # the handler answers 400 for the body itself
        value: object = body
        for key in policy.body_field.split("."):
            value = value.get(key) if isinstance(value, dict) else None
        return value if isinstance(value, str) else ""
    return CLUSTER_RESOURCE


METADATA_ROUTE: Final = ("GET", "/v1/metadata")
_TRUE: Final = ("1", "true", "yes", "on")


def without_unauthorized_auto_create(
    request: web.Request, snapshot: SecuritySnapshot, principal: str
) -> web.Request:
    """Metadata may create the topics it names (``auto_create=true``, as producers ask):
    only with ``create_topic`` on each of them. Without it the request goes on without
    ``auto_create``, so existing topics are described and unknown ones stay unknown (as
    Kafka does), rather than refusing the producer its metadata."""
    if request.query.get("auto_create", "").lower() not in _TRUE:
        return request
    names = [n for n in request.query.get("topics", "").split(",") if n]
    if names and all(
        authorize(snapshot.acls, principal, "create_topic", "topic", n) for n in names
    ):
        return request
    query = {k: v for k, v in request.query.items() if k != "auto_create"}
    return request.clone(rel_url=request.rel_url.with_query(query))


@dataclass
class _Authenticator:
    """Credentials -> (the snapshot in force, the principal they prove), or a typed error."""

    settings: AuthSettings
    source: SecuritySource
    failures: FailedAuthentications
    clock_ms: Callable[[], int]
    passwords: _PasswordCache = field(default_factory=_PasswordCache)

    async def __call__(self, request: web.Request, internal: bool) -> tuple[SecuritySnapshot, str]:
        source, clock_ms = self.source, self.clock_ms
        stale = None if internal else source.stale()  # the cluster identity is not revocable
        if stale is not None:
            raise RetriableError(stale, code=ErrorCode.NOT_READY)
        snapshot = source.snapshot
        if snapshot is None:
            raise RetriableError(
                "the security state has not arrived from the coordinator yet",
                code=ErrorCode.NOT_READY,
            )
        header = request.headers.get("Authorization")
        if header is None:
            raise AuthenticationError("credentials required: Basic or Bearer")
        # The console's calls name its user's address (signed; forwarded.py): without
        # it every console user would count as the console's one address.
        address = forwarded.verified(
            self.settings.forwarding_key, request.headers.get(forwarded.HEADER), clock_ms()
        ) or peer_address((request.remote,))
        user = basic_user(header)
        self.failures.check(address, user, clock_ms())
        secret = self.settings.cluster_secret
        try:
            try:
                principal = credentials_principal(
                    header, snapshot, clock_ms(), secret, self.passwords
                )
            except AuthenticationError:
                # A token or user created a moment ago may not have reached this broker yet.
                if not await source.catch_up() or source.snapshot is None:
                    raise
                snapshot = source.snapshot
                principal = credentials_principal(
                    header, snapshot, clock_ms(), secret, self.passwords
                )
        except AuthenticationError:
            self.failures.failed(header, address, user, clock_ms())
            raise
        return snapshot, principal


async def _authorize(
    request: web.Request,
    policy: Policy,
    snapshot: SecuritySnapshot,
    principal: str,
    source: SecuritySource,
) -> SecuritySnapshot:
    """The policy's check, or AuthorizationError; the snapshot it was decided on."""
    assert policy.operation is not None
    name = await resource_name(request, policy)
    if authorize(snapshot.acls, principal, policy.operation, policy.resource_type, name):
        return snapshot
    if await source.catch_up() and source.snapshot is not None:
        snapshot = source.snapshot  # a rule added a moment ago
        if authorize(snapshot.acls, principal, policy.operation, policy.resource_type, name):
            return snapshot
    raise AuthorizationError(
        f"{principal} may not {policy.operation} on {policy.resource_type} {name!r}"
    )


def auth_middleware(
    app: web.Application,
    settings: AuthSettings,
    source: SecuritySource,
    has_client_cert: Callable[[web.Request], bool],
    clock_ms: Callable[[], int] = lambda: time.time_ns() // 1_000_000,
) -> Middleware:
    internal = frozenset((r.method, r.path) for r in app.get(ROUTES_KEY, []) if r.internal)
    failures = FailedAuthentications(settings.limits, app.get(HTTP_METRICS_KEY))

    authenticate = _Authenticator(settings, source, failures, clock_ms)

    @web.middleware
    async def middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
        template = route_template(request)
        key = (request.method, template)
        is_internal = key in internal
        policy = PUBLIC if is_internal else policy_for(request.method, template)
        if policy.public and not is_internal:
            return await handler(request)
        if is_internal and has_client_cert(request):
            request[PRINCIPAL_KEY] = CLUSTER_PRINCIPAL
            return await handler(request)
        snapshot, principal = await authenticate(request, is_internal)
        request[PRINCIPAL_KEY] = principal
        if is_internal:
            if principal != CLUSTER_PRINCIPAL:
                raise AuthorizationError(f"{request.path} is internal to the cluster")
            return await handler(request)
        if key == METADATA_ROUTE:
            request = without_unauthorized_auto_create(request, snapshot, principal)
        if policy.operation is None:
            return await handler(request)
        checked: Policy | None = policy
        while checked is not None:
            snapshot = await _authorize(request, checked, snapshot, principal, source)
            checked = checked.also
        return await handler(request)

    return middleware


@dataclass(frozen=True)
class AuthInstall:
    """What a service's command line puts in ``app[AUTH_KEY]`` for ``secure.install``."""

    settings: AuthSettings
    source: SecuritySource


AUTH_KEY: Final = web.AppKey("conveyor_auth", AuthInstall)


def auth_settings(
    enabled: bool, cluster_secret: str | None, limits: AuthLimits | None = None
) -> AuthSettings:
    """The service's ``auth`` and ``cluster_secret`` settings (``CONVEYOR_AUTH``,
    ``CONVEYOR_CLUSTER_SECRET`` or the file ``CONVEYOR_CLUSTER_SECRET_FILE`` names: never a
    flag, which ``ps`` shows to every local user), parsed by ``conveyor.settings``, and the
    password-guessing ``limits``."""
    settings = AuthSettings(
        enabled=enabled, cluster_secret=cluster_secret, limits=limits or AuthLimits()
    )
    if cluster_secret:
        settings.forwarding_key = forwarded.derive_key(cluster_secret)
    return settings
