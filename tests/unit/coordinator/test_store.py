from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest

from conveyor.coordinator import state as core
from conveyor.coordinator.model import BrokerSeen, ClusterState
from conveyor.coordinator.store import DB_FILE, CoordinatorStore
from conveyor.protocol.errors import StorageError
from conveyor.protocol.messages import (
    BrokerHeartbeat,
    BrokerId,
    CreateTopicRequest,
    OffsetCommitRequest,
    PartitionOffset,
    TopicConfig,
)
from tests.unit.coordinator.helpers import DEFAULTS, INTERVAL_MS, downgrade, heartbeat


def drive(store: CoordinatorStore) -> ClusterState:
    """Run transitions as the service does: persist durable records, keep the state."""
    state = store.load()
    steps = [
        lambda s: core.handle_heartbeat(s, heartbeat(1), 10, INTERVAL_MS),
        lambda s: core.handle_heartbeat(s, heartbeat(2), 10, INTERVAL_MS),
        lambda s: core.create_topic(
            s,
            CreateTopicRequest(
                name="orders", partitions=4, config=TopicConfig(flush="interval:50")
            ),
            20,
            DEFAULTS,
        ),
        lambda s: core.create_topic(s, CreateTopicRequest(name="gone", partitions=1), 21, DEFAULTS),
        lambda s: core.commit_offsets(
            s,
            "g",
            OffsetCommitRequest(
                offsets=[
                    PartitionOffset(
                        topic="orders", partition=3, offset=17, metadata="x", leader_epoch=4
                    ),
                    PartitionOffset(topic="gone", partition=0, offset=1),
                ]
            ),
            30,
        ),
        lambda s: core.commit_offsets(
            s,
            "dropped",
            OffsetCommitRequest(offsets=[PartitionOffset(topic="orders", partition=0, offset=2)]),
            31,
        ),
        lambda s: core.delete_group(s, "dropped"),
        lambda s: core.delete_topic(s, "gone"),
        lambda s: core.expire_brokers(s, 10_000, 6000),
    ]
    for step in steps:
        result = step(state)
        store.write(result.durable_records)
        state = result.state
    return state


def test_round_trip_through_a_real_file(tmp_path: Path) -> None:
    store = CoordinatorStore.open(tmp_path)
    state = drive(store)
    cluster_id = store.cluster_id
    store.close()

    reopened = CoordinatorStore.open(tmp_path)
    try:
        loaded = reopened.load()
    finally:
        reopened.close()
    assert loaded.cluster_id == cluster_id == state.cluster_id
    assert loaded.brokers == state.brokers  # including alive=False after expiry
    assert loaded.topics == state.topics
    assert loaded.partitions == state.partitions
    assert loaded.offsets == state.offsets
    assert {key[0] for key in loaded.offsets} == {"g"}  # "dropped" was deleted
    assert loaded.offsets[("g", "orders", 3)].leader_epoch == 4
    assert state.offsets[("g", "orders", 3)].leader_epoch == 4
    assert loaded.topics["orders"].config.flush == "interval:50"
    assert not loaded.brokers[BrokerId(1)].alive
    assert all(p.leader is None for p in loaded.partitions.values())
    assert loaded.reports == {}  # soft state is relearnt from heartbeats


def test_the_database_uses_wal_and_stores_full_configs(tmp_path: Path) -> None:
    store = CoordinatorStore.open(tmp_path)
    drive(store)
    store.close()
    db = sqlite3.connect(tmp_path / DB_FILE)
    try:
        assert db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
        (config,) = db.execute("SELECT config FROM topics WHERE name='orders'").fetchone()
        assert '"segment_bytes":134217728' in config  # defaults kept, not omitted
        assert db.execute("SELECT count(*) FROM committed_offsets").fetchone()[0] == 1
        assert db.execute("SELECT count(*) FROM partitions").fetchone()[0] == 4
    finally:
        db.close()


