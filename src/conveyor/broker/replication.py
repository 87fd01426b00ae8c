"""The leader's side of replication: replica fetches, epoch-end answers, ISR upkeep.

Followers pull (Kafka's design): one long-poll request per (follower, leader) pair carries
every partition the follower copies from this leader, with the offset it fetches from (its
log end) and what it holds durably. The leader answers whole batches as stored, up to its
log end (not the high watermark: followers must copy what consumers cannot see yet), and
advances the high watermark from the durable offsets. The ISR changes the leader wants go
to the coordinator (AlterIsr) and count once the coordinator confirms them.

Fencing both ways: a follower quoting an older epoch than the leader's gets STALE_EPOCH (it
follows a leader that is gone; its next heartbeat tells it the new one); a newer epoch
than the leader's means this broker was deposed and has not heard yet: LEADER_NOT_AVAILABLE,
and it serves nothing from that partition.
"""

from __future__ import annotations

import asyncio
import logging
import struct
from collections.abc import Sequence
from dataclasses import replace
from typing import TYPE_CHECKING, Final

import msgspec

from conveyor.broker.partition import Partition
from conveyor.broker.reconcile import ReplicaState, TopicPartition
from conveyor.protocol.errors import ConveyorError, ErrorCode, InvalidRequestError, RetriableError
from conveyor.protocol.messages import (
    AlterIsrRequest,
    AlterIsrResponse,
    BrokerId,
    EpochEndRequest,
    EpochEndResponse,
    EpochEndResult,
    ErrorBody,
    ReplicaFetchPartition,
    ReplicaFetchRequest,
    ReplicaFetchResponse,
    ReplicaFetchResult,
)
from conveyor.protocol.topics import validate_topic_name

if TYPE_CHECKING:
    from conveyor.broker.service import BrokerService

log = logging.getLogger(__name__)

_FRAME: Final = struct.Struct(">I")
ISR_CHECK_INTERVAL_S: Final = 0.5


def encode_fetch_response(response: ReplicaFetchResponse, chunks: Sequence[bytes]) -> bytes:
    header = msgspec.json.encode(response)
    return b"".join((_FRAME.pack(len(header)), header, *chunks))


def decode_fetch_response(body: bytes) -> tuple[ReplicaFetchResponse, list[memoryview]]:
    """The header and each partition's batches (views into ``body``, no copies)."""
    if len(body) < _FRAME.size:
        raise InvalidRequestError("replica fetch response shorter than its frame")
    (length,) = _FRAME.unpack_from(body)
    start = _FRAME.size + length
    response = msgspec.json.decode(body[_FRAME.size : start], type=ReplicaFetchResponse)
    view = memoryview(body)
    chunks: list[memoryview] = []
    for result in response.partitions:
        chunks.append(view[start : start + result.size_bytes])
        start += result.size_bytes
    if start != len(body):
        raise InvalidRequestError(f"replica fetch response has {len(body) - start} stray bytes")
    return response, chunks


def _error(exc: ConveyorError) -> ErrorBody:
    return ErrorBody(
        code=exc.code.name, message=exc.message, retriable=exc.retriable, details=exc.details
    )


