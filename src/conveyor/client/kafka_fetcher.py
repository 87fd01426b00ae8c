"""The consumer's fetch path over the Kafka protocol (``transport="kafka"``).

The :class:`Fetcher` keeps the assignment, positions, the bounded buffer and the error
handling; this class sends its requests as Kafka's consumers do:

- **One Fetch per broker** (v4-12, the highest the leader serves), naming every
  fetchable partition that broker leads (``fetch_plan.py`` decides which, pure), on one
  connection per broker (its ``fetch`` lane, so the long poll never holds up metadata or
  group requests on the other). Each named partition may bring ``fetch_max_bytes``
  (Kafka's ``max.partition.fetch.bytes``); the request's ``max_bytes``
  (``fetch.max.bytes``) is what it reserved in the buffer first, ``fetch_max_bytes`` a
  partition but at most 1/8 of the buffer a request (``fetch_plan.reserve_per_partition``):
  the buffer's bound and its back-pressure hold as with one request per partition (but
  for KIP-74's rule that the first partition with data gets at least one whole batch).
- **Long polling**: ``min_bytes=1``, ``max_wait_ms`` from the settings. The broker waits
  on every named partition at once and answers as soon as one has data, so a record
  reaches the consumer one round trip after it is committed, whichever partition it is in.
  A request cannot be widened while the broker holds it: one that leaves out some of the
  broker's unpaused partitions (still starting, backing off, no buffer room) waits
  ``retry_backoff_ms`` at most, so they join soon. A partition resumed or newly assigned
  during a long poll waits for it to end (``fetch_max_wait_ms``, 500 ms by default), as
  in Kafka's own consumer.
- **Pipelined**: as soon as a broker's answer is in, the next Fetch leaves (from where
  the answer's batches end) before that answer's records are decoded, so the broker
  reads and sends while this process decodes; with one request at a time per broker
  the two took turns, and W2 ran at half the rate of one request per partition
  (docs/benchmarks.md). It leaves early only if the buffer has room for every
  partition it names; else after the decoding, as the first request did. An answer
  that does not start where its partition stands (sent ahead of one that then failed,
  or the old leader's loop answered first after a leader change) is dropped, so
  nothing is skipped or repeated, and the next request starts where the partition
  stands, not where that answer ended (``fetch_plan.start_of``).
- A partition's error touches that partition only: NOT_LEADER and the like refresh the
  metadata (its next request goes to the new leader's loop), OFFSET_OUT_OF_RANGE resets
  its position by policy, another retriable error backs that partition off; a
  non-retriable one reaches ``poll``. A request that fails whole (connection lost,
  timeout) is each named partition's error.
- The reset position is a ListOffsets (v2-7, ``kafka_offsets.py``) for the earliest (-2)
  or latest (-1) offset; with read_committed the latest is the last stable offset.
- ``isolation_level`` 1 for read_committed: the aborted transactions come in the answer
  and are dropped (``protocol/txn.without_aborted``).

Fetch sessions (KIP-227) are not used (session id 0, epoch -1: full requests): the
broker answers sessionless anyway, and with tens of partitions per broker a full request
is a few hundred bytes.

A partition starts (committed offset, else the reset policy) in its own task, as before;
once it has a position its broker's loop fetches it. A broker's loop ends when it leads
none of the positioned partitions, and starts again when one moves to it.
"""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, Final

from conveyor.client import metrics as client_metrics
from conveyor.client.fetch_plan import (
    Ahead,
    Target,
    group_by_leader,
    next_retry_ms,
    plan_fetch,
    poll_wait_ms,
    reserve_per_partition,
    start_of,
)
from conveyor.client.fetcher import Fetcher, _next_offset, _unexpected
from conveyor.client.group import Assignment
from conveyor.client.kafka_metadata import KafkaMetadataClient
from conveyor.client.kafka_offsets import EARLIEST, LATEST, list_offsets
from conveyor.client.types import TopicPartition
from conveyor.protocol.backoff import backoff_ms
from conveyor.protocol.errors import ConveyorError, ErrorCode
from conveyor.protocol.kafka.apis import SERVED, ApiKey
from conveyor.protocol.kafka.codec import new_request
from conveyor.protocol.kafka.errors import KafkaError, conveyor_error
from conveyor.protocol.txn import without_aborted
from conveyor.transport.waits import settle_all, wait_event