def test_soft_records_are_not_written(tmp_path: Path) -> None:
    store = CoordinatorStore.open(tmp_path)
    try:
        store.write([BrokerSeen(BrokerId(1), 5)])  # would fail: broker 1 is not registered
        assert store.load().brokers == {}
    finally:
        store.close()


def test_cluster_id_is_made_once(tmp_path: Path) -> None:
    first = CoordinatorStore.open(tmp_path)
    first.close()
    second = CoordinatorStore.open(tmp_path)
    second.close()
    assert first.cluster_id == second.cluster_id
    assert len(first.cluster_id) == 36


def test_a_second_coordinator_on_the_same_directory_is_refused(tmp_path: Path) -> None:
    store = CoordinatorStore.open(tmp_path)
    try:
        with pytest.raises(StorageError, match="another coordinator"):
            CoordinatorStore.open(tmp_path)
    finally:
        store.close()
    CoordinatorStore.open(tmp_path).close()  # free again after close


def test_a_failed_transaction_writes_nothing(tmp_path: Path) -> None:
    store = CoordinatorStore.open(tmp_path)
    try:
        state = store.load()
        result = core.handle_heartbeat(state, heartbeat(1), 10, INTERVAL_MS)
        store._db.execute("DROP TABLE committed_offsets")  # make a later statement fail
        topic = core.create_topic(
            result.state, CreateTopicRequest(name="t", partitions=1), 0, DEFAULTS
        )
        offsets = core.commit_offsets(
            topic.state,
            "g",
            OffsetCommitRequest(offsets=[PartitionOffset(topic="t", partition=0, offset=1)]),
            0,
        )
        records = [*result.durable_records, *topic.durable_records, *offsets.durable_records]
        with pytest.raises(StorageError):
            store.write(records)
        assert store._db.execute("SELECT count(*) FROM brokers").fetchone()[0] == 0
        assert store._db.execute("SELECT count(*) FROM topics").fetchone()[0] == 0
    finally:
        store.close()


def test_a_newer_schema_is_refused(tmp_path: Path) -> None:
    CoordinatorStore.open(tmp_path).close()
    db = sqlite3.connect(tmp_path / DB_FILE)
    db.execute("PRAGMA user_version = 99")
    db.close()
    with pytest.raises(StorageError, match="schema version 99"):
        CoordinatorStore.open(tmp_path)
    with pytest.raises(StorageError, match="schema version 99"):  # the lock was released
        CoordinatorStore.open(tmp_path)


def beat(broker: int, incarnation: str) -> BrokerHeartbeat:
    return BrokerHeartbeat(
        broker_id=BrokerId(broker), url=f"http://127.0.0.1:{9000 + broker}", incarnation=incarnation
    )


def test_a_broker_that_restarted_while_the_coordinator_was_down_is_seen_restarted(
    tmp_path: Path,
) -> None:
    """Found by the simulation (seed 8752): the incarnation was soft, so a coordinator that
    reloaded its store could not tell that a leader had restarted meanwhile (possibly
    losing an unsynced tail), and let it go on leading at the same epoch."""
    store = CoordinatorStore.open(tmp_path)
    state = store.load()
    steps = [
        lambda s, b=b: core.handle_heartbeat(s, beat(b, f"first-{b}"), 1, INTERVAL_MS)
        for b in (1, 2, 3)
    ]
    steps.append(
        lambda s: core.create_topic(
            s, CreateTopicRequest(name="t", partitions=1, replication_factor=3), 2, DEFAULTS
        )
    )
    for step in steps:
        result = step(state)
        store.write(result.durable_records)
        state = result.state
    store.close()
    (before,) = state.partitions.values()
    leader = before.leader
    assert leader is not None

    reopened = CoordinatorStore.open(tmp_path)
    try:
        loaded = core.grant_grace(reopened.load(), 5).state
    finally:
        reopened.close()
    assert loaded.brokers[leader].incarnation == f"first-{leader}"
    after = core.handle_heartbeat(loaded, beat(leader, "second"), 6, INTERVAL_MS)
    (moved,) = after.state.partitions.values()
    assert moved.leader not in (None, leader)
    assert moved.leader_epoch == before.leader_epoch + 1
    assert leader not in moved.isr
    # the one that did not restart changes nothing
    other = next(b for b in (1, 2, 3) if b != leader)
    same = core.handle_heartbeat(loaded, beat(other, f"first-{other}"), 6, INTERVAL_MS)
    assert same.state.partitions == loaded.partitions
    assert not same.durable_records


