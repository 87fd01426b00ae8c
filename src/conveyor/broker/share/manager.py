"""Share groups on a broker: the operations the HTTP routes (and the Kafka listener) call.

``receive`` acknowledges (first) and then acquires records of the share-partitions of the
partitions this broker leads, long-polling up to ``max_wait_ms`` for records to become
deliverable; its answer waits until the operations it made are durable in
``__share_state``. ``run`` is the timer loop: lock expiries, not-before times, new data,
leadership changes and the dead-letter writes.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Final, Protocol

from conveyor.broker.share import decide
from conveyor.broker.share.deadletter import dead_letter_batch
from conveyor.broker.share.handle import Context, ShareHandle
from conveyor.broker.share.remote import DeadLetterSink, GroupConfigs
from conveyor.broker.wakeup import Waitable, wait_any
from conveyor.protocol.errors import ConveyorError, ErrorCode, InvalidRequestError, outcome_unknown
from conveyor.protocol.messages import SharePartitionStats
from conveyor.protocol.records import Record, decode_batches
from conveyor.protocol.share import (
    ACKS_PER_REQUEST_MAX,
    RECEIVE_RECORDS_MAX,
    AckRange,
    AckResult,
    ReceivedPartition,
    ReceiveRequest,
    ReceiveResponse,
    ShareGroupInfo,
    dead_letter_topic,
)
from conveyor.protocol.topics import check_name, validate_topic_name

log = logging.getLogger(__name__)

TICK_S: Final = 0.05
RECEIVE_WAIT_MS_MAX: Final = 30_000
SHARE_PARTITIONS_MAX: Final = 100_000  # bounds the handles a broker keeps
RECEIVE_BYTES_MAX: Final = 16 * 1024 * 1024


class ShareMetrics(Protocol):
    def delivered(self, group: str, records: int, redelivered: int) -> None: ...

    def acknowledged(self, group: str, kind: str, records: int) -> None: ...

    def ack_latency(self, group: str, seconds: float) -> None: ...

    def lock_expired(self, group: str, records: int) -> None: ...

    def dead_lettered(self, group: str, records: int) -> None: ...


@dataclass(slots=True)
class Received:
    """A receive's answer: the JSON part and each partition's batches, in order."""

    response: ReceiveResponse
    chunks: list[bytes] = field(default_factory=list)


class ShareManager:
    def __init__(
        self,
        *,
        context: Context,
        configs: GroupConfigs,
        sink: DeadLetterSink,
        metrics: ShareMetrics,
        stopping: Callable[[], bool],
    ) -> None:
        self._context = context
        self._configs = configs
        self._sink = sink
        self._metrics = metrics
        self._stopping = stopping
        self.handles: dict[tuple[str, str, int], ShareHandle] = {}
        self._rotation = 0

    def _handle(self, group: str, topic: str, partition: int) -> ShareHandle:
        key = (group, topic, partition)
        handle = self.handles.get(key)
        if handle is None:
            if len(self.handles) >= SHARE_PARTITIONS_MAX:
                raise InvalidRequestError(
                    f"this broker serves {SHARE_PARTITIONS_MAX} share-partitions, the limit"
                )
            handle = self.handles[key] = ShareHandle(group, topic, partition, self._context)
        return handle

    # ---- receive -------------------------------------------------------------------------

    async def receive(self, group: str, request: ReceiveRequest) -> Received:
        _validate(group, request)
        info = await self._configs.get(group, request.config_version)
        partitions = sorted(
            set(request.partitions) | {a.partition for a in request.acknowledgements}
        )
        ready: dict[int, ShareHandle] = {}
        answers: dict[int, ReceivedPartition] = {}
        for partition in partitions:
            handle = self._handle(group, request.topic, partition)
            try:
                await handle.ready(info)
                ready[partition] = handle
                answers[partition] = ReceivedPartition(partition=partition)
            except ConveyorError as exc:
                answers[partition] = _failed(partition, exc)
        acks, ack_writes = self._acknowledge(ready, request, answers)
        acquired = await self._acquire(ready, request, info)
        for partition, (got, write) in acquired.items():
            try:
                await write
            except ConveyorError as exc:
                answers[partition] = _failed(partition, exc)
                del ready[partition]
                continue
            answers[partition].acquired = got.ranges
            answers[partition].lock_deadline_ms = got.deadline_ms
        await _settle_writes(acks, ack_writes)
        received = Received(
            ReceiveResponse(
                topic=request.topic,
                partitions=[answers[p] for p in sorted(answers) if p in request.partitions],
                acks=acks,
                lock_duration_ms=info.config.lock_duration_ms,
            )
        )
        for answer in received.response.partitions:
            served = ready.get(answer.partition)
            ranges = [(r.first_offset, r.last_offset) for r in answer.acquired]
            chunk = served.batches_for(ranges) if served is not None and ranges else b""
            answer.size_bytes = len(chunk)
            received.chunks.append(chunk)
        return received

    def _acknowledge(
        self,
        ready: dict[int, ShareHandle],
        request: ReceiveRequest,
        answers: dict[int, ReceivedPartition],
    ) -> tuple[list[AckResult], list[tuple[list[int], asyncio.Future[None]]]]:
        by_partition: dict[int, list[AckRange]] = {}
        for ack in request.acknowledgements:
            by_partition.setdefault(ack.partition, []).append(ack)
        results: list[AckResult] = []
        writes: list[tuple[list[int], asyncio.Future[None]]] = []
        now = self._context.now_ms()
        for partition, acks in sorted(by_partition.items()):
            handle = ready.get(partition)
            if handle is None or handle.state is None:
                answer = answers[partition]
                results += [_ack_failed(a, answer.error, answer.message) for a in acks]
                continue
            acquired_ms = _acquired_times(handle, acks)
            ops, outcome = decide.acknowledge(
                handle.state, handle.config, request.member_id, acks, now
            )
            first = len(results)
            results += outcome
            writes.append((list(range(first, len(results))), handle.submit(ops)))
            self._count_acks(handle, acks, outcome, acquired_ms, now)
            if ops:
                handle.wake()
        return results, writes

    def _count_acks(
        self,
        handle: ShareHandle,
        acks: list[AckRange],
        outcome: list[AckResult],
        acquired_ms: dict[int, int],
        now: int,
    ) -> None:
        done = {(r.first_offset, r.last_offset) for r in outcome if r.error is None}
        for ack in acks:
            if (ack.first_offset, ack.last_offset) not in done:
                continue
            count = ack.last_offset - ack.first_offset + 1
            self._metrics.acknowledged(handle.group, ack.type, count)
            started = acquired_ms.get(ack.first_offset)
            if ack.type == "accept" and started is not None:
                self._metrics.ack_latency(handle.group, max(0, now - started) / 1000)

    async def _acquire(
        self, ready: dict[int, ShareHandle], request: ReceiveRequest, info: ShareGroupInfo
    ) -> dict[int, tuple[decide.Acquired, asyncio.Future[None]]]:
        acquired: dict[int, tuple[decide.Acquired, asyncio.Future[None]]] = {}
        wanted = [h for p, h in ready.items() if p in request.partitions]
        if request.max_records <= 0 or not wanted:
            return acquired
        loop = asyncio.get_running_loop()
        deadline = loop.time() + min(request.max_wait_ms, RECEIVE_WAIT_MS_MAX) / 1000
        self._rotation += 1
        while True:
            events = _wake_events(wanted)  # before looking: no wake-up is missed
            remaining = request.max_records - sum(g.count for g, _ in acquired.values())
            now = self._context.now_ms()
            for i in range(len(wanted)):
                handle = wanted[(self._rotation + i) % len(wanted)]
                if remaining <= 0 or handle.state is None or handle.partition in acquired:
                    continue
                handle.refill()
                ops, got = decide.acquire(
                    handle.state, handle.config, request.member_id, remaining, now
                )
                if got is not None:
                    acquired[handle.partition] = (got, handle.submit(ops))
                    remaining -= got.count
                    redelivered = sum(
                        r.last_offset - r.first_offset + 1
                        for r in got.ranges
                        if r.delivery_count > 1
                    )
                    self._metrics.delivered(handle.group, got.count, redelivered)
            left_s = deadline - loop.time()
            if acquired or left_s <= 0 or self._stopping():
                return acquired
            await wait_any(events, left_s)

    # ---- views and timers ----------------------------------------------------------------

    def stats(self) -> list[SharePartitionStats]:
        now = self._context.now_ms()
        out = []
        for handle in self.handles.values():
            stats = handle.stats(now)
            if stats is not None:
                out.append(stats)
        return out

    async def run(self) -> None:
        """The timer loop (``TICK_S``): expiries, wake-ups, new data, dead letters."""
        while not self._stopping():
            await asyncio.sleep(TICK_S)
            for handle in list(self.handles.values()):
                try:
                    await self._tick(handle)
                except ConveyorError as exc:
                    log.warning("%s: %s", handle.label, exc)

    async def _tick(self, handle: ShareHandle) -> None:
        state = handle.state
        if state is None:
            return
        data = handle.data
        if data is None or not data.is_leader or data.leader_epoch != handle.epoch:
            handle.drop("this broker no longer leads the partition at that epoch")
            return
        now = self._context.now_ms()
        woke = state.pop_wakes(now)
        timer = state.next_timer_ms()
        if timer is not None and timer <= now:
            in_flight = state.states.count(1)
            ops = decide.expire(state, handle.config, now)
            if ops:
                expired = in_flight - state.states.count(1)
                self._metrics.lock_expired(handle.group, expired)
                log.debug("%s: %d records' locks expired", handle.label, expired)
                handle.submit(ops)
                woke = True
        if handle.refill():
            woke = True
        if woke:
            handle.wake()
        if state.dead_letters and (
            handle.dead_letter_task is None or handle.dead_letter_task.done()
        ):
            handle.dead_letter_task = asyncio.get_running_loop().create_task(
                self._dead_letters(handle), name=f"dead-letters {handle.label}"
            )

    async def _dead_letters(self, handle: ShareHandle) -> None:
        """Write pending dead-letter batches in sequence order, one at a time."""
        backoff_s = 0.1
        topic = dead_letter_topic(handle.group, handle.config)
        while not self._stopping():
            state = handle.state
            if state is None or handle.broken or not state.dead_letters:
                return
            try:
                if state.producer is None:
                    producer_id, producer_epoch = await self._sink.init_producer()
                    count = await self._sink.partition_count(topic)
                    ops = decide.set_producer(
                        state, producer_id, producer_epoch, handle.partition % count
                    )
                    await handle.submit(ops)
                    continue
                await handle.durable()  # the OpDeadLetter numbering this batch
                if handle.state is not state or handle.broken:
                    return
                sequence = min(state.dead_letters)
                entries = state.dead_letters[sequence]
                records = _records_at(handle, [e.offset for e in entries])
                batch = dead_letter_batch(
                    group=handle.group,
                    topic=handle.topic,
                    partition=handle.partition,
                    sequence=sequence,
                    entries=entries,
                    records=records,
                    producer=state.producer,
                    now_ms=self._context.now_ms(),
                )
                await self._sink.produce(topic, state.producer.partition, batch)
                if handle.state is not state:
                    return  # reloaded meanwhile: the new state drives its own
                await handle.submit(decide.dead_lettered(state, sequence))
                self._metrics.dead_lettered(handle.group, len(entries))
                log.info(
                    "%s: %d records dead-lettered to %s (batch %d)",
                    handle.label, len(entries), topic, sequence,
                )  # fmt: skip
                handle.wake()
                backoff_s = 0.1
            except ConveyorError as exc:
                log.warning("%s: dead-letter write failed, retrying: %s", handle.label, exc)
                await asyncio.sleep(backoff_s)
                backoff_s = min(backoff_s * 2, 5.0)


def _validate(group: str, request: ReceiveRequest) -> None:
    check_name("group", group, ErrorCode.INVALID_REQUEST)
    validate_topic_name(request.topic)
    if not 0 <= request.max_records <= RECEIVE_RECORDS_MAX:
        raise InvalidRequestError(f"max_records must be in 0..{RECEIVE_RECORDS_MAX}")
    if request.max_wait_ms < 0 or request.max_bytes < 1:
        raise InvalidRequestError("max_wait_ms must be >= 0 and max_bytes >= 1")
    if len(request.acknowledgements) > ACKS_PER_REQUEST_MAX:
        raise InvalidRequestError(f"more than {ACKS_PER_REQUEST_MAX} acknowledgements")
    if len(request.partitions) > 10_000 or any(p < 0 for p in request.partitions):
        raise InvalidRequestError("partitions must be 0..10000 non-negative numbers")
    if any(a.partition < 0 for a in request.acknowledgements):
        raise InvalidRequestError("acknowledgement partitions must be non-negative")


def _failed(partition: int, exc: ConveyorError) -> ReceivedPartition:
    url = exc.details.get("leader_url")
    return ReceivedPartition(
        partition=partition,
        error=exc.code.name,
        message=exc.message,
        leader_url=str(url) if url else None,
    )


def _ack_failed(ack: AckRange, error: str | None, message: str | None) -> AckResult:
    return AckResult(
        partition=ack.partition,
        first_offset=ack.first_offset,
        last_offset=ack.last_offset,
        error=error or ErrorCode.NOT_LEADER.name,
        message=message,
    )


def _acquired_times(handle: ShareHandle, acks: list[AckRange]) -> dict[int, int]:
    """When each acknowledged range's first record was acquired (for the latency)."""
    state = handle.state
    out: dict[int, int] = {}
    if state is None:
        return out
    for ack in acks:
        held = state.acquisitions.get(state.owner_of(ack.first_offset))
        if held is not None:
            out[ack.first_offset] = held.deadline_ms - handle.config.lock_duration_ms
    return out


