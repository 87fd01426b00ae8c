"""``conveyor coordinator migrate``: SQLite -> etcd -> SQLite with the real command and a
real etcd; the cluster id and every durable record survive both ways; bad targets are
refused and left untouched."""

from __future__ import annotations

import asyncio
import subprocess
import sys
from pathlib import Path

from conveyor.cli.etcd_local import LocalEtcd
from conveyor.coordinator.etcd_store import EtcdLayout
from conveyor.coordinator.migrate import _read_etcd
from conveyor.coordinator.model import snapshot_records
from conveyor.coordinator.store import CoordinatorStore
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

    there = migrate(f"sqlite:{source}", shared_etcd.store_url, prefix)
    assert there.returncode == 0, there.stderr
    assert f"migrated cluster {state.cluster_id}" in there.stdout
    settings = EtcdSettings(parse_endpoints(shared_etcd.store_url))
    copied = asyncio.run(_read_etcd(settings, EtcdLayout(prefix)))
    assert copied.cluster_id == state.cluster_id
    assert sorted(snapshot_records(copied), key=repr) == wanted

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
    onto_existing = migrate(shared_etcd.store_url, f"sqlite:{back}", prefix)
    assert onto_existing.returncode != 0 and "exists already" in onto_existing.stderr
