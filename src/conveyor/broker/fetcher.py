"""The follower's side of replication: one fetch loop per leader broker.

Each loop copies every partition this broker follows from that leader:

1. **Truncate first** (KIP-101/279): for a partition at an epoch not yet validated, ask the
   leader where the follower's latest epoch ends in the leader's log (``epoch-end``) and
   cut everything beyond it, so a suffix the new leader never had (writes of a dead leader
   that were never acknowledged) disappears before anything new is appended.
2. **Fetch**: a long-poll carrying each partition's log end and durable offset; append the
   answer byte for byte, wait until it is durable (per the topic's flush policy), and fetch
   again at once: that next fetch is what tells the leader the data is safe here, so the
   high watermark (and ``acks=all``) moves one round trip after the fsync.

Errors of one partition (stale epoch, not leader) leave it for the next heartbeat to fix;
a failing leader backs the whole loop off with jitter. Level-triggered: each round reads
the partitions' current roles, so a reconcile that changes a leader is picked up without
any signal, and a loop whose leader no longer leads anything ends by itself.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
from typing import TYPE_CHECKING, Final

import msgspec

from conveyor.broker import producers as producer_state
from conveyor.broker.partition import Partition
from conveyor.broker.reconcile import TopicPartition
from conveyor.broker.replication import decode_fetch_response
from conveyor.broker.rules import truncation_offset
from conveyor.protocol.backoff import BELOW, backoff_ms
from conveyor.protocol.errors import ConveyorError, ErrorCode
from conveyor.protocol.messages import (
    BrokerId,
    Epoch,
    EpochEndPartition,
    EpochEndRequest,
    EpochEndResponse,
    ReplicaFetchPartition,
    ReplicaFetchRequest,
)

if TYPE_CHECKING:
    from conveyor.broker.service import BrokerService

log = logging.getLogger(__name__)

FETCH_PATH: Final = "/internal/v1/replicas/fetch"
EPOCH_END_PATH: Final = "/internal/v1/replicas/epoch-end"
FRAMED_CONTENT_TYPE: Final = "application/vnd.conveyor.replica-fetch"
_SUPERVISE_INTERVAL_S: Final = 0.1
_DURABLE_WAIT_S: Final = 10.0


class ReplicaFetchers:
    def __init__(self, service: BrokerService) -> None:
        self.service = service
        self._loops: dict[BrokerId, asyncio.Task[None]] = {}
        # The epoch at which each followed partition was last checked against its leader.
        self._validated: dict[TopicPartition, int] = {}
        self._rng = random.Random()

    def following(self, leader: BrokerId) -> list[Partition]:
        return [
            p
            for p in self.service.replicas.partitions.values()
            if p.role == "follower"
            and p.state.leader == leader
            and p.leader_epoch >= 0
            and not p.closed
            and not p.reopening
            and not p.log_failed
        ]

    async def run(self) -> None:
        """Start a loop for every leader this broker follows; forget finished ones."""
        try:
            while not self.service.stopping:
                leaders = {
                    p.state.leader
                    for p in self.service.replicas.partitions.values()
                    if p.role == "follower" and p.state.leader not in (None, self.service.broker_id)
                }
                for leader in leaders:
                    if leader is not None and leader not in self._loops:
                        self._loops[leader] = asyncio.create_task(
                            self._loop(leader), name=f"replica-fetcher-{leader}"
                        )
                for leader, task in list(self._loops.items()):
                    if task.done():
                        del self._loops[leader]
                hosted = self.service.replicas.partitions
                for tp in [tp for tp in self._validated if tp not in hosted]:
                    del self._validated[tp]
                await asyncio.sleep(_SUPERVISE_INTERVAL_S)
        finally:
            for task in self._loops.values():
                task.cancel()
            for task in self._loops.values():
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await task

    async def _loop(self, leader: BrokerId) -> None:
        failures = 0
        while not self.service.stopping:
            partitions = self.following(leader)
            if not partitions:
                return
            url = self.service.metadata.leader_url(leader)
            try:
                if url is None:
                    raise ConveyorError(
                        f"no address known for broker {leader}", code=ErrorCode.NETWORK_ERROR
                    )
                await self._truncate(url, partitions)
                ready = [p for p in partitions if self._validated.get(p.tp) == p.leader_epoch]
                progressed = await self._fetch(url, ready) if ready else False
            except (ConveyorError, OSError, msgspec.DecodeError) as exc:
                progressed = False
                if failures == 0:
                    log.warning("replica fetch from broker %s failed: %s", leader, exc)
                else:
                    log.debug("replica fetch from broker %s failed again: %s", leader, exc)
            if progressed:
                failures = 0
                continue
            failures += 1
            delay_ms = backoff_ms(
                failures - 1, base_ms=50, max_ms=1000, draw=self._rng.random(), jitter=BELOW
            )
            await asyncio.sleep(delay_ms / 1000)

    # ---- truncation ----------------------------------------------------------------------

    async def _truncate(self, url: str, partitions: list[Partition]) -> None:
        unchecked = [p for p in partitions if self._validated.get(p.tp) != p.leader_epoch]
        empty = [p for p in unchecked if p.log.latest_epoch < 0]
        for partition in empty:
            # Nothing this log holds was written under any epoch: nothing to cut.
            self._validated[partition.tp] = partition.leader_epoch
        asking = [p for p in unchecked if p.log.latest_epoch >= 0]
        if not asking:
            return
        epochs = {p.tp: p.leader_epoch for p in asking}
        request = EpochEndRequest(
            broker_id=self.service.broker_id,
            partitions=[
                EpochEndPartition(
                    topic=p.tp.topic,
                    partition=p.tp.partition,
                    current_leader_epoch=Epoch(p.leader_epoch),
                    epoch=p.log.latest_epoch,
                )
                for p in asking
            ],
        )
        response = await self.service.http.call(
            "POST", url + EPOCH_END_PATH, EpochEndResponse, body=request, timeout_s=10.0
        )
        for partition, result in zip(asking, response.partitions, strict=True):
            if result.error is not None:
                log.debug("partition %s: epoch end: %s", partition.tp, result.error.message)
                continue
            if partition.closed or partition.leader_epoch != epochs[partition.tp]:
                continue  # the role changed meanwhile: check again next round
            await self._cut(partition, result.epoch, result.end_offset)
            self._validated[partition.tp] = epochs[partition.tp]

    async def _cut(self, partition: Partition, leader_epoch: int, leader_end: int) -> None:
        log_ = partition.log
        if leader_epoch < 0:
            # The leader knows no epoch this old: keep what consumers may have seen (the
            # high watermark), as Kafka does, and copy the rest again.
            cut = min(partition.high_watermark, log_.log_end_offset)
        else:
            own_epoch, own_end = log_.end_offset_for_epoch(leader_epoch)
            if own_epoch < 0:
                own_end = log_.log_start_offset
            cut = truncation_offset(
                leader_end_offset_for_epoch=leader_end,
                follower_end_offset_for_epoch=own_end,
                follower_log_end=log_.log_end_offset,
            )
        if cut < log_.log_end_offset:
            log.warning(
                "partition %s: truncating to %d (log end %d): the leader's epoch %d ends there",
                partition.tp,
                cut,
                log_.log_end_offset,
                leader_epoch,
            )
            await asyncio.to_thread(log_.truncate_to, cut)
            partition.producers = await asyncio.to_thread(producer_state.rebuild, log_)
            partition.set_follower_high_watermark(partition.high_watermark)

    # ---- fetching ------------------------------------------------------------------------

    async def _fetch(self, url: str, partitions: list[Partition]) -> bool:
        """One fetch round; True when at least one partition got an answer without error."""
        config = self.service.config
        asked = [(p, p.leader_epoch, p.log.log_end_offset) for p in partitions]
        request = ReplicaFetchRequest(
            broker_id=self.service.broker_id,
            partitions=[
                ReplicaFetchPartition(
                    topic=p.tp.topic,
                    partition=p.tp.partition,
                    leader_epoch=Epoch(epoch),
                    fetch_offset=offset,
                    durable_offset=p.log.durable_offset,
                )
                for p, epoch, offset in asked
            ],
            max_wait_ms=config.replica_fetch_wait_ms_max,
            partition_max_bytes=config.replica_fetch_partition_bytes_max,
            max_bytes=config.replica_fetch_bytes_max,
        )
        loop = asyncio.get_running_loop()
        started = loop.time()
        _, _, body = await self.service.http.request(
            "POST",
            url + FETCH_PATH,
            body=msgspec.json.encode(request),
            accept=FRAMED_CONTENT_TYPE,
            timeout_s=config.replica_fetch_wait_ms_max / 1000 + 10.0,
        )
        self.service.metrics.observe_replication_fetch(loop.time() - started)
        response, chunks = decode_fetch_response(body)
        appended: list[Partition] = []
        progressed = False
        behind = False
        for (partition, epoch, offset), result, chunk in zip(
            asked, response.partitions, chunks, strict=True
        ):
            if partition.closed or partition.role != "follower" or partition.leader_epoch != epoch:
                continue
            if result.error is not None:
                self._on_error(partition, offset, result.error.code, result.log_start_offset)
                continue
            progressed = True
            if chunk:
                try:
                    partition.append_replicated(chunk)
                    appended.append(partition)
                except ConveyorError as exc:
                    log.warning("partition %s: replicated append refused: %s", partition.tp, exc)
                    self._validated.pop(partition.tp, None)
                    continue
            partition.set_follower_high_watermark(result.high_watermark)
            behind = behind or partition.log.log_end_offset < result.log_end_offset
        # Ask for durability of every append (a group-commit fsync in the background, so
        # the durable offset this replica reports keeps moving under sustained load).
        durables = [f for f in (p.durable() for p in appended) if f is not None]
        if durables and not behind:
            # Caught up: the next fetch reports the durable offset that moves the high
            # watermark, so wait for the fsync first. Behind (catching up), fetch on at once.
            waits = [asyncio.wrap_future(f) for f in durables]
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(
                    asyncio.gather(*waits, return_exceptions=True), _DURABLE_WAIT_S
                )
        return progressed

    def _on_error(self, partition: Partition, offset: int, code: str, leader_start: int) -> None:
        if code == ErrorCode.OFFSET_OUT_OF_RANGE.name:
            if offset < leader_start:
                # The leader deleted what we would fetch next (retention): start over there.
                log.warning(
                    "partition %s: the leader starts at %d, beyond our %d: restarting there",
                    partition.tp,
                    leader_start,
                    offset,
                )
                partition.log.reset_to(leader_start)
                partition.producers = {}
                partition.set_follower_high_watermark(partition.high_watermark)
            else:
                self._validated.pop(partition.tp, None)  # diverged: check the epochs again
            return
        log.debug("partition %s: replica fetch error %s", partition.tp, code)
