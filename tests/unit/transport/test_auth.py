"""The pure parts of request authentication: credentials to principal, route policies."""

from __future__ import annotations

import asyncio
import base64
from pathlib import Path

import pytest

from conveyor.protocol.errors import AuthenticationError, ConveyorError
from conveyor.protocol.security import (
    CLUSTER_PRINCIPAL,
    SecuritySnapshot,
    Token,
    User,
    hash_password,
    token_digest,
)
from conveyor.transport.auth import (
    ADMIN,
    GROUP_POLICY,
    PUBLIC,
    BrokerSecurity,
    _PasswordCache,
    credentials_principal,
    policy_for,
)
from conveyor.transport.client import authorization_from_env, secret_from_env
from conveyor.transport.credentials import authorization_header

TOKEN = "cvt_t1_abc_def"  # the secret part may hold underscores
SNAPSHOT = SecuritySnapshot(
    version=1,
    enabled=True,
    users=[User(name="alice", password=hash_password("alice-password", b"s" * 16))],
    tokens=[
        Token(token_id="t1", principal="svc", secret_sha256_hex=token_digest(TOKEN), created_ms=0)
    ],
)


def principal(header: str, cache: _PasswordCache | None = None) -> str:
    return credentials_principal(header, SNAPSHOT, 0, "the-secret", cache or _PasswordCache())


def test_bearer_basic_and_cluster_secret() -> None:
    assert principal(f"Bearer {TOKEN}") == "svc"
    assert principal(authorization_header(user="alice", password="alice-password") or "") == (
        "user:alice"
    )
    assert principal("Bearer the-secret") == CLUSTER_PRINCIPAL


@pytest.mark.parametrize(
    "header",
    [
        "",
        "Bearer ",
        "Bearer cvt_t1_wrong",
        "Basic !!!",
        "Basic " + base64.b64encode(b"alice").decode(),  # no colon
        "Basic " + base64.b64encode(b"alice:wrong").decode(),
        "Basic " + base64.b64encode(b"bob:alice-password").decode(),
        "Digest abc",
    ],
)
def test_bad_credentials_are_401(header: str) -> None:
    with pytest.raises(AuthenticationError):
        principal(header)


def test_password_checks_are_remembered_per_snapshot_version() -> None:
    cache = _PasswordCache()
    header = authorization_header(user="alice", password="alice-password") or ""
    assert principal(header, cache) == "user:alice"
    assert len(cache.entries) == 1
    newer = SecuritySnapshot(version=2, enabled=True)  # alice removed
    with pytest.raises(AuthenticationError):
        credentials_principal(header, newer, 0, None, cache)
    assert cache.entries == {}


def test_route_policies() -> None:
    assert policy_for("GET", "/healthz") is PUBLIC
    assert policy_for("POST", "/v1/topics/{topic}/records").operation == "produce"
    fetch = policy_for("GET", "/v1/topics/{topic}/partitions/{partition}/records")
    assert (fetch.operation, fetch.param) == ("consume", "topic")
    assert policy_for("POST", "/v1/groups/{group}/heartbeat") is GROUP_POLICY
    assert policy_for("POST", "/v1/something/new") is ADMIN  # unknown: admin only


def test_catch_up_shares_one_round_among_concurrent_callers_and_keeps_state_on_failure() -> None:
    security = BrokerSecurity(snapshot=SNAPSHOT, enabled=True)
    calls: list[int] = []
    newer = SecuritySnapshot(version=2, enabled=True)

    async def refresher() -> None:
        calls.append(1)
        await asyncio.sleep(0.01)
        security.update(newer)

    async def failing() -> None:
        raise ConveyorError("coordinator unreachable")

    async def scenario() -> None:
        assert await BrokerSecurity(snapshot=SNAPSHOT).catch_up() is False  # no refresher
        security.refresher = refresher
        results = await asyncio.gather(*(security.catch_up() for _ in range(5)))
        assert results == [True] * 5 and len(calls) == 1
        assert await security.catch_up() is False  # nothing newer the second time
        assert len(calls) == 2
        security.refresher = failing
        assert await security.catch_up() is False
        assert security.snapshot is newer

    asyncio.run(scenario())


def test_secrets_come_from_the_variable_or_the_file_its_FILE_twin_names(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("CONVEYOR_TOKEN", raising=False)
    monkeypatch.delenv("CONVEYOR_TOKEN_FILE", raising=False)
    assert secret_from_env("CONVEYOR_TOKEN") is None
    (tmp_path / "token").write_text("cvt_from_file\n")
    monkeypatch.setenv("CONVEYOR_TOKEN_FILE", str(tmp_path / "token"))
    assert secret_from_env("CONVEYOR_TOKEN") == "cvt_from_file"
    assert authorization_from_env() == "Bearer cvt_from_file"
    monkeypatch.setenv("CONVEYOR_TOKEN", "cvt_from_variable")  # the variable wins
    assert secret_from_env("CONVEYOR_TOKEN") == "cvt_from_variable"
    monkeypatch.delenv("CONVEYOR_TOKEN")
    monkeypatch.setenv("CONVEYOR_TOKEN_FILE", str(tmp_path / "missing"))
    with pytest.raises(ConveyorError, match="CONVEYOR_TOKEN_FILE"):
        secret_from_env("CONVEYOR_TOKEN")
