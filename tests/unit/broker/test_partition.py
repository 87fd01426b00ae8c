"""Partition's durability callbacks: a truncated write is retriable, not a failed log."""

from __future__ import annotations

import asyncio
from concurrent.futures import Future
from pathlib import Path

from conveyor.broker.partition import Partition
from conveyor.broker.reconcile import ReplicaState, TopicPartition
from conveyor.protocol.errors import LogTruncatedError, StorageError
from conveyor.protocol.messages import BrokerId
from conveyor.protocol.records import encode_batch
from conveyor.storage import PartitionLog


def _batch() -> bytes:
    return encode_batch([(None, b"v")], timestamp_ms=1_700_000_000_000)


def _failed(exc: Exception) -> Future[int]:
    future: Future[int] = Future()
    future.set_exception(exc)
    return future


def test_log_truncated_keeps_the_partition_writable(tmp_path: Path) -> None:
    async def body() -> None:
        with PartitionLog.open(tmp_path / "t-0") as log_:
            state = ReplicaState(role="leader", leader_epoch=1, leader=BrokerId(1))
            partition = Partition(TopicPartition("t", 0), BrokerId(1), log_, state)
            partition._durable_done(_failed(LogTruncatedError("offset 3 was truncated")))
            assert partition.failure is None
            assert partition.append(_batch()).last_offset == 0

    asyncio.run(body())


def test_storage_error_fails_the_partition(tmp_path: Path) -> None:
    async def body() -> None:
        with PartitionLog.open(tmp_path / "t-0") as log_:
            state = ReplicaState(role="leader", leader_epoch=1, leader=BrokerId(1))
            partition = Partition(TopicPartition("t", 0), BrokerId(1), log_, state)
            partition._durable_done(_failed(StorageError("fsync failed")))
            assert isinstance(partition.failure, StorageError)

    asyncio.run(body())
