"""Builders for coordinator unit tests: states reached through the real transitions."""

from __future__ import annotations

import sqlite3
from collections.abc import Iterable
from pathlib import Path

from conveyor.coordinator import state as core
from conveyor.coordinator.model import ClusterState, check_invariants
from conveyor.coordinator.store import DB_FILE
from conveyor.protocol.messages import BrokerHeartbeat, BrokerId, CreateTopicRequest

INTERVAL_MS = 1000
DEFAULTS = core.TopicDefaults()


def heartbeat(broker_id: int, url: str | None = None) -> BrokerHeartbeat:
    return BrokerHeartbeat(
        broker_id=BrokerId(broker_id), url=url or f"http://127.0.0.1:{9000 + broker_id}"
    )


def with_brokers(broker_ids: Iterable[int], now_ms: int = 0) -> ClusterState:
    state = ClusterState(cluster_id="test-cluster")
    for broker_id in broker_ids:
        state = core.handle_heartbeat(state, heartbeat(broker_id), now_ms, INTERVAL_MS).state
    check_invariants(state)
    return state


def with_topic(
    state: ClusterState,
    name: str,
    partitions: int = 8,
    replication_factor: int | None = None,
    now_ms: int = 0,
) -> ClusterState:
    request = CreateTopicRequest(
        name=name, partitions=partitions, replication_factor=replication_factor
    )
    result = core.create_topic(state, request, now_ms, DEFAULTS)
    check_invariants(result.state)
    return result.state


# What each schema version added, written here from the versions' history (not derived
# from the store's migrations, which these tests check): undone newest first, it turns
# a current database into one an older coordinator wrote.
_ADDED_IN_VERSION = {
    2: (
        "DROP TABLE producers",
        "ALTER TABLE partitions DROP COLUMN partition_epoch",
        "ALTER TABLE partitions DROP COLUMN removing",
        "ALTER TABLE brokers DROP COLUMN decommissioning",
    ),
    3: ("DROP TABLE share_groups",),
    4: ("DROP TABLE transactions",),
    5: ("ALTER TABLE brokers DROP COLUMN incarnation",),
    6: ("ALTER TABLE committed_offsets DROP COLUMN leader_epoch",),
    7: ("ALTER TABLE brokers DROP COLUMN kafka_address",),
}


def downgrade(data_dir: Path, version: int) -> None:
    """Make the (closed) coordinator database in ``data_dir`` a schema ``version`` one."""
    db = sqlite3.connect(data_dir / DB_FILE)
    try:
        for added_in in sorted(_ADDED_IN_VERSION, reverse=True):
            if added_in > version:
                for statement in _ADDED_IN_VERSION[added_in]:
                    db.execute(statement)
        db.execute(f"PRAGMA user_version = {version}")
        db.commit()
    finally:
        db.close()