async def _settle_writes(
    results: list[AckResult], writes: list[tuple[list[int], asyncio.Future[None]]]
) -> None:
    """An acknowledgement counts once durable: a failed write fails its results, and one
    that may have been applied all the same (``outcome_unknown``) fails the whole call,
    so the client learns nothing about those acknowledgements rather than a refusal
    that may be false (their records' locks run out, or they were settled)."""
    for indexes, write in writes:
        try:
            await write
        except ConveyorError as exc:
            if outcome_unknown(exc):
                raise
            for i in indexes:
                if results[i].error is None:
                    results[i].error = exc.code.name
                    results[i].message = f"not persisted: {exc.message}"


def _wake_events(handles: list[ShareHandle]) -> list[Waitable]:
    events: list[Waitable] = [h.changed for h in handles]
    events += [h.data.wakeup() for h in handles if h.data is not None]
    return events


def _records_at(handle: ShareHandle, offsets: list[int]) -> dict[int, Record]:
    """The records at ``offsets`` from the data log (those retention kept)."""
    data = handle.data
    found: dict[int, Record] = {}
    if data is None:
        return found
    wanted = set(offsets)
    for offset in sorted(wanted):
        if offset in found:
            continue
        try:
            chunk = data.read(offset, 1024 * 1024, None)
        except ConveyorError:
            continue
        for record in decode_batches(chunk, verify_crc=False, start_offset=offset):
            if record.offset in wanted:
                found[record.offset] = record
            if record.offset > max(wanted):
                break
    return found