class LeaderReplication:
    def __init__(self, service: BrokerService) -> None:
        self.service = service
        self._alter_in_flight: set[TopicPartition] = set()

    def _leader_for(self, broker: BrokerId, topic: str, partition: int, epoch: int) -> Partition:
        validate_topic_name(topic)
        found = self.service.replicas.get(TopicPartition(topic, partition))
        if found is None or not found.is_leader:
            raise RetriableError(
                f"broker {self.service.broker_id} does not lead {topic}-{partition}",
                code=ErrorCode.NOT_LEADER,
            )
        if epoch < found.leader_epoch:
            raise RetriableError(
                f"{topic}-{partition}: follower {broker} follows epoch {epoch}, the leader is "
                f"at {found.leader_epoch}",
                code=ErrorCode.STALE_EPOCH,
                leader_epoch=found.leader_epoch,
            )
        if epoch > found.leader_epoch:
            raise RetriableError(
                f"{topic}-{partition}: follower {broker} knows epoch {epoch}, newer than this "
                f"leader's {found.leader_epoch}: this broker was deposed",
                code=ErrorCode.LEADER_NOT_AVAILABLE,
                leader_epoch=found.leader_epoch,
            )
        if broker not in found.state.replicas:
            raise RetriableError(
                f"{topic}-{partition}: broker {broker} is not a replica "
                f"{list(found.state.replicas)} (yet)",
                code=ErrorCode.LEADER_NOT_AVAILABLE,
            )
        return found

    # ---- fetch ---------------------------------------------------------------------------

    async def fetch(self, request: ReplicaFetchRequest) -> bytes:
        """Record each partition's progress, then answer what is there, waiting up to
        ``max_wait_ms`` for an append when there is nothing."""
        loop = asyncio.get_running_loop()
        now_ms = loop.time() * 1000
        sources: list[Partition | ConveyorError] = []
        for wanted in request.partitions:
            try:
                source = self._leader_for(
                    request.broker_id, wanted.topic, wanted.partition, wanted.leader_epoch
                )
                if wanted.fetch_offset <= source.log.log_end_offset:
                    # Beyond it the follower diverged: the read below answers out of range.
                    source.record_fetch(
                        request.broker_id, wanted.fetch_offset, wanted.durable_offset, now_ms
                    )
                sources.append(source)
                self.maybe_alter_isr(source, now_ms)
            except ConveyorError as exc:
                sources.append(exc)
        deadline = loop.time() + min(max(request.max_wait_ms, 0), 30_000) / 1000
        while True:
            events = [s.appended_event for s in sources if isinstance(s, Partition)]
            results, chunks = self._read(request, sources)
            remaining = deadline - loop.time()
            if any(chunks) or remaining <= 0 or not events or self.service.stopping:
                break
            await _wait_any(events, remaining)
        body = encode_fetch_response(ReplicaFetchResponse(partitions=results), chunks)
        return body

    def _read(
        self, request: ReplicaFetchRequest, sources: list[Partition | ConveyorError]
    ) -> tuple[list[ReplicaFetchResult], list[bytes]]:
        results: list[ReplicaFetchResult] = []
        chunks: list[bytes] = []
        budget = max(request.max_bytes, 1)
        for wanted, source in zip(request.partitions, sources, strict=True):
            data = b""
            if isinstance(source, Partition) and source.is_leader:
                try:
                    if budget > 0:
                        limit = min(request.partition_max_bytes, budget)
                        data = source.read(wanted.fetch_offset, limit, upper_offset=None)
                        budget -= len(data)
                    results.append(self._result(wanted, source, len(data)))
                except ConveyorError as exc:
                    data = b""
                    results.append(
                        ReplicaFetchResult(
                            topic=wanted.topic,
                            partition=wanted.partition,
                            error=_error(exc),
                            log_start_offset=source.log.log_start_offset,
                            log_end_offset=source.log.log_end_offset,
                        )
                    )
            else:
                problem = (
                    source
                    if isinstance(source, ConveyorError)
                    else RetriableError("leadership moved", code=ErrorCode.NOT_LEADER)
                )
                results.append(
                    ReplicaFetchResult(
                        topic=wanted.topic, partition=wanted.partition, error=_error(problem)
                    )
                )
            chunks.append(data)
        return results, chunks

    @staticmethod
    def _result(wanted: ReplicaFetchPartition, source: Partition, size: int) -> ReplicaFetchResult:
        return ReplicaFetchResult(
            topic=wanted.topic,
            partition=wanted.partition,
            high_watermark=source.high_watermark,
            log_start_offset=source.log.log_start_offset,
            log_end_offset=source.log.log_end_offset,
            size_bytes=size,
        )

    # ---- epoch end (OffsetsForLeaderEpoch) -----------------------------------------------

    def epoch_end(self, request: EpochEndRequest) -> EpochEndResponse:
        results: list[EpochEndResult] = []
        for wanted in request.partitions:
            try:
                source = self._leader_for(
                    request.broker_id, wanted.topic, wanted.partition, wanted.current_leader_epoch
                )
                epoch, end = source.log.end_offset_for_epoch(wanted.epoch)
                results.append(
                    EpochEndResult(
                        topic=wanted.topic, partition=wanted.partition, epoch=epoch, end_offset=end
                    )
                )
            except ConveyorError as exc:
                results.append(
                    EpochEndResult(
                        topic=wanted.topic, partition=wanted.partition, error=_error(exc)
                    )
                )
        return EpochEndResponse(partitions=results)

    # ---- ISR upkeep ----------------------------------------------------------------------

    async def isr_loop(self) -> None:
        """Shrink the ISR of partitions whose followers fell behind (expansions are also
        noticed on fetch, so a caught-up follower rejoins without waiting for this)."""
        loop = asyncio.get_running_loop()
        while not self.service.stopping:
            await asyncio.sleep(ISR_CHECK_INTERVAL_S)
            now_ms = loop.time() * 1000
            for partition in list(self.service.replicas.partitions.values()):
                self.maybe_alter_isr(partition, now_ms)

    def maybe_alter_isr(self, partition: Partition, now_ms: float) -> None:
        if partition.tp in self._alter_in_flight:
            return
        wanted = partition.isr_proposal(now_ms, self.service.config.replica_lag_time_max_ms)
        if wanted is None:
            return
        self._alter_in_flight.add(partition.tp)
        # Pending until the coordinator's answer (or, if that is lost, a newer partition
        # epoch in a heartbeat) says what the ISR is: an added member may already count there.
        partition.pending_isr = tuple(dict.fromkeys((*partition.pending_isr, *wanted)))
        task = asyncio.create_task(self._alter_isr(partition, wanted))
        task.add_done_callback(lambda _: self._alter_in_flight.discard(partition.tp))

    async def _alter_isr(self, partition: Partition, isr: tuple[BrokerId, ...]) -> None:
        await self._send_alter_isr(partition, isr)
        partition.refresh_high_watermark()

    async def _send_alter_isr(self, partition: Partition, isr: tuple[BrokerId, ...]) -> None:
        state = partition.state
        request = AlterIsrRequest(
            broker_id=self.service.broker_id,
            topic=partition.tp.topic,
            partition=partition.tp.partition,
            leader_epoch=state.leader_epoch,  # type: ignore[arg-type]
            partition_epoch=state.partition_epoch,
            isr=list(isr),
        )
        url = f"{self.service.config.coordinator_url.rstrip('/')}/internal/v1/partitions/isr"
        while True:
            try:
                response = await self.service.http.call(
                    "POST", url, AlterIsrResponse, body=request, timeout_s=5.0
                )
                break
            except ConveyorError as exc:
                log.info("partition %s: alter isr to %s failed: %s", partition.tp, list(isr), exc)
                if (
                    exc.code in (ErrorCode.NETWORK_ERROR, ErrorCode.NOT_COORDINATOR)
                    and partition.is_leader
                    and (partition.state.partition_epoch == state.partition_epoch)
                ):
                    # Applied or not? Only the coordinator knows: ask again (the same request
                    # is idempotent) while the pending member keeps counting for the HW.
                    await asyncio.sleep(1.0)
                    continue
                if exc.code is not ErrorCode.STALE_EPOCH:
                    partition.pending_isr = ()  # refused: the ISR did not change
                # STALE_EPOCH: the state moved on; the next heartbeat brings it (and clears
                # the pending change). Back off so a confused coordinator is not hammered.
                await asyncio.sleep(1.0)
                return
        assignment = response.assignment
        if not self.service.accept_coordinator_epoch(response.coordinator_epoch, "alter isr"):
            return
        if partition.closed or assignment.leader_epoch != partition.leader_epoch:
            return
        log.info(
            "partition %s: isr %s -> %s (partition epoch %d)",
            partition.tp,
            list(state.isr),
            assignment.isr,
            assignment.partition_epoch,
        )
        if len(assignment.isr) < len(state.isr):
            self.service.metrics.isr_shrunk()
        elif len(assignment.isr) > len(state.isr):
            self.service.metrics.isr_expanded()
        partition.apply(_replace_isr(partition, tuple(assignment.isr), assignment.partition_epoch))


def _replace_isr(
    partition: Partition, isr: tuple[BrokerId, ...], partition_epoch: int
) -> ReplicaState:
    return replace(partition.state, isr=isr, partition_epoch=partition_epoch)


async def _wait_any(events: Sequence[asyncio.Event], timeout_s: float) -> None:
    waiters = [asyncio.ensure_future(event.wait()) for event in events]
    try:
        await asyncio.wait(waiters, timeout=timeout_s, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for waiter in waiters:
            waiter.cancel()
