"""The partitions this broker hosts: the data directory, opening, reconciling, closing.

Layout: ``DATA/meta.json`` (:class:`BrokerDataMeta`) and one directory per replica,
``DATA/<topic>-<partition>/``, holding the log's segment files. A replica being deleted is
first renamed to ``<topic>-<partition>.deleting`` (never a valid replica name, since the
part after the last ``-`` is not a number), so a crash midway never brings it back.

Everything that may wait for the disk (opening with recovery, closing with a flush,
deleting, retention) runs in a worker thread; the event loop keeps serving meanwhile.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import os
import shutil
from pathlib import Path

import msgspec

from conveyor.broker import producers as producer_state
from conveyor.broker.partition import Partition
from conveyor.broker.reconcile import (
    UNKNOWN_EPOCH,
    Action,
    BecomeFollower,
    BecomeLeader,
    Delete,
    Open,
    Reconfigure,
    ReplicaState,
    Skip,
    TopicPartition,
    UpdateReplicas,
    log_config_for,
)
from conveyor.protocol.errors import ConveyorError, ErrorCode, FatalError, InvalidRequestError
from conveyor.protocol.messages import BrokerDataMeta, BrokerId, PartitionReport, TopicConfig
from conveyor.protocol.topics import validate_topic_name
from conveyor.storage import Flusher, FlushPolicy, LogConfig, PartitionLog
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
        self.partitions: dict[TopicPartition, Partition] = {}

    def get(self, tp: TopicPartition) -> Partition | None:
        return self.partitions.get(tp)

    def states(self) -> dict[TopicPartition, ReplicaState]:
        return {tp: p.state for tp, p in self.partitions.items()}

    def reports(self) -> list[PartitionReport]:
        return [self.partitions[tp].report() for tp in sorted(self.partitions)]

    def _dir(self, tp: TopicPartition) -> Path:
        return self.data_dir / f"{tp.topic}-{tp.partition}"

    # ---- startup -------------------------------------------------------------------------

    async def load_existing(self) -> None:
        """Reopen (and so recover) every replica on disk before the first heartbeat, so
        the first report carries true log end offsets. Role and epoch stay unknown until
        the coordinator answers."""
        entries = await asyncio.to_thread(_list_dir, self.data_dir)
        for name in entries:
            if name.endswith(DELETING_SUFFIX):
                log.info("removing %s, left over from an interrupted delete", name)
                await asyncio.to_thread(shutil.rmtree, self.data_dir / name, True)
                continue
            tp = parse_partition_dir(name)
            if tp is None or tp in self.partitions:
                continue
            config = log_config_for(TopicConfig(), self.flush_override)
            state = ReplicaState(role="follower", leader_epoch=UNKNOWN_EPOCH, leader=None)
            state = _with_config(state, config)
            try:
                await self._open(tp, state)
            except ConveyorError as exc:
                log.error("partition %s: cannot reopen, not serving it: %s", tp, exc)

    async def _open(self, tp: TopicPartition, state: ReplicaState) -> Partition:
        partition_log = await asyncio.to_thread(
            PartitionLog.open, self._dir(tp), state.log_config, flusher=self._flusher
        )
        for base, result in partition_log.recovered:
            log.warning("partition %s: recovery of segment %d: %s", tp, base, result)
        producers = await asyncio.to_thread(producer_state.rebuild, partition_log)
        partition = Partition(tp, self.broker_id, partition_log, state, producers)
        self.partitions[tp] = partition
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
        return partition

    # ---- reconciliation ------------------------------------------------------------------

    async def apply(self, actions: list[Action]) -> None:
        """Apply reconciliation actions in order; a failing one is logged and skipped (the
        next heartbeat computes it again), the others still apply."""
        for action in actions:
            try:
                await self._apply_one(action)
            except ConveyorError as exc:
                log.error("partition %s: %s failed: %s", action.tp, type(action).__name__, exc)
            except OSError as exc:
                log.error("partition %s: %s failed: %s", action.tp, type(action).__name__, exc)

    async def _apply_one(self, action: Action) -> None:
        match action:
            case Open(tp, state, reason):
                log.info("partition %s: opening (%s)", tp, reason)
                await self._open(tp, state)
            case Reconfigure(tp, config, reason):
                log.info("partition %s: new settings (%s)", tp, reason)
                partition = self.partitions[tp]
                partition.log.reconfigure(config)
                partition.state = _with_config(partition.state, config)
                if self._cleaner is not None and config.compacted:
                    self._cleaner.wake()  # it may have become compacted, or dirtier
            case BecomeLeader(tp, state, reason) | BecomeFollower(tp, state, reason):
                log.info("partition %s: %s", tp, reason)
                partition = self.partitions[tp]
                partition.apply(_with_config(state, partition.state.log_config))
            case UpdateReplicas(tp, state, reason):
                log.info("partition %s: %s", tp, reason)
                partition = self.partitions[tp]
                partition.apply(_with_config(state, partition.state.log_config))
            case Delete(tp, reason):
                log.info("partition %s: deleting (%s)", tp, reason)
                await self._delete(tp)
            case Skip(tp, reason):
                log.warning("partition %s: not reconciled: %s", tp, reason)

    async def _delete(self, tp: TopicPartition) -> None:
        partition = self.partitions.pop(tp)
        if self._cleaner is not None:
            self._cleaner.remove(str(tp))
        partition.mark_closed()
        await asyncio.to_thread(partition.log.close)
        doomed = self._dir(tp).with_name(self._dir(tp).name + DELETING_SUFFIX)
        await asyncio.to_thread(self._dir(tp).rename, doomed)
        await asyncio.to_thread(shutil.rmtree, doomed, True)

    # ---- housekeeping --------------------------------------------------------------------

    async def apply_retention(self) -> None:
        for tp, partition in list(self.partitions.items()):
            if partition.closed or partition.reopening:
                continue
            try:
                await asyncio.to_thread(partition.log.apply_retention)
            except ConveyorError as exc:
                log.error("partition %s: retention failed: %s", tp, exc)

    async def close_all(self) -> None:
        """Close every log (each flushes and marks a clean shutdown), in a worker thread;
        the cleaner stops first (a pass in progress is given up)."""
        if self._cleaner is not None:
            await asyncio.to_thread(self._cleaner.close)
        partitions = list(self.partitions.values())
        self.partitions.clear()
        for partition in partitions:
            partition.mark_closed()
        await asyncio.to_thread(_close_logs, partitions)


def _with_config(state: ReplicaState, config: LogConfig) -> ReplicaState:
    return dataclasses.replace(state, log_config=config)


def _list_dir(directory: Path) -> list[str]:
    return sorted(p.name for p in directory.iterdir() if p.is_dir())


def _close_logs(partitions: list[Partition]) -> None:
    for partition in partitions:
        try:
            partition.log.close()
        except ConveyorError as exc:
            log.error("partition %s: close failed: %s", partition.tp, exc)