def test_a_version_4_database_gains_the_incarnation_column(tmp_path: Path) -> None:
    store = CoordinatorStore.open(tmp_path)
    store.write(core.handle_heartbeat(store.load(), beat(1, "x"), 1, INTERVAL_MS).durable_records)
    store.close()
    downgrade(tmp_path, 4)
    migrated = CoordinatorStore.open(tmp_path)
    try:
        assert migrated.load().brokers[BrokerId(1)].incarnation == ""  # unknown
    finally:
        migrated.close()


def test_a_version_5_database_gains_the_committed_leader_epoch(tmp_path: Path) -> None:
    """Offsets committed before schema 6 read as leader epoch -1 (none); the column then
    keeps what later commits bring."""
    store = CoordinatorStore.open(tmp_path)
    drive(store)
    store.close()
    downgrade(tmp_path, 5)
    migrated = CoordinatorStore.open(tmp_path)
    try:
        state = migrated.load()
        assert state.offsets[("g", "orders", 3)].offset == 17
        assert state.offsets[("g", "orders", 3)].leader_epoch == -1
        commit = OffsetCommitRequest(
            offsets=[PartitionOffset(topic="orders", partition=3, offset=18, leader_epoch=7)]
        )
        migrated.write(core.commit_offsets(state, "g", commit, 40).durable_records)
    finally:
        migrated.close()
    reopened = CoordinatorStore.open(tmp_path)
    try:
        assert reopened.load().offsets[("g", "orders", 3)].leader_epoch == 7
    finally:
        reopened.close()


def test_a_brokers_kafka_listener_is_stored_with_its_registration(tmp_path: Path) -> None:
    """Issue 15: the Kafka address was soft (heartbeat-only), so a coordinator that took
    over named every broker without one until its next heartbeat, and Kafka clients that
    bootstrapped from the coordinator then found no broker to ask."""
    with_listener = BrokerHeartbeat(
        broker_id=BrokerId(1), url="http://127.0.0.1:9001", kafka_address="127.0.0.1:19001"
    )
    moved = BrokerHeartbeat(
        broker_id=BrokerId(1), url="http://127.0.0.1:9001", kafka_address="127.0.0.1:29001"
    )
    store = CoordinatorStore.open(tmp_path)
    try:
        registered = core.handle_heartbeat(store.load(), with_listener, 1, INTERVAL_MS)
        store.write(registered.durable_records)
        # the same listener again is no new registration: nothing durable
        again = core.handle_heartbeat(registered.state, with_listener, 2, INTERVAL_MS)
        assert not again.durable_records
        changed = core.handle_heartbeat(again.state, moved, 3, INTERVAL_MS)
        assert changed.decisions == (
            "broker 1 changed its Kafka listener from 127.0.0.1:19001 to 127.0.0.1:29001",
        )
        store.write(changed.durable_records)
    finally:
        store.close()
    reopened = CoordinatorStore.open(tmp_path)
    try:
        assert reopened.load().brokers[BrokerId(1)].kafka_address == "127.0.0.1:29001"
    finally:
        reopened.close()


def test_a_version_6_database_gains_the_kafka_address_column(tmp_path: Path) -> None:
    store = CoordinatorStore.open(tmp_path)
    store.write(core.handle_heartbeat(store.load(), beat(1, "x"), 1, INTERVAL_MS).durable_records)
    store.close()
    downgrade(tmp_path, 6)
    migrated = CoordinatorStore.open(tmp_path)
    try:
        assert migrated.load().brokers[BrokerId(1)].kafka_address == ""  # unknown till it beats
    finally:
        migrated.close()
