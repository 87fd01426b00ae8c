"""Users, API tokens and ACL rules, durable in the coordinator's SQLite database, and the
admin endpoints that manage them (``conveyor user|token|acl``).

The tables live in ``coordinator.db`` beside the cluster state, created by this module
with ``CREATE TABLE IF NOT EXISTS`` on its own connection (the cluster-state schema and its
versioning stay the store's business). Security changes are rare and small: each is one
transaction that also bumps ``security_version``; the in-memory
:class:`~conveyor.protocol.security.SecuritySnapshot` is rebuilt from the tables after each,
and is what heartbeats carry to brokers.
"""

from __future__ import annotations

import asyncio
import logging
import secrets
import sqlite3
import time
from pathlib import Path
from typing import Final

import msgspec
from aiohttp import web

from conveyor.protocol.errors import InvalidRequestError, StorageError
from conveyor.protocol.security import (
    ANY_PRINCIPAL,
    OPERATIONS,
    RESOURCE_TYPES,
    USER_PREFIX,
    AclRule,
    PasswordHash,
    SecuritySnapshot,
    Token,
    TokenCreated,
    TokenCreateRequest,
    TokenSummary,
    User,
    UserCreateRequest,
    UserSummary,
    WhoAmI,
    hash_password,
    scram_credentials,
    token_digest,
    valid_name,
)
from conveyor.transport.server import ROUTES_KEY, Route, decode_json, json_response

log = logging.getLogger(__name__)

DB_FILE: Final = "coordinator.db"
PASSWORD_LENGTH_MIN: Final = 8
TOKEN_EXPIRY_MS_MAX: Final = 10 * 365 * 24 * 3600 * 1000
SECURITY_KEY = web.AppKey("conveyor_security", object)

_SCHEMA: Final = (
    "CREATE TABLE IF NOT EXISTS security_meta (key TEXT PRIMARY KEY, value INTEGER NOT NULL)",
    "CREATE TABLE IF NOT EXISTS security_users (name TEXT PRIMARY KEY, password TEXT NOT NULL)",
    "CREATE TABLE IF NOT EXISTS security_tokens (token_id TEXT PRIMARY KEY, principal TEXT "
    "NOT NULL, secret_sha256_hex TEXT NOT NULL, created_ms INTEGER NOT NULL, expires_ms INTEGER)",
    "CREATE TABLE IF NOT EXISTS security_acls (principal TEXT NOT NULL, operation TEXT NOT NULL, "
    "resource_type TEXT NOT NULL, name TEXT NOT NULL, pattern TEXT NOT NULL, "
    "PRIMARY KEY (principal, operation, resource_type, name, pattern))",
)


def now_ms() -> int:
    return time.time_ns() // 1_000_000