FETCH_VERSIONS: Final = (4, 12)  # v4: isolation level, aborted transactions; v12: top
FETCH_LANE: Final = "fetch"  # the connection a broker's long polls use

Fetched = tuple[bytes, bytes, int | None]  # (batches, what a reader may see, readable end)
Answer = Fetched | ConveyorError


@dataclass(slots=True)
class _InFlight:
    """A Fetch sent to a broker: the partitions it names, and the buffer room reserved."""

    named: list[Target]
    task: asyncio.Future[dict[TopicPartition, Answer]]
    per_partition_bytes: int

    @property
    def reserved_bytes(self) -> int:
        return self.per_partition_bytes * len(self.named)


class KafkaFetcher(Fetcher):
    """A :class:`Fetcher` that sends one Fetch per broker over Kafka (module docstring)."""

    def __init__(self, *, metadata: KafkaMetadataClient, **rest: Any) -> None:
        super().__init__(metadata=metadata, **rest)
        self._kafka_metadata = metadata
        self._connections = metadata.connections
        self._brokers: dict[str, asyncio.Task[None]] = {}  # a fetch loop per leader
        self._wakes: dict[str, asyncio.Event] = {}
        self._preparing: set[TopicPartition] = set()  # starting or resetting its position
        self._retry_at_ms: dict[TopicPartition, float] = {}
        self._failures: dict[TopicPartition, int] = {}
        # answered but not yet in the buffer: where the next request starts
        self._ahead: dict[TopicPartition, Ahead] = {}
        self._rotation = 0

    # --- what wakes the broker loops -------------------------------------------------------

    def space_freed(self) -> None:
        """May be called under the buffer's lock (the async consumer): wake, no more."""
        super().space_freed()
        self._wake_all()

    def resumed(self) -> None:
        super().resumed()
        self._wake_all()

    def apply(self, assignment: Assignment) -> None:
        super().apply(assignment)
        kept = set(assignment.partitions)
        for table in (self._retry_at_ms, self._failures):
            for tp in [tp for tp in table if tp not in kept]:
                del table[tp]
        self._kick()

    async def _update_assignment(self) -> None:
        try:
            await super()._update_assignment()
        finally:  # leaders may have moved: start the loops of the new ones
            self._kick()

    def _kick(self) -> None:
        """Start the loops of leaders that have none, and wake every loop."""
        for leader in group_by_leader(self._candidates(), self._leader_of):
            if leader not in self._brokers:
                self._wakes[leader] = asyncio.Event()
                self._brokers[leader] = asyncio.create_task(
                    self._run_broker(leader), name=f"conveyor-fetch-{leader}"
                )
        self._wake_all()

    def _wake_all(self) -> None:
        for wake in self._wakes.values():
            wake.set()

    async def close(self) -> None:
        brokers = list(self._brokers.values())
        for task in brokers:
            task.cancel()
        await super().close()
        await settle_all(*brokers)
        self._brokers.clear()
        self._wakes.clear()

    # --- a partition's start and resets (its own task) -------------------------------------

    async def _run_partition(
        self, tp: TopicPartition, committed: asyncio.Future[dict[int, int]]
    ) -> None:
        """Find ``tp``'s starting position, then leave it to its leader's loop."""
        await self._prepare(tp, lambda: self._initialize(tp, committed))

    async def _prepare(self, tp: TopicPartition, step: Callable[[], Awaitable[None]]) -> None:
        """Run ``step`` (start or reset ``tp``'s position) until it succeeds, backing off;
        the broker loops leave ``tp`` alone meanwhile."""
        self._preparing.add(tp)
        failures = 0
        try:
            while True:
                try:
                    await step()
                    break
                except Exception as caught:
                    exc = caught if isinstance(caught, ConveyorError) else _unexpected(tp, caught)
                    self._on_error(tp, exc)
                    await asyncio.sleep(self._backoff_ms(failures) / 1000)
                    failures += 1
        finally:
            self._preparing.discard(tp)
        self._kick()

    def _start_reset(self, tp: TopicPartition, error: ConveyorError) -> None:
        if tp in self._preparing:
            return
        self._preparing.add(tp)  # at once: the loops skip it from now on
        self._tasks[tp] = asyncio.create_task(
            self._prepare(tp, lambda: self._reset(tp, error)), name=f"conveyor-reset-{tp}"
        )

    def _backoff_ms(self, failures: int) -> float:
        settings = self._settings
        return backoff_ms(
            failures,
            base_ms=settings.retry_backoff_ms,
            max_ms=settings.retry_backoff_max_ms,
            draw=random.random(),
        )

    # --- one broker's loop -----------------------------------------------------------------

    def _leader_of(self, tp: TopicPartition) -> str | None:
        return self._metadata.cache.leader_url(tp.topic, tp.partition)

    def _candidates(self, partitions: list[TopicPartition] | None = None) -> list[Target]:
        """The positioned ones of ``partitions`` (by default, of the assignment)."""
        out = []
        for tp in self._buffer.assignment() if partitions is None else partitions:
            if tp in self._preparing:
                continue
            target = self._buffer.fetch_target(tp)
            if target is None:
                continue
            offset, generation = target
            # answered from here, not yet decoded: start after it (fetch_plan.start_of)
            out.append(start_of(Target(tp, offset, generation), self._ahead.get(tp)))
        return out

    async def _run_broker(self, leader: str) -> None:
        """Fetch from ``leader`` until it leads none of this consumer's partitions. The
        next request leaves as soon as an answer is in, before its records are decoded:
        the broker reads while this process decodes (module docstring)."""
        me = asyncio.current_task()
        wake = self._wakes[leader]
        inflight: _InFlight | None = None
        try:
            while True:
                if inflight is None:
                    wake.clear()
                    inflight = self._send(leader)
                    if inflight is None:
                        if not self._candidates(self._led_by(leader)):
                            return  # leads none of ours now; _kick starts it again if so
                        await wait_event(wake, self._next_retry_s(leader))
                        continue
                answers = await self._receive(inflight)
                done, inflight = inflight, None
                if answers is None:
                    continue  # the request failed whole: each partition's error is noted
                for target in done.named:  # where the next request starts: the batch ends
                    answer = answers.get(target.tp)
                    if isinstance(answer, tuple):
                        self._ahead[target.tp] = Ahead(target, _next_offset(answer[0]))
                inflight = self._send(leader, whole=True)
                if inflight is not None:
                    await asyncio.sleep(0)  # let it leave before the decoding below
                self._deliver(done, answers)
        finally:
            if inflight is not None:
                inflight.task.cancel()
                self._buffer.release(inflight.reserved_bytes)
            if self._brokers.get(leader) is me:
                del self._brokers[leader]
                del self._wakes[leader]

    def _led_by(self, leader: str) -> list[TopicPartition]:
        return [tp for tp in self._buffer.assignment() if self._leader_of(tp) == leader]

    def _next_retry_s(self, leader: str) -> float | None:
        candidates = self._candidates(self._led_by(leader))
        delay_ms = next_retry_ms(candidates, self._retry_at_ms, time.monotonic() * 1000)
        return None if delay_ms is None else delay_ms / 1000

    def _send(self, leader: str, *, whole: bool = False) -> _InFlight | None:
        """Reserve room for and send the next Fetch to ``leader``; None when no partition
        may be fetched now (none positioned, paused, backing off, or no buffer room), or,
        ``whole``, when the buffer has no room for every partition the plan names (a
        request sent ahead of decoding must not shrink for want of the room the
        previous answer still holds: it goes once that answer is in the buffer)."""
        led = self._led_by(leader)
        paused = set(self._buffer.paused())
        plan = plan_fetch(
            self._candidates(led),
            paused=paused,
            retry_at_ms=self._retry_at_ms,
            now_ms=time.monotonic() * 1000,
            rotation=self._rotation,
        )
        per_partition = reserve_per_partition(
            len(plan),
            partition_max_bytes=self._settings.fetch_max_bytes,
            buffer_max_bytes=self._buffer.buffer_max_bytes,
        )
        named = self._reserve_for(plan, per_partition)
        if whole and len(named) < len(plan):
            self._buffer.release(per_partition * len(named))
            return None
        if not named:
            return None
        self._rotation += 1
        wait_ms = poll_wait_ms(
            len(named),
            len([tp for tp in led if tp not in paused]),
            max_wait_ms=self._settings.fetch_max_wait_ms,
            short_wait_ms=self._settings.retry_backoff_ms,
        )
        task = asyncio.ensure_future(
            self._fetch_many(leader, named, wait_ms, per_partition * len(named))
        )
        return _InFlight(named, task, per_partition)

    def _reserve_for(self, plan: list[Target], per_partition: int) -> list[Target]:
        """The longest prefix of ``plan`` the buffer has room for, reserved."""
        named = []
        for target in plan:
            if not self._buffer.try_reserve(per_partition):
                break  # the buffer calls space_freed when there is room again
            named.append(target)
        return named

    async def _receive(self, inflight: _InFlight) -> dict[TopicPartition, Answer] | None:
        """The request's answers; a partition's error is handled here (it needs no
        decoding), as is a failure of the whole request (then None)."""
        try:
            answers = await inflight.task
        except Exception as caught:
            self._buffer.release(inflight.reserved_bytes)
            tp = inflight.named[0].tp
            exc = caught if isinstance(caught, ConveyorError) else _unexpected(tp, caught)
            for target in inflight.named:
                self._failed(target.tp, exc)
            return None
        for target in inflight.named:
            answer = answers.get(target.tp)
            if not isinstance(answer, tuple):
                self._buffer.release(inflight.per_partition_bytes)
                self._failed(target.tp, answer or ConveyorError(f"no answer for {target.tp}"))
        return answers

    def _deliver(self, done: _InFlight, answers: dict[TopicPartition, Answer]) -> None:
        """Decode each partition's records into the buffer."""
        for target in done.named:
            answer = answers.get(target.tp)
            if isinstance(answer, tuple):
                self._fetched(target, answer, done.per_partition_bytes)
            ahead = self._ahead.get(target.tp)
            if ahead is not None and ahead.answered is target:  # not another loop's
                del self._ahead[target.tp]  # the buffer's fetch offset is where it says

    def _fetched(self, target: Target, answer: Fetched, reserved: int) -> None:
        tp, offset = target.tp, target.offset
        if self._buffer.fetch_target(tp) != (offset, target.generation):
            # not from where the partition stands: sent ahead of an answer that then
            # failed, or by the loop of a leader it has left; adding it would skip or
            # repeat records (a stale generation the buffer drops itself)
            self._buffer.release(reserved)
            return
        body, visible, high_watermark = answer
        try:
            columns = self._decode(visible, start_offset=offset)
        except Exception as caught:
            self._buffer.release(reserved)
            self._failed(tp, _unexpected(tp, caught))
            return
        self._failures.pop(tp, None)
        client_metrics.records_fetched(tp.topic, len(columns), len(body))
        last = columns.offsets[-1] + 1 if columns else 0
        self._buffer.add(
            tp,
            target.generation,
            columns,
            next_offset=max(offset, _next_offset(body), last),
            size_bytes=len(body),
            reserved_bytes=reserved,
            high_watermark=high_watermark,
        )

    def _failed(self, tp: TopicPartition, exc: ConveyorError) -> None:
        if exc.code is ErrorCode.OFFSET_OUT_OF_RANGE and self._buffer.fetch_target(tp):
            self._start_reset(tp, exc)
            return
        self._on_error(tp, exc)
        failures = self._failures.get(tp, 0)
        self._failures[tp] = failures + 1
        self._retry_at_ms[tp] = time.monotonic() * 1000 + self._backoff_ms(failures)

    async def _fetch_many(
        self, leader: str, named: list[Target], wait_ms: int, max_bytes: int
    ) -> dict[TopicPartition, Answer]:
        settings = self._settings
        connection = await self._connections.get(leader, lane=FETCH_LANE)
        version = connection.version(ApiKey.FETCH, *FETCH_VERSIONS)
        request = fetch_request(
            version,
            [(t.tp, t.offset) for t in named],
            max_wait_ms=wait_ms,
            partition_max_bytes=settings.fetch_max_bytes,
            read_committed=settings.read_committed,
            max_bytes=max_bytes,
        )
        reply = await connection.call(
            ApiKey.FETCH,
            version,
            request,
            timeout_ms=settings.fetch_max_wait_ms + settings.request_timeout_ms,
        )
        return fetch_results(reply, read_committed=settings.read_committed)

    async def _reset_offset(self, tp: TopicPartition) -> int:
        settings = self._settings
        timestamp = EARLIEST if settings.auto_offset_reset == "earliest" else LATEST
        found = await list_offsets(
            self._kafka_metadata,
            {tp: timestamp},
            read_committed=settings.read_committed,
            timeout_ms=settings.request_timeout_ms,
        )
        return found[tp][0]

    async def close_transport(self) -> None:
        await self._connections.close()


