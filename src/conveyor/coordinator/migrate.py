"""``conveyor coordinator migrate --from SOURCE --to TARGET``: copy a cluster's metadata
between stores, keeping its cluster_id (brokers check it), so a cluster moves from one
coordinator on SQLite to several on etcd, or an etcd prefix is backed up to (and restored
from) a SQLite file.

    sqlite:DIR  -> etcd://...   the prefix must be empty; the copy takes the election key
                                for its duration, so no coordinator may be active there
    etcd://...  -> sqlite:DIR   DIR must not hold a coordinator.db yet (a backup, or the way
                                back to a single coordinator)

The copy is the state as records (``model.snapshot_records``): brokers, topics, partitions
with their epochs, producer ids and committed offsets; and the security state: users (their
password hashes and SCRAM verifiers), API tokens (their digests) and ACL rules, with the
snapshot version brokers compare (the SQLite file's security tables, the etcd prefix's
``security`` key). Both are read back from the target and compared before the command
reports success.
"""

from __future__ import annotations

import asyncio
import json
import logging
from dataclasses import dataclass
from pathlib import Path

import msgspec

from conveyor.coordinator.etcd_store import EtcdLayout, EtcdMetadataStore, leader_url
from conveyor.coordinator.model import ClusterState, snapshot_records
from conveyor.coordinator.security import SecurityStore
from conveyor.coordinator.store import DB_FILE, CoordinatorStore
from conveyor.protocol.errors import ErrorCode, InvalidRequestError, StorageError
from conveyor.protocol.security import SecuritySnapshot
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
    users: int
    tokens: int
    acls: int


def summary(state: ClusterState, security: SecuritySnapshot) -> Migrated:
    return Migrated(
        state.cluster_id,
        len(state.brokers),
        len(state.topics),
        len(state.partitions),
        len(state.offsets),
        len(security.users),
        len(security.tokens),
        len(security.acls),
    )


def _empty_security() -> SecuritySnapshot:
    return SecuritySnapshot(version=0, enabled=False, users=[], tokens=[], acls=[])


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
        state, security = _read_sqlite(from_dir)
        asyncio.run(_write_etcd(state, security, etcd, EtcdLayout(prefix)))
        return summary(state, security)
    assert to_dir is not None
    state, security = asyncio.run(_read_etcd(etcd, EtcdLayout(prefix)))
    _write_sqlite(state, security, to_dir)
    return summary(state, security)


def _read_sqlite(data_dir: Path) -> tuple[ClusterState, SecuritySnapshot]:
    if not (data_dir / DB_FILE).exists():
        raise InvalidRequestError(f"{data_dir} holds no {DB_FILE}", code=ErrorCode.INVALID_REQUEST)
    store = CoordinatorStore.open(data_dir)  # its flock: the coordinator must be stopped
    try:
        return store.load(), _read_sqlite_security(data_dir)
    finally:
        store.close()


def _read_sqlite_security(data_dir: Path) -> SecuritySnapshot:
    tables = SecurityStore(data_dir, enabled=False)
    try:
        return tables.snapshot
    finally:
        tables.close()


def _write_sqlite(state: ClusterState, security: SecuritySnapshot, data_dir: Path) -> None:
    if (data_dir / DB_FILE).exists():
        raise InvalidRequestError(f"{data_dir / DB_FILE} exists already: choose a new directory")
    store = CoordinatorStore.open(data_dir, cluster_id=state.cluster_id)
    try:
        store.write(snapshot_records(state))
        _same(state, store.load(), str(data_dir))
        tables = SecurityStore(data_dir, enabled=False)
        try:
            tables.replace_all(security)
        finally:
            tables.close()
        _same_security(security, _read_sqlite_security(data_dir), str(data_dir))
    finally:
        store.close()


async def _read_etcd(
    settings: EtcdSettings, layout: EtcdLayout
) -> tuple[ClusterState, SecuritySnapshot]:
    client = EtcdClient(settings)
    try:
        meta = await client.get(layout.meta)
        if not meta.kvs:
            raise InvalidRequestError(f"etcd prefix {layout.prefix} holds no cluster")
        cluster_id = str(json.loads(meta.kvs[0].value_bytes)["cluster_id"])
        # reading needs no epoch: only writes are fenced
        state = await EtcdMetadataStore(client, layout, 0, cluster_id).load()
        return state, await _read_etcd_security(client, layout)
    finally:
        await client.close()


async def _read_etcd_security(client: EtcdClient, layout: EtcdLayout) -> SecuritySnapshot:
    found = await client.get(layout.security)
    if not found.kvs:
        return _empty_security()
    try:
        return msgspec.json.decode(found.kvs[0].value_bytes, type=SecuritySnapshot)
    except msgspec.DecodeError as exc:  # ValidationError too
        raise StorageError(
            f"etcd key {layout.security} holds no security snapshot: {exc}",
            code=ErrorCode.CORRUPT_DATA,
        ) from exc


async def _write_etcd(
    state: ClusterState, security: SecuritySnapshot, settings: EtcdSettings, layout: EtcdLayout
) -> None:
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
            # security first: until the cluster's meta key exists, a failed copy can be
            # run again on the same prefix
            await _write_etcd_security(client, layout, epoch, security)
            store = await EtcdMetadataStore.open(client, layout, epoch, cluster_id=state.cluster_id)
            await store.load()
            await store.write_snapshot(state)
            check = await EtcdMetadataStore(client, layout, epoch, state.cluster_id).load()
            _same(state, check, f"etcd prefix {layout.prefix}")
        finally:
            await client.lease_revoke(lease.lease_id)
    finally:
        await client.close()


async def _write_etcd_security(
    client: EtcdClient, layout: EtcdLayout, epoch: int, security: SecuritySnapshot
) -> None:
    """The snapshot under ``PREFIX/security``, fenced by the migration's hold on the
    election key as every write of an active coordinator is (``security_etcd.py``)."""
    written = await client.txn(
        [compare(layout.leader, "CREATE", epoch)],
        [op_put(layout.security, msgspec.json.encode(security))],
    )
    if not written.succeeded:
        raise StorageError(
            f"lost the election key of {layout.prefix} while migrating: start again on an "
            "empty prefix",
            code=ErrorCode.NOT_COORDINATOR,
        )
    stored = await _read_etcd_security(client, layout)
    _same_security(security, stored, f"etcd prefix {layout.prefix}")


def _same_security(wanted: SecuritySnapshot, found: SecuritySnapshot, where: str) -> None:
    """Users, tokens, rules and version read back equal those written (``enabled`` is
    each coordinator's own setting, not stored state)."""
    if msgspec.structs.replace(found, enabled=wanted.enabled) != wanted:
        raise StorageError(
            f"the security state in {where} differs from the source after writing it",
            code=ErrorCode.CORRUPT_DATA,
        )


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