class SecurityStore:
    """The security tables and the snapshot built from them. Blocking: call from a thread."""

    def __init__(self, data_dir: Path | None, enabled: bool) -> None:
        """``data_dir`` None: an in-memory copy (``security_etcd.py`` keeps it in etcd)."""
        self.enabled = enabled
        if data_dir is not None:
            data_dir.mkdir(parents=True, exist_ok=True)
        try:
            self._db = sqlite3.connect(
                ":memory:" if data_dir is None else data_dir / DB_FILE,
                isolation_level=None,
                timeout=10,
                check_same_thread=False,
            )
            self._db.execute("PRAGMA synchronous=FULL")
            self._db.execute("BEGIN IMMEDIATE")
            for statement in _SCHEMA:
                self._db.execute(statement)
            self._db.execute("COMMIT")
        except sqlite3.Error as exc:
            raise StorageError(f"cannot open the security tables: {exc}") from exc
        self.snapshot = self._load()

    def close(self) -> None:
        self._db.close()

    def stale(self) -> str | None:
        return None  # the coordinator's own state is the source: never stale

    async def catch_up(self) -> bool:
        """The coordinator's tables are the source: nothing newer to fetch."""
        return False

    def _load(self) -> SecuritySnapshot:
        db = self._db
        row = db.execute("SELECT value FROM security_meta WHERE key = 'version'").fetchone()
        users = [
            User(name=name, password=msgspec.json.decode(password, type=PasswordHash))
            for name, password in db.execute("SELECT name, password FROM security_users")
        ]
        tokens = [
            Token(
                token_id=r[0],
                principal=r[1],
                secret_sha256_hex=r[2],
                created_ms=r[3],
                expires_ms=r[4],
            )
            for r in db.execute(
                "SELECT token_id, principal, secret_sha256_hex, created_ms, expires_ms "
                "FROM security_tokens ORDER BY created_ms"
            )
        ]
        acls = [
            msgspec.convert(
                dict(
                    zip(
                        ("principal", "operation", "resource_type", "name", "pattern"),
                        r,
                        strict=True,
                    )
                ),
                AclRule,
            )
            for r in db.execute(
                "SELECT principal, operation, resource_type, name, pattern FROM security_acls "
                "ORDER BY principal, resource_type, name, operation"
            )
        ]
        version = 0 if row is None else int(row[0])
        return SecuritySnapshot(
            version=version, enabled=self.enabled, users=users, tokens=tokens, acls=acls
        )

    def replace_all(self, stored: SecuritySnapshot) -> None:
        """Make the tables hold exactly ``stored`` (users, tokens, rules and its version):
        a coordinator on etcd taking the stored snapshot, a migration writing one."""
        db = self._db
        db.execute("BEGIN IMMEDIATE")
        try:
            for table in ("security_users", "security_tokens", "security_acls", "security_meta"):
                db.execute(f"DELETE FROM {table}")  # noqa: S608 -- our own table names
            for user in stored.users:
                db.execute(
                    "INSERT INTO security_users VALUES (?, ?)",
                    (user.name, msgspec.json.encode(user.password).decode()),
                )
            for token in stored.tokens:
                db.execute(
                    "INSERT INTO security_tokens VALUES (?, ?, ?, ?, ?)",
                    (token.token_id, token.principal, token.secret_sha256_hex,
                     token.created_ms, token.expires_ms),
                )  # fmt: skip
            for rule in stored.acls:
                db.execute(
                    "INSERT INTO security_acls VALUES (?, ?, ?, ?, ?)",
                    (rule.principal, rule.operation, rule.resource_type, rule.name, rule.pattern),
                )
            db.execute("INSERT INTO security_meta VALUES ('version', ?)", (stored.version,))
        except BaseException:
            db.execute("ROLLBACK")
            raise
        db.execute("COMMIT")
        self.snapshot = self._load()

    def _change(self, statement: str, args: tuple[object, ...]) -> int:
        """Run one change and bump the version in one transaction; the rows it touched."""
        db = self._db
        try:
            db.execute("BEGIN IMMEDIATE")
            try:
                changed = db.execute(statement, args).rowcount
                if changed:
                    db.execute(
                        "INSERT INTO security_meta (key, value) VALUES ('version', 1) "
                        "ON CONFLICT(key) DO UPDATE SET value = value + 1"
                    )
            except BaseException:
                db.execute("ROLLBACK")
                raise
            db.execute("COMMIT")
        except sqlite3.IntegrityError:
            raise
        except sqlite3.Error as exc:
            raise StorageError(f"security table write failed: {exc}") from exc
        self.snapshot = self._load()
        return int(changed)

    def add_user(self, name: str, password: str) -> UserSummary:
        if not valid_name(name):
            raise InvalidRequestError(f"invalid user name {name!r}")
        if len(password) < PASSWORD_LENGTH_MIN:
            raise InvalidRequestError(f"a password has at least {PASSWORD_LENGTH_MIN} characters")
        salt = secrets.token_bytes(16)
        stored = hash_password(password, salt)
        # SCRAM verifiers for the Kafka listener's SASL/SCRAM (own salts, see scram_credentials)
        stored.scram = scram_credentials(password, secrets.token_bytes(16))
        try:
            self._change(
                "INSERT INTO security_users (name, password) VALUES (?, ?)",
                (name, msgspec.json.encode(stored).decode()),
            )
        except sqlite3.IntegrityError:
            raise InvalidRequestError(f"user {name!r} exists") from None
        log.info("user added: %s", name)
        return UserSummary(name=name, principal=USER_PREFIX + name)

    def remove_user(self, name: str) -> None:
        if not self._change("DELETE FROM security_users WHERE name = ?", (name,)):
            raise InvalidRequestError(f"no user {name!r}")
        log.info("user removed: %s", name)

    def create_token(self, request: TokenCreateRequest) -> TokenCreated:
        principal = request.principal
        if not (principal.startswith(USER_PREFIX) or ":" not in principal) or not valid_name(
            principal.removeprefix(USER_PREFIX)
        ):
            raise InvalidRequestError(f"invalid principal {principal!r}")
        if request.expires_in_ms is not None and not (
            0 < request.expires_in_ms <= TOKEN_EXPIRY_MS_MAX
        ):
            raise InvalidRequestError("expires_in_ms must be positive and at most ten years")
        token_id = secrets.token_hex(8)
        secret = f"cvt_{token_id}_{secrets.token_urlsafe(32)}"
        created = now_ms()
        expires = None if request.expires_in_ms is None else created + request.expires_in_ms
        self._change(
            "INSERT INTO security_tokens VALUES (?, ?, ?, ?, ?)",
            (token_id, principal, token_digest(secret), created, expires),
        )
        log.info("token %s created for %s (expires_ms=%s)", token_id, principal, expires)
        return TokenCreated(
            token_id=token_id, principal=principal, token=secret, expires_ms=expires
        )

    def revoke_token(self, token_id: str) -> None:
        if not self._change("DELETE FROM security_tokens WHERE token_id = ?", (token_id,)):
            raise InvalidRequestError(f"no token {token_id!r}")
        log.info("token %s revoked", token_id)

    def add_acl(self, rule: AclRule) -> None:
        check_rule(rule)
        self._change("INSERT OR IGNORE INTO security_acls VALUES (?, ?, ?, ?, ?)", _rule_row(rule))
        log.info("acl added: %s", rule)

    def remove_acl(self, rule: AclRule) -> None:
        if not self._change(
            "DELETE FROM security_acls WHERE principal = ? AND operation = ? AND "
            "resource_type = ? AND name = ? AND pattern = ?",
            _rule_row(rule),
        ):
            raise InvalidRequestError("no such acl rule")
        log.info("acl removed: %s", rule)


