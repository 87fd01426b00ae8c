"""The coordinator's durable state: one SQLite file, ``DATA_DIR/coordinator.db``.

A thin shell. It writes the durable records a transition returns, all of one transition in
one transaction (WAL mode, ``synchronous=FULL``: committed means fsynced), and on start
reads the tables back as the same records, which ``model.apply`` replays. It makes no
decisions. Not thread-safe: the service calls it from a single worker thread.

Schema (version 7, in ``PRAGMA user_version``; older files are migrated in place on open:
1 -> 2 adds ``partitions.partition_epoch`` and the ``producers`` table, 2 -> 3 the
``share_groups`` table, 3 -> 4 the ``transactions`` table, 4 -> 5 ``brokers.incarnation``,
5 -> 6 ``committed_offsets.leader_epoch``, 6 -> 7 ``brokers.kafka_address``)::

    meta(key TEXT PK, value TEXT)                     cluster_id (a uuid4, made once)
    brokers(broker_id INTEGER PK, url, alive, last_heartbeat_ms, capacity, decommissioning,
        incarnation, kafka_address)                   '' before schema 5 / 7: unknown
    topics(name TEXT PK, partitions, replication_factor, config JSON, created_ms)
    partitions(topic, partition, replicas JSON, leader NULL, leader_epoch, isr JSON,
        partition_epoch, removing JSON)  PK (topic, partition)
    producers(producer_id INTEGER PK, producer_epoch)  ids are never reused
    committed_offsets(group_id, topic, partition, committed_offset, metadata NULL,
        committed_ms, leader_epoch)  PK (group_id, topic, partition); -1 before schema 6
    share_groups(name TEXT PK, config JSON, version, created_ms)   issue 23 (queues)
    transactions(transactional_id TEXT PK, state JSON)   issue 21 (txn_model.Transaction)

``config`` holds every TopicConfig field, defaults included, so a later version with other
defaults does not silently change existing topics.
"""

from __future__ import annotations

import fcntl
import logging
import sqlite3
import uuid
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import IO, Final

import msgspec

from conveyor.coordinator.model import (
    Broker,
    BrokerRecord,
    ClusterState,
    CommittedOffset,
    GroupRemoved,
    OffsetRecord,
    OffsetRemoved,
    Partition,
    PartitionRecord,
    ProducerRecord,
    Record,
    ShareGroup,
    ShareGroupRecord,
    ShareGroupRemoved,
    Topic,
    TopicRecord,
    TopicRemoved,
    apply,
    canonical_config,
    check_invariants,
)
from conveyor.coordinator.txn_model import Transaction, TransactionRecord
from conveyor.protocol.errors import ErrorCode, StorageError
from conveyor.protocol.messages import BrokerId, Epoch, TopicConfig
from conveyor.protocol.share import ShareGroupConfig

log = logging.getLogger(__name__)

DB_FILE: Final = "coordinator.db"
LOCK_FILE: Final = "coordinator.lock"
SCHEMA_VERSION: Final = 7
_SCHEMA: Final = """
CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL) STRICT;
CREATE TABLE brokers (
    broker_id INTEGER PRIMARY KEY,
    url TEXT NOT NULL,
    alive INTEGER NOT NULL,
    last_heartbeat_ms INTEGER NOT NULL,
    capacity INTEGER NOT NULL,
    decommissioning INTEGER NOT NULL DEFAULT 0,
    incarnation TEXT NOT NULL DEFAULT '',
    kafka_address TEXT NOT NULL DEFAULT ''
) STRICT;
CREATE TABLE topics (
    name TEXT PRIMARY KEY,
    partitions INTEGER NOT NULL,
    replication_factor INTEGER NOT NULL,
    config TEXT NOT NULL,
    created_ms INTEGER NOT NULL
) STRICT;
CREATE TABLE partitions (
    topic TEXT NOT NULL,
    partition INTEGER NOT NULL,
    replicas TEXT NOT NULL,
    leader INTEGER,
    leader_epoch INTEGER NOT NULL,
    isr TEXT NOT NULL,
    partition_epoch INTEGER NOT NULL DEFAULT 0,
    removing TEXT NOT NULL DEFAULT '[]',
    PRIMARY KEY (topic, partition)
) STRICT;
CREATE TABLE producers (
    producer_id INTEGER PRIMARY KEY,
    producer_epoch INTEGER NOT NULL
) STRICT;
CREATE TABLE committed_offsets (
    group_id TEXT NOT NULL,
    topic TEXT NOT NULL,
    partition INTEGER NOT NULL,
    committed_offset INTEGER NOT NULL,
    metadata TEXT,
    committed_ms INTEGER NOT NULL,
    leader_epoch INTEGER NOT NULL DEFAULT -1,
    PRIMARY KEY (group_id, topic, partition)
) STRICT;
CREATE TABLE share_groups (
    name TEXT PRIMARY KEY,
    config TEXT NOT NULL,
    version INTEGER NOT NULL,
    created_ms INTEGER NOT NULL
) STRICT;
CREATE TABLE transactions (transactional_id TEXT PRIMARY KEY, state TEXT NOT NULL) STRICT;
"""