def fetch_request(
    version: int,
    positions: list[tuple[TopicPartition, int]],
    *,
    max_wait_ms: int,
    partition_max_bytes: int,
    read_committed: bool,
    min_bytes: int = 1,
    max_bytes: int | None = None,
) -> Any:
    """A sessionless Fetch of every ``(partition, offset)`` in ``positions``, in that
    order (the broker fills ``max_bytes`` in it, by default ``partition_max_bytes`` for
    each), up to ``partition_max_bytes`` each."""
    fetch_topic = SERVED[ApiKey.FETCH].request[version].FetchTopic
    by_topic: dict[str, list[Any]] = {}
    for tp, offset in positions:
        by_topic.setdefault(tp.topic, []).append(
            fetch_topic.FetchPartition(
                partition=tp.partition,
                current_leader_epoch=-1,
                fetch_offset=offset,
                last_fetched_epoch=-1,
                log_start_offset=-1,
                partition_max_bytes=partition_max_bytes,
            )
        )
    return new_request(
        ApiKey.FETCH,
        version,
        replica_id=-1,
        max_wait_ms=max_wait_ms,
        min_bytes=min_bytes,
        max_bytes=partition_max_bytes * len(positions) if max_bytes is None else max_bytes,
        isolation_level=1 if read_committed else 0,
        session_id=0,
        session_epoch=-1,  # no fetch session: every request names its partitions
        topics=[fetch_topic(topic=t, partitions=ps) for t, ps in by_topic.items()],
        forgotten_topics_data=[],
        rack_id="",
    )


