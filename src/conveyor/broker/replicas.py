"""The replicas' logs on disk: the data directory; opening, reconfiguring, truncating and
deleting logs (the storage effects of the broker core), retention, compaction, closing.

Layout: ``DATA/meta.json`` (:class:`BrokerDataMeta`) and one directory per replica,
``DATA/<topic>-<partition>/``, holding the log's segment files. A replica being deleted is
first renamed to ``<topic>-<partition>.deleting`` (never a valid replica name, since the
part after the last ``-`` is not a number), so a crash midway never brings it back.

Everything that may wait for the disk (opening with recovery, closing with a flush,
truncating, deleting, retention, a free-space probe) runs in a worker thread; the event
loop keeps serving meanwhile. Each operation returns the event that reports it to the
core (``Opened``, ``LogChanged``, ``DiskSpace``), with the log's facts read afterwards.
"""

from __future__ import annotations

import asyncio
import logging
import os
import shutil
from pathlib import Path

import msgspec

from conveyor.broker import producers as producer_state
from conveyor.broker.reconcile import log_config_for
from conveyor.protocol.errors import ConveyorError, ErrorCode, FatalError, InvalidRequestError
from conveyor.protocol.messages import BrokerDataMeta, BrokerId, Epoch, Offset, TopicConfig
from conveyor.protocol.replica import (
    UNKNOWN_EPOCH,
    DiskSpace,
    LogChanged,
    LogFacts,
    Opened,
    Producers,
    ReplicaState,
    TopicPartition,
)
from conveyor.protocol.topics import FlushPolicy, LogConfig, validate_topic_name
from conveyor.storage import Flusher, PartitionLog
from conveyor.storage.cleaner import LogCleaner

log = logging.getLogger(__name__)

META_FILE = "meta.json"
DELETING_SUFFIX = ".deleting"


def parse_partition_dir(name: str) -> TopicPartition | None:
    """``orders-3`` -> (orders, 3); None for anything else in the data dir."""
    topic, dash, number = name.rpartition("-")
    if not dash or not number.isdigit() or (len(number) > 1 and number[0] == "0"):
        return None
    try:
        validate_topic_name(topic)
    except InvalidRequestError:
        return None
    return TopicPartition(topic, int(number))


def load_meta(data_dir: Path, broker_id: BrokerId) -> BrokerDataMeta:
    """Read (or create) ``meta.json``; refuse a data dir that belongs to another broker."""
    path = data_dir / META_FILE
    data_dir.mkdir(parents=True, exist_ok=True)
    if not path.exists():
        meta = BrokerDataMeta(broker_id=broker_id)
        store_meta(data_dir, meta)
        return meta
    try:
        meta = msgspec.json.decode(path.read_bytes(), type=BrokerDataMeta)
    except msgspec.DecodeError as exc:
        raise FatalError(f"{path} is unreadable: {exc}", code=ErrorCode.STORAGE_ERROR) from exc
    if meta.broker_id != broker_id:
        raise FatalError(
            f"data dir {data_dir} belongs to broker {meta.broker_id}, not {broker_id}",
            code=ErrorCode.INVALID_CONFIG,
        )
    return meta


def store_meta(data_dir: Path, meta: BrokerDataMeta) -> None:
    """Write atomically (temp file, fsync, rename): a torn meta file would stop the broker."""
    path = data_dir / META_FILE
    temp = path.with_suffix(".tmp")
    with temp.open("wb") as f:
        f.write(msgspec.json.encode(meta))
        f.flush()
        os.fsync(f.fileno())
    temp.replace(path)


