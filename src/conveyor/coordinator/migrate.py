"""``conveyor coordinator migrate --from SOURCE --to TARGET``: copy a cluster's metadata
between stores, keeping its cluster_id (brokers check it), so a cluster moves from one
coordinator on SQLite to several on etcd, or an etcd prefix is backed up to (and restored
from) a SQLite file.

    sqlite:DIR  -> etcd://...   the prefix must be empty; the copy takes the election key
                                for its duration, so no coordinator may be active there
    etcd://...  -> sqlite:DIR   DIR must not hold a coordinator.db yet (a backup, or the way
                                back to a single coordinator)

The copy is the state as records (``model.snapshot_records``): brokers, topics, partitions
with their epochs, producer ids and committed offsets. It is read back from the target and
compared before the command reports success. Users, tokens and ACLs are not copied (the
SQLite file's security tables, the etcd prefix's ``security`` key): create them again.
"""

from __future__ import annotations

import asyncio
import json
import logging
from dataclasses import dataclass
from pathlib import Path

from conveyor.coordinator.etcd_store import EtcdLayout, EtcdMetadataStore, leader_url
from conveyor.coordinator.model import ClusterState, snapshot_records
from conveyor.coordinator.store import DB_FILE, CoordinatorStore
from conveyor.protocol.errors import ErrorCode, InvalidRequestError, StorageError
from conveyor.transport.etcd import EtcdClient, EtcdSettings, compare, op_get, op_put

log = logging.getLogger(__name__)

MIGRATION_LEASE_S = 30  # the election key is held this long at most if the copy dies


@dataclass(frozen=True, slots=True)
class Migrated:
    cluster_id: str
    brokers: int
    topics: int
    partitions: int
    offsets: int


def summary(state: ClusterState) -> Migrated:
    return Migrated(
        state.cluster_id,
        len(state.brokers),
        len(state.topics),
        len(state.partitions),
        len(state.offsets),
    )


def _sqlite_dir(spec: str) -> Path | None:
    return Path(spec.removeprefix("sqlite:")) if spec.startswith("sqlite:") else None


def migrate(source: str, target: str, prefix: str, etcd: EtcdSettings | None) -> Migrated:
    """Copy ``source`` to ``target`` (one ``sqlite:DIR``, the other etcd, described by
    ``etcd`` with ``prefix``); raises InvalidRequestError or StorageError, changing
    nothing in the target on a refusal."""
    from_dir, to_dir = _sqlite_dir(source), _sqlite_dir(target)
    if (from_dir is None) == (to_dir is None) or etcd is None:
        raise InvalidRequestError(
            "migrate copies between sqlite:DIR and etcd://HOST:PORT,... (one of each)"
        )
    if from_dir is not None:
        state = _read_sqlite(from_dir)
        asyncio.run(_write_etcd(state, etcd, EtcdLayout(prefix)))
        return summary(state)
    assert to_dir is not None
    state = asyncio.run(_read_etcd(etcd, EtcdLayout(prefix)))
    _write_sqlite(state, to_dir)
    return summary(state)


def _read_sqlite(data_dir: Path) -> ClusterState:
    if not (data_dir / DB_FILE).exists():
        raise InvalidRequestError(f"{data_dir} holds no {DB_FILE}", code=ErrorCode.INVALID_REQUEST)
    store = CoordinatorStore.open(data_dir)  # its flock: the coordinator must be stopped
    try:
        return store.load()
    finally:
        store.close()


def _write_sqlite(state: ClusterState, data_dir: Path) -> None:
    if (data_dir / DB_FILE).exists():
        raise InvalidRequestError(f"{data_dir / DB_FILE} exists already: choose a new directory")
    store = CoordinatorStore.open(data_dir, cluster_id=state.cluster_id)
    try:
        store.write(snapshot_records(state))
        _same(state, store.load(), str(data_dir))
    finally:
        store.close()


async def _read_etcd(settings: EtcdSettings, layout: EtcdLayout) -> ClusterState:
    client = EtcdClient(settings)
    try:
        meta = await client.get(layout.meta)
        if not meta.kvs:
            raise InvalidRequestError(f"etcd prefix {layout.prefix} holds no cluster")
        cluster_id = str(json.loads(meta.kvs[0].value_bytes)["cluster_id"])
        # reading needs no epoch: only writes are fenced
        return await EtcdMetadataStore(client, layout, 0, cluster_id).load()
    finally:
        await client.close()


async def _write_etcd(state: ClusterState, settings: EtcdSettings, layout: EtcdLayout) -> None:
    client = EtcdClient(settings)
    try:
        existing = await client.get(layout.meta)
        if existing.kvs:
            raise InvalidRequestError(
                f"etcd prefix {layout.prefix} already holds a cluster: choose an empty prefix"
            )
        lease = await client.lease_grant(MIGRATION_LEASE_S)
        try:
            claimed = await client.txn(
                [compare(layout.leader, "CREATE", 0)],
                [op_put(layout.leader, b'{"url": "migration"}', lease.lease_id)],
                [op_get(layout.leader)],
            )
            if not claimed.succeeded:
                holder = claimed.responses[0].response_range
                url = leader_url(holder.kvs[0]) if holder and holder.kvs else None
                raise InvalidRequestError(
                    f"a coordinator is active on {layout.prefix} ({url}): stop every "
                    "coordinator of that prefix before migrating into it"
                )
            epoch = claimed.header.revision
            store = await EtcdMetadataStore.open(client, layout, epoch, cluster_id=state.cluster_id)
            await store.load()
            await store.write_snapshot(state)
            check = await EtcdMetadataStore(client, layout, epoch, state.cluster_id).load()
            _same(state, check, f"etcd prefix {layout.prefix}")
        finally:
            await client.lease_revoke(lease.lease_id)
    finally:
        await client.close()


def _same(wanted: ClusterState, found: ClusterState, where: str) -> None:
    """Check twice: what was read back is what was meant to be written."""
    if found.cluster_id != wanted.cluster_id or sorted(snapshot_records(found), key=repr) != sorted(
        snapshot_records(wanted), key=repr
    ):
        raise StorageError(
            f"the copy in {where} differs from the source after writing it",
            code=ErrorCode.CORRUPT_DATA,
        )
    log.info("migrated cluster %s into %s and read it back", wanted.cluster_id, where)
