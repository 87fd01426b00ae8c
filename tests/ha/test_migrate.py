"""``conveyor coordinator migrate``: SQLite -> etcd -> SQLite with the real command and a
real etcd; the cluster id, every durable record and the security state (users with their
password hashes and SCRAM verifiers, tokens, ACL rules, the snapshot version) survive both
ways; bad targets are refused and left untouched."""

from __future__ import annotations

import asyncio
import subprocess
import sys
from pathlib import Path

from conveyor.cli.etcd_local import LocalEtcd
from conveyor.coordinator.etcd_store import EtcdLayout
from conveyor.coordinator.migrate import _read_etcd
from conveyor.coordinator.model import snapshot_records
from conveyor.coordinator.security import SecurityStore
from conveyor.coordinator.store import CoordinatorStore
from conveyor.protocol.security import (
    AclRule,
    SecuritySnapshot,
    TokenCreateRequest,
    token_digest,
    verify_password,
)
from conveyor.transport.etcd import EtcdSettings, parse_endpoints
from tests.ha.test_metastore import steps


def migrate(source: str, target: str, prefix: str) -> subprocess.CompletedProcess[str]:
    argv = [sys.executable, "-m", "conveyor", "coordinator", "migrate",
            "--from", source, "--to", target, "--prefix", prefix]  # fmt: skip
    return subprocess.run(argv, capture_output=True, text=True, timeout=60, check=False)


def test_sqlite_to_etcd_and_back(tmp_path: Path, shared_etcd: LocalEtcd, prefix: str) -> None:
    source = tmp_path / "single"
    store = CoordinatorStore.open(source)
    state = store.load()
    for step in steps():
        result = step(state)
        store.write(result.durable_records)
        state = result.state
    store.close()
    wanted = sorted(snapshot_records(state), key=repr)
    security, token = make_security(source)

    there = migrate(f"sqlite:{source}", shared_etcd.store_url, prefix)
    assert there.returncode == 0, there.stderr
    assert f"migrated cluster {state.cluster_id}" in there.stdout
    assert "2 users, 1 tokens, 2 ACL rules" in there.stdout
    settings = EtcdSettings(parse_endpoints(shared_etcd.store_url))
    copied, copied_security = asyncio.run(_read_etcd(settings, EtcdLayout(prefix)))
    assert copied.cluster_id == state.cluster_id
    assert sorted(snapshot_records(copied), key=repr) == wanted
    assert same_security(copied_security, security, token)

    again = migrate(f"sqlite:{source}", shared_etcd.store_url, prefix)
    assert again.returncode != 0 and "already holds a cluster" in again.stderr

    back = tmp_path / "back"
    home = migrate(shared_etcd.store_url, f"sqlite:{back}", prefix)
    assert home.returncode == 0, home.stderr
    restored = CoordinatorStore.open(back)
    try:
        assert restored.cluster_id == state.cluster_id
        assert sorted(snapshot_records(restored.load()), key=repr) == wanted
    finally:
        restored.close()
    tables = SecurityStore(back, enabled=True)
    try:
        assert same_security(tables.snapshot, security, token)
    finally:
        tables.close()
    onto_existing = migrate(shared_etcd.store_url, f"sqlite:{back}", prefix)
    assert onto_existing.returncode != 0 and "exists already" in onto_existing.stderr


def make_security(data_dir: Path) -> tuple[SecuritySnapshot, str]:
    """Users, a token and rules in the single coordinator's tables; the snapshot and the
    token's secret."""
    tables = SecurityStore(data_dir, enabled=True)
    try:
        tables.add_user("alice", "alice-password")
        tables.add_user("bob", "bob-password")
        tables.remove_user("bob")
        tables.add_user("carol", "carol-password")
        token = tables.create_token(TokenCreateRequest(principal="svc", expires_in_ms=3_600_000))
        tables.add_acl(
            AclRule(principal="user:alice", operation="produce", resource_type="topic", name="t")
        )
        tables.add_acl(
            AclRule(principal="svc", operation="consume", resource_type="group", name="billing-",
                    pattern="prefix")
        )  # fmt: skip
        return tables.snapshot, token.token
    finally:
        tables.close()


def same_security(found: SecuritySnapshot, wanted: SecuritySnapshot, token: str) -> bool:
    """Equal rows and version; and the copies still work: the password verifies, the
    token's secret matches its stored digest."""
    alice = next(u for u in found.users if u.name == "alice")
    return (
        (found.version, found.users, found.tokens, found.acls)
        == (wanted.version, wanted.users, wanted.tokens, wanted.acls)
        and wanted.version == 7  # 7 changes
        and verify_password("alice-password", alice.password)
        and found.tokens[0].secret_sha256_hex == token_digest(token)
    )