# version 1 -> 2: replication control (issue #4)
_MIGRATE_1_TO_2: Final = (
    "ALTER TABLE partitions ADD COLUMN partition_epoch INTEGER NOT NULL DEFAULT 0",
    "ALTER TABLE partitions ADD COLUMN removing TEXT NOT NULL DEFAULT '[]'",
    "ALTER TABLE brokers ADD COLUMN decommissioning INTEGER NOT NULL DEFAULT 0",
    "CREATE TABLE producers (producer_id INTEGER PRIMARY KEY, producer_epoch INTEGER NOT NULL)"
    " STRICT",
)

# version 2 -> 3: share groups (issue 23)
_MIGRATE_2_TO_3: Final = (
    "CREATE TABLE share_groups (name TEXT PRIMARY KEY, config TEXT NOT NULL, "
    "version INTEGER NOT NULL, created_ms INTEGER NOT NULL) STRICT",
)

# version 3 -> 4: transactions (issue 21)
_MIGRATE_3_TO_4: Final = (
    "CREATE TABLE transactions (transactional_id TEXT PRIMARY KEY, state TEXT NOT NULL) STRICT",
)

# version 4 -> 5: the broker's incarnation is durable, so that a coordinator that restarted
# or took over still sees that a broker restarted meanwhile (state.handle_heartbeat)
_MIGRATE_4_TO_5: Final = ("ALTER TABLE brokers ADD COLUMN incarnation TEXT NOT NULL DEFAULT ''",)

# version 5 -> 6: a committed offset keeps the committer's leader epoch (Kafka's committed
# leader epoch, KIP-320); offsets committed before read as -1 (none), as Kafka's from before
_MIGRATE_5_TO_6: Final = (
    "ALTER TABLE committed_offsets ADD COLUMN leader_epoch INTEGER NOT NULL DEFAULT -1",
)

# version 6 -> 7: the broker's Kafka listener is durable, so that a coordinator that took
# over names it to Kafka clients at once, not only after the broker's next heartbeat
_MIGRATE_6_TO_7: Final = ("ALTER TABLE brokers ADD COLUMN kafka_address TEXT NOT NULL DEFAULT ''",)

_MIGRATIONS: Final = {
    1: _MIGRATE_1_TO_2,
    2: _MIGRATE_2_TO_3,
    3: _MIGRATE_3_TO_4,
    4: _MIGRATE_4_TO_5,
    5: _MIGRATE_5_TO_6,
    6: _MIGRATE_6_TO_7,
}

_ids = msgspec.json.Encoder()


def _encode_ids(ids: Sequence[int]) -> str:
    return _ids.encode(list(ids)).decode()


def _decode_ids(text: str) -> tuple[BrokerId, ...]:
    return tuple(BrokerId(b) for b in msgspec.json.decode(text, type=list[int]))


def _encode_config(config: TopicConfig) -> str:
    # asdict keeps fields equal to their defaults, which the wire encoding leaves out
    return _ids.encode(msgspec.structs.asdict(config)).decode()