class ReplicaManager:
    """The open logs, by partition. Storage only: which replicas to host and what they
    are is the core's business (``core.py``); this performs what it asks for."""

    def __init__(
        self,
        broker_id: BrokerId,
        data_dir: Path,
        flusher: Flusher,
        flush_override: FlushPolicy | None = None,
        cleaner: LogCleaner | None = None,
    ) -> None:
        self.broker_id = broker_id
        self.data_dir = data_dir
        self.flush_override = flush_override
        self._flusher = flusher
        # Compacts the logs whose topic says so; it skips the others by itself.
        self._cleaner = cleaner
        self.logs: dict[TopicPartition, PartitionLog] = {}

    def get(self, tp: TopicPartition) -> PartitionLog | None:
        return self.logs.get(tp)

    def _dir(self, tp: TopicPartition) -> Path:
        return self.data_dir / f"{tp.topic}-{tp.partition}"

    # ---- startup -------------------------------------------------------------------------

    async def load_existing(self) -> list[Opened]:
        """Reopen (and so recover) every replica on disk before the first heartbeat, so
        the first report carries true log end offsets. Role and epoch stay unknown until
        the coordinator answers."""
        entries = await asyncio.to_thread(_list_dir, self.data_dir)
        opened: list[Opened] = []
        for name in entries:
            if name.endswith(DELETING_SUFFIX):
                log.info("removing %s, left over from an interrupted delete", name)
                await asyncio.to_thread(shutil.rmtree, self.data_dir / name, True)
                continue
            tp = parse_partition_dir(name)
            if tp is None or tp in self.logs:
                continue
            config = log_config_for(TopicConfig(), self.flush_override)
            state = ReplicaState(
                role="follower", leader_epoch=UNKNOWN_EPOCH, leader=None, log_config=config
            )
            try:
                opened.append(await self.open(tp, state))
            except (ConveyorError, OSError) as exc:  # as the core's opens (driver.py)
                log.error("partition %s: cannot reopen, not serving it: %s", tp, exc)
        return opened

    # ---- the core's storage effects ------------------------------------------------------

    async def open(self, tp: TopicPartition, state: ReplicaState) -> Opened:
        partition_log = await asyncio.to_thread(
            PartitionLog.open, self._dir(tp), state.log_config, flusher=self._flusher
        )
        for base, result in partition_log.recovered:
            log.warning("partition %s: recovery of segment %d: %s", tp, base, result)
        producers = await asyncio.to_thread(rebuild_producers, partition_log)
        self.logs[tp] = partition_log
        if self._cleaner is not None:
            self._cleaner.add(str(tp), partition_log)
        log.info(
            "partition %s: opened as %s at epoch %d, offsets [%d, %d)",
            tp,
            state.role,
            state.leader_epoch,
            partition_log.log_start_offset,
            partition_log.log_end_offset,
        )
        return Opened(tp=tp, state=state, log=facts(partition_log), producers=producers)

    def reconfigure(self, tp: TopicPartition, config: LogConfig) -> LogChanged:
        """A topic config change, applied to the open log in place (no reopen, no pause)."""
        partition_log = self.logs[tp]
        partition_log.reconfigure(config)
        if self._cleaner is not None and config.compacted:
            self._cleaner.wake()  # it may have become compacted, or dirtier
        return LogChanged(tp=tp, log=facts(partition_log), log_config=config)

    async def delete(self, tp: TopicPartition) -> None:
        partition_log = self.logs.pop(tp)
        if self._cleaner is not None:
            self._cleaner.remove(str(tp))
        await asyncio.to_thread(partition_log.close)
        doomed = self._dir(tp).with_name(self._dir(tp).name + DELETING_SUFFIX)
        await asyncio.to_thread(self._dir(tp).rename, doomed)
        await asyncio.to_thread(shutil.rmtree, doomed, True)

    async def truncate(self, tp: TopicPartition, offset: Offset) -> LogChanged:
        partition_log = self.logs[tp]
        await asyncio.to_thread(partition_log.truncate_to, offset)
        producers = await asyncio.to_thread(rebuild_producers, partition_log)
        return LogChanged(tp=tp, log=facts(partition_log), producers=producers)

    async def advance_start(self, tp: TopicPartition, offset: Offset) -> LogChanged:
        """Delete the records below ``offset`` (a checkpoint, then whole segments)."""
        partition_log = self.logs[tp]
        await asyncio.to_thread(partition_log.advance_start, offset)
        return LogChanged(tp=tp, log=facts(partition_log))

    def reset(self, tp: TopicPartition, offset: Offset) -> LogChanged:
        partition_log = self.logs[tp]
        partition_log.reset_to(offset)
        return LogChanged(tp=tp, log=facts(partition_log), producers={})

    async def probe_disk(self, tp: TopicPartition) -> DiskSpace | None:
        """The free space of the replica's filesystem (None when it cannot be read: the
        log stays failed)."""
        partition_log = self.logs.get(tp)
        if partition_log is None:
            return None
        try:
            stats = await asyncio.to_thread(os.statvfs, partition_log.directory)
        except OSError:
            return None
        return DiskSpace(tp=tp, free_bytes=stats.f_bavail * stats.f_frsize)

    # ---- housekeeping --------------------------------------------------------------------

    async def apply_retention(self) -> list[LogChanged]:
        """Delete expired segments; a log whose start moved is reported."""
        changed: list[LogChanged] = []
        for tp, partition_log in list(self.logs.items()):
            try:
                deleted = await asyncio.to_thread(partition_log.apply_retention)
            except ConveyorError as exc:
                log.error("partition %s: retention failed: %s", tp, exc)
                continue
            if deleted and self.logs.get(tp) is partition_log:
                changed.append(LogChanged(tp=tp, log=facts(partition_log)))
        return changed

    async def close_all(self) -> None:
        """Close every log (each flushes and marks a clean shutdown), in a worker thread;
        the cleaner stops first (a pass in progress is given up)."""
        if self._cleaner is not None:
            await asyncio.to_thread(self._cleaner.close)
        logs = list(self.logs.items())
        self.logs.clear()
        await asyncio.to_thread(_close_logs, logs)


def facts(partition_log: PartitionLog) -> LogFacts:
    """What the core knows of a log: read after every storage operation."""
    return LogFacts(
        log_start_offset=Offset(partition_log.log_start_offset),
        log_end_offset=Offset(partition_log.log_end_offset),
        durable_offset=Offset(partition_log.durable_offset),
        latest_epoch=Epoch(partition_log.latest_epoch),
    )


def rebuild_producers(
    partition_log: PartitionLog, tail_bytes: int = producer_state.REBUILD_BYTES
) -> Producers:
    """The idempotent producers' state from the headers of the log's tail (a thread).
    The log's open transactions are its own (``storage/txnrecovery.py``)."""
    segments = [(info.base_offset, info.size_bytes) for info in partition_log.segment_infos()]
    start = producer_state.tail_start(segments, partition_log.log_start_offset, tail_bytes)
    return producer_state.rebuilt(partition_log.headers(start))


def _list_dir(directory: Path) -> list[str]:
    return sorted(p.name for p in directory.iterdir() if p.is_dir())


def _close_logs(logs: list[tuple[TopicPartition, PartitionLog]]) -> None:
    for tp, partition_log in logs:
        try:
            partition_log.close()
        except ConveyorError as exc:
            log.error("partition %s: close failed: %s", tp, exc)
