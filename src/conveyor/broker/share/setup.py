"""Builds a broker's share-group parts from narrow dependencies (``BrokerService`` calls
:func:`build_share` with its operations and views, never hands itself over)."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Protocol

from conveyor.broker.share.handle import Context, DataPartition
from conveyor.broker.share.manager import ShareManager
from conveyor.broker.share.metrics import ShareMetricsCollector
from conveyor.broker.share.remote import DeadLetterSink, GroupConfigs, Metadata, RoutedStateClient
from conveyor.broker.share.store import StatePartition, StateStore
from conveyor.protocol.replica import TopicPartition
from conveyor.protocol.share import STATE_TOPIC
from conveyor.storage import PartitionLog
from conveyor.transport.client import AsyncHTTP
from conveyor.transport.clock import Clock


class ReplicaView(Protocol):
    @property
    def is_leader(self) -> bool: ...

    @property
    def leader_epoch(self) -> int: ...

    @property
    def high_watermark(self) -> int: ...


@dataclass(frozen=True, slots=True)
class LeaderOps:
    """What the share groups read of the broker: the core's view of a replica, its log,
    the wake-up event of its changes, and the lookup that raises NOT_LEADER."""

    replica: Callable[[TopicPartition], ReplicaView | None]
    log: Callable[[TopicPartition], PartitionLog | None]
    wakeup: Callable[[TopicPartition], asyncio.Future[None]]
    leader_partition: Callable[[str, int], Awaitable[StatePartition]]
    produce: Callable[[str, int, bytes], Awaitable[int]]  # acks=all; the last offset


class _Leading:
    """A live view of a partition this broker led when it was looked up: every property
    reads the current state (the core's replica is replaced on each change)."""

    def __init__(self, ops: LeaderOps, tp: TopicPartition, log: PartitionLog) -> None:
        self._ops = ops
        self._tp = tp
        self.log = log

    @property
    def _replica(self) -> ReplicaView | None:
        return self._ops.replica(self._tp)

    @property
    def is_leader(self) -> bool:
        replica = self._replica
        return replica is not None and replica.is_leader and self._ops.log(self._tp) is self.log

    @property
    def leader_epoch(self) -> int:
        replica = self._replica
        return -1 if replica is None else replica.leader_epoch

    @property
    def high_watermark(self) -> int:
        replica = self._replica
        return 0 if replica is None else replica.high_watermark

    def read(self, offset: int, max_bytes: int, upper_offset: int | None) -> bytes:
        return self.log.read(offset, max_bytes, upper_offset=upper_offset)

    def wakeup(self) -> asyncio.Future[None]:
        return self._ops.wakeup(self._tp)


@dataclass(frozen=True, slots=True)
class ShareServices:
    manager: ShareManager
    store: StateStore


def build_share(
    *,
    ops: LeaderOps,
    metadata: Metadata,
    http: AsyncHTTP,
    coordinator_url: str,
    clock: Clock,
    metrics: ShareMetricsCollector,
    stopping: Callable[[], bool],
) -> ShareServices:
    async def state_leader(number: int) -> StatePartition:
        return await ops.leader_partition(STATE_TOPIC, number)

    async def state_append(number: int, batch: bytes) -> int:
        return await ops.produce(STATE_TOPIC, number, batch)

    async def data_leader(topic: str, partition: int) -> DataPartition:
        await ops.leader_partition(topic, partition)  # NOT_LEADER and friends
        tp = TopicPartition(topic, partition)
        log = ops.log(tp)
        assert log is not None  # leader_partition found it a moment ago
        return _Leading(ops, tp, log)

    store = StateStore(state_leader, state_append)
    context = Context(
        data_partition=data_leader,
        state=RoutedStateClient(store, metadata, http),
        now_ms=clock.now_ms,
    )

    async def produce(topic: str, partition: int, batch: bytes) -> object:
        return await ops.produce(topic, partition, batch)

    manager = ShareManager(
        context=context,
        configs=GroupConfigs(http, coordinator_url, clock.now_ms),
        sink=DeadLetterSink(
            http=http, coordinator_url=coordinator_url, metadata=metadata, produce_local=produce
        ),
        metrics=metrics,
        stopping=stopping,
    )
    metrics.stats = manager.stats
    return ShareServices(manager, store)