class CoordinatorStore:
    def __init__(
        self, connection: sqlite3.Connection, path: Path, cluster_id: str, lock: IO[bytes]
    ) -> None:
        self._db = connection
        self._lock = lock
        self.path = path
        self.cluster_id = cluster_id

    @classmethod
    def open(cls, data_dir: Path, *, cluster_id: str | None = None) -> CoordinatorStore:
        """Open (creating on first use) the database under ``data_dir``; fail if another
        coordinator process has it open."""
        try:
            data_dir.mkdir(parents=True, exist_ok=True)
            lock = _lock_directory(data_dir)
        except OSError as exc:
            raise StorageError(f"cannot use coordinator data directory {data_dir}: {exc}") from exc
        path = data_dir / DB_FILE
        try:
            db, cluster_id = cls._connect(path, cluster_id)
        except BaseException:
            lock.close()
            raise
        return cls(db, path, cluster_id, lock)

    @classmethod
    def _connect(cls, path: Path, new_id: str | None) -> tuple[sqlite3.Connection, str]:
        try:
            # isolation_level None: no implicit transactions; every write is in _transaction
            db = sqlite3.connect(path, isolation_level=None)
        except sqlite3.Error as exc:
            raise StorageError(f"cannot open coordinator database {path}: {exc}") from exc
        try:
            mode = db.execute("PRAGMA journal_mode=WAL").fetchone()[0]
            if mode != "wal":  # e.g. a network file system without shared memory
                log.warning("sqlite journal mode is %s, not wal, on %s", mode, path)
            db.execute("PRAGMA synchronous=FULL")
            return db, cls._initialise(db, new_id)
        except sqlite3.Error as exc:
            db.close()
            raise StorageError(f"cannot open coordinator database {path}: {exc}") from exc
        except BaseException:
            db.close()
            raise

    @staticmethod
    def _initialise(db: sqlite3.Connection, new_id: str | None) -> str:
        """The database's cluster_id, making the schema on first use (with ``new_id``, a
        migration's, or a new uuid4)."""
        version = int(db.execute("PRAGMA user_version").fetchone()[0])
        if version > SCHEMA_VERSION:
            raise StorageError(
                f"the database has schema version {version}; this coordinator knows "
                f"{SCHEMA_VERSION}: run a newer coordinator"
            )
        if version == 0:
            cluster_id = new_id or str(uuid.uuid4())
            db.execute("BEGIN IMMEDIATE")
            # one by one: executescript would commit the open transaction first
            for statement in _SCHEMA.split(";"):
                if statement.strip():
                    db.execute(statement)
            db.execute("INSERT INTO meta (key, value) VALUES ('cluster_id', ?)", (cluster_id,))
            db.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")
            db.execute("COMMIT")
            log.info("created coordinator database: cluster_id=%s", cluster_id)
            return cluster_id
        if version < SCHEMA_VERSION:
            db.execute("BEGIN IMMEDIATE")
            for step in range(version, SCHEMA_VERSION):  # from step to step + 1, in order
                for statement in _MIGRATIONS[step]:
                    db.execute(statement)
            db.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")
            db.execute("COMMIT")
            log.info("migrated coordinator database from schema %d to %d", version, SCHEMA_VERSION)
        row = db.execute("SELECT value FROM meta WHERE key = 'cluster_id'").fetchone()
        if row is None:
            raise StorageError(
                "coordinator database has no cluster_id", code=ErrorCode.CORRUPT_DATA
            )
        return str(row[0])

    @contextmanager
    def _transaction(self) -> Iterator[sqlite3.Connection]:
        self._db.execute("BEGIN IMMEDIATE")
        try:
            yield self._db
        except BaseException:
            self._db.execute("ROLLBACK")
            raise
        self._db.execute("COMMIT")

    def write(self, records: Sequence[Record]) -> None:
        """Persist the durable records of one transition atomically (soft ones are
        skipped). Returns once committed and fsynced; on failure nothing is written."""
        try:
            with self._transaction() as db:
                for record in records:
                    _write_record(db, record)
        except sqlite3.Error as exc:
            raise StorageError(f"coordinator database write failed: {exc}") from exc

    def load(self) -> ClusterState:
        """Read every table back and replay it into a state; check its invariants."""
        try:
            records = list(self._read_records())
        except (sqlite3.Error, msgspec.DecodeError, msgspec.ValidationError) as exc:
            raise StorageError(
                f"cannot read coordinator database {self.path}: {exc}", code=ErrorCode.CORRUPT_DATA
            ) from exc
        state = apply(ClusterState(cluster_id=self.cluster_id), records)
        check_invariants(state)
        return state

    def _read_records(self) -> Iterator[Record]:
        db = self._db
        for row in db.execute(
            "SELECT broker_id, url, alive, last_heartbeat_ms, capacity, decommissioning, "
            "incarnation, kafka_address FROM brokers"
        ):
            broker_id, url, alive, heartbeat_ms, capacity, draining, incarnation, kafka = row
            broker = Broker(
                BrokerId(broker_id), url, bool(alive), heartbeat_ms, capacity, bool(draining),
                incarnation, kafka,
            )  # fmt: skip
            yield BrokerRecord(broker)
        for row in db.execute(
            "SELECT name, partitions, replication_factor, config, created_ms FROM topics"
        ):
            config = canonical_config(msgspec.json.decode(row[3], type=TopicConfig))
            yield TopicRecord(Topic(row[0], row[1], row[2], config, row[4]))
        for row in db.execute(
            "SELECT topic, partition, replicas, leader, leader_epoch, isr, partition_epoch, "
            "removing FROM partitions"
        ):
            leader = None if row[3] is None else BrokerId(row[3])
            yield PartitionRecord(
                Partition(
                    row[0],
                    row[1],
                    _decode_ids(row[2]),
                    leader,
                    Epoch(row[4]),
                    _decode_ids(row[5]),
                    Epoch(row[6]),
                    _decode_ids(row[7]),
                )
            )
        for row in db.execute("SELECT producer_id, producer_epoch FROM producers"):
            yield ProducerRecord(row[0], row[1])
        for row in db.execute(
            "SELECT group_id, topic, partition, committed_offset, metadata, committed_ms, "
            "leader_epoch FROM committed_offsets"
        ):
            yield OffsetRecord(
                CommittedOffset(row[0], row[1], row[2], row[3], row[4], row[5], row[6])
            )
        for row in db.execute("SELECT name, config, version, created_ms FROM share_groups"):
            share_config = msgspec.json.decode(row[1], type=ShareGroupConfig)
            yield ShareGroupRecord(ShareGroup(row[0], share_config, row[2], row[3]))
        for row in db.execute("SELECT state FROM transactions"):
            yield TransactionRecord(msgspec.json.decode(row[0], type=Transaction))

    def close(self) -> None:
        self._db.close()
        self._lock.close()  # releases the flock