def fetch_results(
    reply: Any, *, read_committed: bool
) -> dict[TopicPartition, Fetched | ConveyorError]:
    """Each partition's answer in a Fetch reply: (the batches answered, those a reader
    may see, the end it may read to: the high watermark, or the last stable offset with
    read_committed, as Kafka's consumer counts lag), or its typed error."""
    if reply.error_code:
        raise conveyor_error(reply.error_code, "Fetch")
    out: dict[TopicPartition, Fetched | ConveyorError] = {}
    for answer_topic in reply.responses:
        for answer in answer_topic.partitions:
            tp = TopicPartition(answer_topic.topic, answer.partition_index)
            if answer.error_code != KafkaError.NONE:
                out[tp] = conveyor_error(answer.error_code, f"Fetch of {tp.topic}[{tp.partition}]")
                continue
            body = bytes(answer.records or b"")
            visible, end = body, int(answer.high_watermark)
            if read_committed:
                if answer.aborted_transactions:
                    aborted = [(a.producer_id, a.first_offset) for a in answer.aborted_transactions]
                    visible = without_aborted(body, aborted)
                if answer.last_stable_offset >= 0:  # as far as read_committed may read
                    end = int(answer.last_stable_offset)
            out[tp] = (body, visible, end)
    return out


def fetch_result(reply: Any, tp: TopicPartition, *, read_committed: bool) -> Fetched:
    """``tp``'s answer in a Fetch reply (:func:`fetch_results`), or its typed error."""
    answer = fetch_results(reply, read_committed=read_committed).get(tp)
    if answer is None:
        raise ConveyorError(f"Fetch answer without {tp.topic}[{tp.partition}]")
    if isinstance(answer, ConveyorError):
        raise answer
    return answer