def _rule_row(rule: AclRule) -> tuple[str, str, str, str, str]:
    return (rule.principal, rule.operation, rule.resource_type, rule.name, rule.pattern)


def check_rule(rule: AclRule) -> None:
    if rule.operation not in OPERATIONS or rule.resource_type not in RESOURCE_TYPES:
        raise InvalidRequestError("unknown operation or resource type")
    if not rule.principal or len(rule.principal) > 200:
        raise InvalidRequestError("an acl rule needs a principal")
    if rule.resource_type == "cluster" and rule.name != "cluster":
        raise InvalidRequestError("the cluster resource is named 'cluster'")
    if rule.operation == "idempotent_write" and rule.resource_type != "cluster":
        raise InvalidRequestError("idempotent_write is an operation on the cluster")
    if rule.resource_type == "transactional_id" and rule.operation not in ("produce", "describe"):
        raise InvalidRequestError("a transactional id allows produce (use it) or describe")
    if not rule.name or len(rule.name) > 249:
        raise InvalidRequestError("an acl rule needs a resource name or prefix")


# ---- HTTP ----------------------------------------------------------------------------------


def security_routes(store: SecurityStore) -> list[Route]:
    """The admin endpoints (``admin`` on ``cluster``, see ``transport/auth.py``)."""

    async def add_user(request: web.Request) -> web.Response:
        body = await decode_json(request, UserCreateRequest)
        return json_response(await asyncio.to_thread(store.add_user, body.name, body.password))

    async def list_users(_: web.Request) -> web.Response:
        users = [
            UserSummary(name=u.name, principal=USER_PREFIX + u.name) for u in store.snapshot.users
        ]
        return json_response(users)

    async def remove_user(request: web.Request) -> web.Response:
        await asyncio.to_thread(store.remove_user, request.match_info["name"])
        return web.Response(status=204)

    async def create_token(request: web.Request) -> web.Response:
        body = await decode_json(request, TokenCreateRequest)
        return json_response(await asyncio.to_thread(store.create_token, body))

    async def list_tokens(_: web.Request) -> web.Response:
        tokens = [
            TokenSummary(
                token_id=t.token_id,
                principal=t.principal,
                created_ms=t.created_ms,
                expires_ms=t.expires_ms,
            )
            for t in store.snapshot.tokens
        ]
        return json_response(tokens)

    async def revoke_token(request: web.Request) -> web.Response:
        await asyncio.to_thread(store.revoke_token, request.match_info["token_id"])
        return web.Response(status=204)

    async def add_acl(request: web.Request) -> web.Response:
        rule = await decode_json(request, AclRule)
        await asyncio.to_thread(store.add_acl, rule)
        return json_response(rule)

    async def list_acls(_: web.Request) -> web.Response:
        return json_response(store.snapshot.acls)

    async def remove_acl(request: web.Request) -> web.Response:
        rule = await decode_json(request, AclRule)
        await asyncio.to_thread(store.remove_acl, rule)
        return web.Response(status=204)

    async def whoami(request: web.Request) -> web.Response:
        from conveyor.transport.auth import PRINCIPAL_KEY

        principal = request.get(PRINCIPAL_KEY) or "anonymous"
        rules = [r for r in store.snapshot.acls if r.principal in (principal, ANY_PRINCIPAL)]
        return json_response(
            WhoAmI(
                principal=principal, auth_enabled=store.enabled, acls=rules if store.enabled else []
            )
        )

    async def internal_snapshot(request: web.Request) -> web.Response:
        """For brokers: the state if newer than ``version``, else 204."""
        snapshot = store.snapshot
        if not store.enabled:  # never hand out hashes from a cluster without auth
            snapshot = SecuritySnapshot(version=snapshot.version, enabled=False)
        known = request.query.get("version", "-1")
        if known.lstrip("-").isdigit() and int(known) == snapshot.version:
            return web.Response(status=204)
        return json_response(snapshot)

    tags = ("security",)
    return [
        Route(
            "GET",
            "/internal/v1/security",
            internal_snapshot,
            "Users (hashes), tokens (hashes) and ACL rules for brokers to enforce; 204 when "
            "the broker's version is current",
            response=SecuritySnapshot,
            internal=True,
            query=(("version", "integer", "the version the broker holds"),),
        ),
        Route(
            "POST",
            "/v1/security/users",
            add_user,
            "Add a user (password stored as scrypt)",
            request=UserCreateRequest,
            response=UserSummary,
            tags=tags,
        ),
        Route("GET", "/v1/security/users", list_users, "List users", tags=tags),
        Route("DELETE", "/v1/security/users/{name}", remove_user, "Remove a user", tags=tags),
        Route(
            "POST",
            "/v1/security/tokens",
            create_token,
            "Create an API token; the secret is in this answer only",
            request=TokenCreateRequest,
            response=TokenCreated,
            tags=tags,
        ),
        Route(
            "GET",
            "/v1/security/tokens",
            list_tokens,
            "List tokens (never their secrets)",
            tags=tags,
        ),
        Route(
            "DELETE", "/v1/security/tokens/{token_id}", revoke_token, "Revoke a token", tags=tags
        ),
        Route(
            "POST",
            "/v1/security/acls",
            add_acl,
            "Add an allow rule",
            request=AclRule,
            response=AclRule,
            tags=tags,
        ),
        Route("GET", "/v1/security/acls", list_acls, "List allow rules", tags=tags),
        Route(
            "POST",
            "/v1/security/acls/delete",
            remove_acl,
            "Remove an allow rule",
            request=AclRule,
            tags=tags,
        ),
        Route(
            "GET",
            "/v1/security/whoami",
            whoami,
            "The caller's principal",
            response=WhoAmI,
            tags=tags,
        ),
    ]


def attach(app: web.Application, store: SecurityStore) -> None:
    """Add the admin routes to a coordinator app before it starts (router and OpenAPI)."""
    app[SECURITY_KEY] = store
    routes = security_routes(store)
    for route in routes:
        app.router.add_route(route.method, route.path, route.handler)
    app[ROUTES_KEY].extend(routes)

    async def close(_: web.Application) -> None:
        store.close()

    app.on_cleanup.append(close)