def _lock_directory(data_dir: Path) -> IO[bytes]:
    """Hold an exclusive flock on ``DATA_DIR/coordinator.lock`` for the process lifetime:
    two coordinators deciding over one database would each believe the other's brokers
    dead. The kernel drops the lock when the process dies, even by SIGKILL."""
    handle = (data_dir / LOCK_FILE).open("ab")
    try:
        fcntl.flock(handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        handle.close()
        raise StorageError(
            f"another coordinator is using {data_dir} (it holds {LOCK_FILE})"
        ) from None
    return handle


def _write_record(db: sqlite3.Connection, record: Record) -> None:
    match record:
        case BrokerRecord(broker=b):
            db.execute(
                "INSERT OR REPLACE INTO brokers "
                "(broker_id, url, alive, last_heartbeat_ms, capacity, decommissioning, "
                "incarnation, kafka_address) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                (
                    b.broker_id,
                    b.url,
                    int(b.alive),
                    b.last_heartbeat_ms,
                    b.capacity,
                    int(b.decommissioning),
                    b.incarnation,
                    b.kafka_address,
                ),
            )
        case TopicRecord(topic=t):
            db.execute(
                "INSERT OR REPLACE INTO topics "
                "(name, partitions, replication_factor, config, created_ms) VALUES (?, ?, ?, ?, ?)",
                (
                    t.name,
                    t.partition_count,
                    t.replication_factor,
                    _encode_config(t.config),
                    t.created_ms,
                ),
            )
        case PartitionRecord(partition=p):
            db.execute(
                "INSERT OR REPLACE INTO partitions "
                "(topic, partition, replicas, leader, leader_epoch, isr, partition_epoch, "
                "removing) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                (
                    p.topic,
                    p.partition,
                    _encode_ids(p.replicas),
                    p.leader,
                    p.leader_epoch,
                    _encode_ids(p.isr),
                    p.partition_epoch,
                    _encode_ids(p.removing),
                ),
            )
        case ProducerRecord(producer_id=producer_id, producer_epoch=producer_epoch):
            db.execute(
                "INSERT OR REPLACE INTO producers (producer_id, producer_epoch) VALUES (?, ?)",
                (producer_id, producer_epoch),
            )
        case TopicRemoved(name=name):
            db.execute("DELETE FROM partitions WHERE topic = ?", (name,))
            db.execute("DELETE FROM committed_offsets WHERE topic = ?", (name,))
            db.execute("DELETE FROM topics WHERE name = ?", (name,))
        case GroupRemoved(group=group):
            db.execute("DELETE FROM committed_offsets WHERE group_id = ?", (group,))
        case OffsetRemoved(group=group, topic=topic, partition=partition):
            db.execute(
                "DELETE FROM committed_offsets WHERE group_id = ? AND topic = ? AND partition = ?",
                (group, topic, partition),
            )
        case OffsetRecord(offset=o):
            db.execute(
                "INSERT OR REPLACE INTO committed_offsets "
                "(group_id, topic, partition, committed_offset, metadata, committed_ms, "
                "leader_epoch) VALUES (?, ?, ?, ?, ?, ?, ?)",
                (o.group, o.topic, o.partition, o.offset, o.metadata, o.committed_ms,
                 o.leader_epoch),
            )  # fmt: skip
        case ShareGroupRecord(group=g):
            db.execute(
                "INSERT OR REPLACE INTO share_groups (name, config, version, created_ms) "
                "VALUES (?, ?, ?, ?)",
                (g.name, _ids.encode(msgspec.structs.asdict(g.config)).decode(), g.version,
                 g.created_ms),
            )  # fmt: skip
        case ShareGroupRemoved(name=name):
            db.execute("DELETE FROM share_groups WHERE name = ?", (name,))
        case TransactionRecord(transaction=t):
            db.execute(
                "INSERT OR REPLACE INTO transactions (transactional_id, state) VALUES (?, ?)",
                (t.transactional_id, _ids.encode(msgspec.to_builtins(t)).decode()),
            )
        case _:
            pass  # soft state (BrokerSeen) is never persisted
