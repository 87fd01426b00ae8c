"""The broker core's shell: holds the core's state, steps events, performs effects.

Thin by design (etcd-raft's ``Ready`` loop): :meth:`CoreDriver.step` runs the pure
``core.step`` for each event, then performs the effects it returned, in order: storage
through :class:`ReplicaManager` (slow operations in worker threads, serialized per
partition), messages through :class:`Peers`, answers to the produce and fetch
requests waiting on futures, wake-ups of consumers' long-polls, log lines, and one timer
for the next ``Tick`` the core asked for. What those operations report comes back as the
next events. No rule lives here: every "whether" and "when" is the core's.

One clock (``clock.now_ms()``), passed in; the jitter of backoffs comes from ``rng`` and
travels in the events, so the core stays deterministic.

Threads: the core and this driver live on the event loop thread. Flush completions arrive
on flusher threads and hop onto the loop (``call_soon_threadsafe``) before being stepped;
a small flush round the flusher lets run inline (``flusher.inline_round``) completes on
the loop itself and its ``Flushed`` is stepped right after the step that asked for it.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import random
from collections import deque
from collections.abc import Awaitable, Callable, Coroutine
from concurrent.futures import Future
from typing import Any, Final

import msgspec

from conveyor.broker import core
from conveyor.broker.corestate import BrokerState, CoreConfig
from conveyor.broker.peers import Peers
from conveyor.broker.replicas import ReplicaManager, facts
from conveyor.protocol.errors import (
    ConveyorError,
    DiskFullError,
    ErrorCode,
    LogTruncatedError,
    OffsetOutOfRangeError,
)
from conveyor.protocol.messages import EpochEndResponse, Offset, ReplicaFetchRequest
from conveyor.protocol.replica import (
    AdvanceFailed,
    AdvanceLogStart,
    AlterIsrAnswered,
    AnswerDeleteRecords,
    AnswerProduce,
    AnswerReplicaFetch,
    AppendFailed,
    AppendReplicated,
    AssignEpoch,
    DeleteLog,
    Effect,
    EpochEndAnswered,
    Event,
    Flushed,
    FollowerAppended,
    IsrChanged,
    LogChanged,
    LogFailed,
    Note,
    OpenFailed,
    OpenLog,
    PeerUnreachable,
    ProbeDisk,
    ReconfigureLog,
    ReplicaFetchAnswered,
    ReplicaFetchArrived,
    RequestDurable,
    ResetTo,
    ScheduleTick,
    SendAlterIsr,
    SendEpochEnd,
    SendReplicaFetch,
    Tick,
    TopicPartition,
    TruncateTo,
    Wake,
)
from conveyor.storage import PartitionLog
from conveyor.transport.clock import Clock
from conveyor.transport.waits import settle_all

log = logging.getLogger(__name__)

_LEVELS: Final = {
    "debug": logging.DEBUG,
    "info": logging.INFO,
    "warning": logging.WARNING,
    "error": logging.ERROR,
}
_PEER_ERRORS: Final = (ConveyorError, OSError, msgspec.DecodeError)


class CoreDriver:
    def __init__(
        self,
        config: CoreConfig,
        *,
        clock: Clock,
        storage: ReplicaManager,
        peers: Peers,
        on_isr_changed: Callable[[IsrChanged], None] = lambda _: None,
        rng: random.Random | None = None,
    ) -> None:
        self.state: BrokerState = core.new_state(config)
        self.clock = clock
        self._storage = storage
        self._peers = peers
        self._on_isr_changed = on_isr_changed
        self._rng = rng or random.Random()  # backoff jitter only
        self._queue: deque[Event] = deque()
        self._stepping = False
        self._ids = itertools.count(1)
        self._acks: dict[int, asyncio.Future[None]] = {}
        self._trims: dict[int, asyncio.Future[int]] = {}  # DeleteRecords -> low watermark
        self._fetches: dict[int, asyncio.Future[AnswerReplicaFetch]] = {}
        self._wakeups: dict[TopicPartition, asyncio.Future[None]] = {}
        self._timer: asyncio.TimerHandle | None = None
        self._timer_at_ms: int | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        self._chains: dict[TopicPartition, asyncio.Task[None]] = {}
        self._loop: asyncio.AbstractEventLoop | None = None
        self._closed = False
        # Requests read and not yet answered, over the Kafka listener's connections (set
        # by kafka/listener.py): with _acks, what decides whether a flush may run inline.
        self.requests_in_flight: Callable[[], int] = lambda: 0

    # ---- stepping --------------------------------------------------------------------------

    def step(self, event: Event) -> None:
        """Step ``event`` and perform its effects; events those produce are stepped after
        (a queue, not recursion, so each step sees the effects of the one before done)."""
        self._queue.append(event)
        if self._stepping:
            return
        self._stepping = True
        try:
            while self._queue:
                current = self._queue.popleft()
                self.state, effects = core.step(self.state, current, self.clock.now_ms())
                for effect in effects:
                    self._perform(effect)
        finally:
            self._stepping = False

    def start(self) -> None:
        """Begin ticking (the core's periodic checks schedule themselves from the first)."""
        self._loop = asyncio.get_running_loop()
        self.step(Tick())

    async def settle(self) -> None:
        """Wait until the storage operations started so far (and those they started) are
        done: a heartbeat answer is applied when its opens and deletes are."""
        while self._chains:
            await settle_all(*list(self._chains.values()))

    async def close(self) -> None:
        self._closed = True
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        await self.settle()
        for task in list(self._tasks):
            task.cancel()
        for task in list(self._tasks):
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        self._peers.close()

    # ---- what requests wait on -------------------------------------------------------------

    def new_ack(self) -> tuple[int, asyncio.Future[None]]:
        """An id for an acks=all produce and the future its AnswerProduce resolves."""
        ack_id = next(self._ids)
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._acks[ack_id] = future
        return ack_id, future

    def forget_ack(self, ack_id: int) -> None:
        self._acks.pop(ack_id, None)

    def new_trim(self) -> tuple[int, asyncio.Future[int]]:
        """An id for a DeleteRecords and the future its AnswerDeleteRecords resolves (to the
        low watermark)."""
        trim_id = next(self._ids)
        future: asyncio.Future[int] = asyncio.get_running_loop().create_future()
        self._trims[trim_id] = future
        return trim_id, future

    def forget_trim(self, trim_id: int) -> None:
        self._trims.pop(trim_id, None)

    async def replica_fetch(self, request: ReplicaFetchRequest) -> AnswerReplicaFetch:
        """A follower's fetch: the core answers at once or when data arrives (a long-poll)."""
        fetch_id = next(self._ids)
        future: asyncio.Future[AnswerReplicaFetch] = asyncio.get_running_loop().create_future()
        self._fetches[fetch_id] = future
        try:
            self.step(ReplicaFetchArrived(fetch_id=fetch_id, request=request))
            return await future
        finally:
            self._fetches.pop(fetch_id, None)

    def wakeup(self, tp: TopicPartition) -> asyncio.Future[None]:
        """The future the next Wake of ``tp`` resolves, shared by the long-polls waiting on
        ``tp``: wait on it with ``wakeup.wait_any``, which never cancels it."""
        woken = self._wakeups.get(tp)
        if woken is None:
            loop = self._loop or asyncio.get_running_loop()
            woken = self._wakeups[tp] = loop.create_future()
        return woken

    # ---- performing effects ----------------------------------------------------------------

    def _perform(self, effect: Effect) -> None:
        handler = _PERFORMERS.get(type(effect))
        if handler is None:
            raise AssertionError(f"no performer for {effect!r}")
        handler(self, effect)

    def _note(self, effect: Note) -> None:
        log.log(_LEVELS[effect.level], "%s", effect.message)

    def _wake(self, effect: Wake) -> None:
        self._resolve_wakeup(effect.tp)

    def _resolve_wakeup(self, tp: TopicPartition) -> None:
        woken = self._wakeups.pop(tp, None)
        if woken is not None and not woken.done():
            woken.set_result(None)

    def _answer_produce(self, effect: AnswerProduce) -> None:
        future = self._acks.pop(effect.ack_id, None)
        if future is None or future.done():
            return  # the producer went away (its request was cancelled)
        if effect.error is None:
            future.set_result(None)
        else:
            future.set_exception(effect.error)

    def _answer_delete_records(self, effect: AnswerDeleteRecords) -> None:
        future = self._trims.pop(effect.trim_id, None)
        if future is None or future.done():
            return  # the caller went away
        if effect.error is None:
            future.set_result(effect.low_watermark)
        else:
            future.set_exception(effect.error)

    def _answer_fetch(self, effect: AnswerReplicaFetch) -> None:
        future = self._fetches.pop(effect.fetch_id, None)
        if future is not None and not future.done():
            future.set_result(effect)

    def _isr_changed(self, effect: IsrChanged) -> None:
        log.info(
            "partition %s: isr %s -> %s (partition epoch %d)",
            effect.tp,
            list(effect.before),
            list(effect.after),
            effect.partition_epoch,
        )
        self._on_isr_changed(effect)

    def _schedule_tick(self, effect: ScheduleTick) -> None:
        if self._closed or self._loop is None:
            return
        if self._timer_at_ms is not None and self._timer_at_ms <= effect.at_ms:
            return  # an earlier tick is due; the core asks again for what is still due
        if self._timer is not None:
            self._timer.cancel()
        delay_s = max(0, effect.at_ms - self.clock.now_ms()) / 1000
        self._timer_at_ms = effect.at_ms
        self._timer = self._loop.call_later(delay_s, self._fire)

    def _fire(self) -> None:
        self._timer = None
        self._timer_at_ms = None
        self.step(Tick())

    # ---- storage ---------------------------------------------------------------------------

    def _serial(self, tp: TopicPartition, work: Callable[[], Awaitable[Event | None]]) -> None:
        """Run ``work`` after the storage operations of ``tp`` already started, then step
        the event it reports. A failure is logged; the core learns nothing (the next
        heartbeat or round asks again)."""
        previous = self._chains.get(tp)

        async def run() -> None:
            if previous is not None:
                with contextlib.suppress(Exception, asyncio.CancelledError):
                    await previous
            event = await work()
            if event is not None:
                self.step(event)

        task = asyncio.get_running_loop().create_task(run(), name=f"storage-{tp}")
        self._chains[tp] = task
        self._track(task)

        def done(finished: asyncio.Task[None]) -> None:
            if self._chains.get(tp) is finished:
                del self._chains[tp]

        task.add_done_callback(done)

    def _inline_or_serial(self, tp: TopicPartition, work: Callable[[], Event | None]) -> None:
        """Quick storage work (page-cache writes) runs at once unless a slow operation of
        the same partition is still under way; then it waits its turn."""
        if tp not in self._chains:
            event = work()
            if event is not None:
                self.step(event)
            return

        async def later() -> Event | None:
            return work()

        self._serial(tp, later)

    def _open(self, effect: OpenLog) -> None:
        async def work() -> Event:
            try:
                return await self._storage.open(effect.tp, effect.state)
            except (ConveyorError, OSError) as exc:
                log.error("partition %s: open failed: %s", effect.tp, exc)
                return OpenFailed(tp=effect.tp, reason=str(exc))

        log.info("partition %s: opening (%s)", effect.tp, effect.reason)
        self._serial(effect.tp, work)

    def _reconfigure(self, effect: ReconfigureLog) -> None:
        def work() -> Event | None:
            try:
                return self._storage.reconfigure(effect.tp, effect.log_config)
            except (ConveyorError, KeyError) as exc:
                log.error("partition %s: new settings not applied: %s", effect.tp, exc)
                return None

        log.info("partition %s: new settings (%s)", effect.tp, effect.reason)
        self._inline_or_serial(effect.tp, work)

    def _delete(self, effect: DeleteLog) -> None:
        async def work() -> None:
            try:
                await self._storage.delete(effect.tp)
            except (ConveyorError, OSError, KeyError) as exc:
                log.error("partition %s: delete failed: %s", effect.tp, exc)

        log.info("partition %s: deleting (%s)", effect.tp, effect.reason)
        self._resolve_wakeup(effect.tp)  # its long-polls look again: an error now
        self._serial(effect.tp, work)

    def _truncate(self, effect: TruncateTo) -> None:
        async def work() -> Event:
            try:
                return await self._storage.truncate(effect.tp, effect.offset)
            except (ConveyorError, OSError) as exc:
                log.warning("partition %s: truncation failed: %s", effect.tp, exc)
                failure = exc if isinstance(exc, ConveyorError) else ConveyorError(str(exc))
                return AppendFailed(tp=effect.tp, error=failure)

        log.warning("partition %s: %s", effect.tp, effect.reason)
        self._serial(effect.tp, work)

    def _reset(self, effect: ResetTo) -> None:
        def work() -> Event | None:
            try:
                return self._storage.reset(effect.tp, effect.offset)
            except (ConveyorError, KeyError) as exc:
                log.warning("partition %s: reset failed: %s", effect.tp, exc)
                return None

        log.warning("partition %s: %s", effect.tp, effect.reason)
        self._inline_or_serial(effect.tp, work)

    def _advance_start(self, effect: AdvanceLogStart) -> None:
        async def work() -> Event | None:
            partition_log = self._storage.get(effect.tp)
            if partition_log is None:
                return None
            try:
                return await self._storage.advance_start(effect.tp, effect.offset)
            except OffsetOutOfRangeError:
                # Truncated meanwhile (a follower cutting its log): the core decides anew.
                return LogChanged(tp=effect.tp, log=facts(partition_log))
            except ConveyorError as exc:
                return AdvanceFailed(tp=effect.tp, error=exc)

        log.info("partition %s: log start to %d (%s)", effect.tp, effect.offset, effect.reason)
        self._serial(effect.tp, work)

    def _assign_epoch(self, effect: AssignEpoch) -> None:
        def work() -> Event | None:
            partition_log = self._storage.get(effect.tp)
            if partition_log is None:
                return None
            try:
                partition_log.assign_epoch(effect.epoch)
            except ConveyorError as exc:
                log.error("partition %s: cannot record epoch %d: %s", effect.tp, effect.epoch, exc)
            return None

        self._inline_or_serial(effect.tp, work)

    def _append_replicated(self, effect: AppendReplicated) -> None:
        def work() -> Event:
            partition_log = self._storage.get(effect.tp)
            if partition_log is None:
                error = ConveyorError(f"{effect.tp} is not hosted", code=ErrorCode.NOT_LEADER)
                return AppendFailed(tp=effect.tp, error=error)
            try:
                partition_log.append_replicated(effect.data)
            except DiskFullError as exc:
                return AppendFailed(tp=effect.tp, error=exc, disk_full=True)
            except ConveyorError as exc:
                return AppendFailed(tp=effect.tp, error=exc)
            return FollowerAppended(tp=effect.tp, log=facts(partition_log), data=effect.data)

        self._inline_or_serial(effect.tp, work)

    def _request_durable(self, effect: RequestDurable) -> None:
        partition_log = self._storage.get(effect.tp)
        if partition_log is None:
            return
        loop = self._loop or asyncio.get_running_loop()
        tp = effect.tp

        def threadsafe(future: Future[int]) -> None:
            # On a flusher thread.
            # RuntimeError: the loop closed during shutdown; close() flushed the log anyway.
            with contextlib.suppress(RuntimeError):
                loop.call_soon_threadsafe(self._durable_done, tp, partition_log, future)

        # A small round may fsync right here, on the loop, when an acks=all produce is the
        # only request waiting (flusher.inline_round), instead of waking a flush thread and
        # being woken back. Without an ack waiting (a follower's append, acks=1), never.
        acks = len(self._acks)
        waiting = max(acks, self.requests_in_flight()) if acks else None
        future = partition_log.durable(effect.offset, requests_waiting=waiting)
        if future.done():
            # Already durable, or flushed inline: no thread hop and no loop pass. This runs
            # among the effects of a step, so the Flushed event is queued and stepped
            # right after them (step() never recurses).
            self._durable_done(tp, partition_log, future)
        else:
            future.add_done_callback(threadsafe)

    def _durable_done(
        self, tp: TopicPartition, partition_log: PartitionLog, future: Future[int]
    ) -> None:
        if self._storage.get(tp) is not partition_log:
            return  # deleted (or opened again) meanwhile: the new log reports for itself
        exc = future.exception()
        if isinstance(exc, LogTruncatedError):
            # Retriable, not a failure of the log: a truncation (a new leader's history, or
            # a reset) removed the write before it was flushed. The producer waiting on it
            # learns through its ack (the high watermark never covers it).
            log.info("partition %s: an unflushed write was truncated: %s", tp, exc)
        elif isinstance(exc, ConveyorError):
            self.step(LogFailed(tp=tp, error=exc))
            return
        elif exc is not None:
            raise exc  # a bug: surfaces through the loop's exception handler
        self.step(Flushed(tp=tp, durable_offset=Offset(partition_log.durable_offset)))

    def _probe_disk(self, effect: ProbeDisk) -> None:
        async def work() -> Event | None:
            return await self._storage.probe_disk(effect.tp)

        self._serial(effect.tp, work)

    # ---- messages --------------------------------------------------------------------------

    def _send_alter_isr(self, effect: SendAlterIsr) -> None:
        async def work() -> None:
            try:
                response = await self._peers.alter_isr(effect.request)
            except _PEER_ERRORS as exc:
                code = exc.code.name if isinstance(exc, ConveyorError) else "NETWORK_ERROR"
                self.step(
                    AlterIsrAnswered(
                        tp=effect.tp, request=effect.request, error_code=code, message=str(exc)
                    )
                )
                return
            self.step(
                AlterIsrAnswered(
                    tp=effect.tp, request=effect.request, assignment=response.assignment
                )
            )

        self._spawn(work(), f"alter-isr-{effect.tp}")

    def _send_replica_fetch(self, effect: SendReplicaFetch) -> None:
        async def work() -> None:
            try:
                response, chunks = await self._peers.replica_fetch(effect.leader, effect.request)
            except _PEER_ERRORS as exc:
                self.step(
                    PeerUnreachable(
                        leader=effect.leader,
                        request=effect.request,
                        reason=str(exc),
                        draw=self._rng.random(),
                    )
                )
                return
            self.step(
                ReplicaFetchAnswered(
                    leader=effect.leader,
                    request=effect.request,
                    response=response,
                    chunks=tuple(chunks),
                    draw=self._rng.random(),
                )
            )

        self._spawn(work(), f"replica-fetch-{effect.leader}")

    def _send_epoch_end(self, effect: SendEpochEnd) -> None:
        async def work() -> None:
            try:
                response = await self._peers.epoch_end(effect.leader, effect.request)
            except _PEER_ERRORS as exc:
                self.step(
                    PeerUnreachable(
                        leader=effect.leader,
                        request=effect.request,
                        reason=str(exc),
                        draw=self._rng.random(),
                    )
                )
                return
            self.step(self._epoch_end_answered(effect, response))

        self._spawn(work(), f"epoch-end-{effect.leader}")

    def _epoch_end_answered(self, effect: SendEpochEnd, response: EpochEndResponse) -> Event:
        """Attach where each answered epoch ends in our own log (a read the core needs)."""
        own: list[int] = []
        for wanted, result in zip(effect.request.partitions, response.partitions, strict=False):
            partition_log = self._storage.get(TopicPartition(wanted.topic, wanted.partition))
            end = -1
            if partition_log is not None and result.epoch >= 0:
                own_epoch, end = partition_log.end_offset_for_epoch(result.epoch)
                if own_epoch < 0:
                    end = partition_log.log_start_offset
            own.append(end)
        return EpochEndAnswered(
            leader=effect.leader,
            request=effect.request,
            response=response,
            own_end_offsets=tuple(own),
        )

    def _spawn(self, coro: Coroutine[Any, Any, None], name: str) -> None:
        if self._closed:
            coro.close()
            return
        task: asyncio.Task[None] = asyncio.get_running_loop().create_task(coro, name=name)
        self._track(task)

    def _track(self, task: asyncio.Task[None]) -> None:
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)


_PERFORMERS: Final[dict[type, Callable[[CoreDriver, Any], None]]] = {
    OpenLog: CoreDriver._open,
    ReconfigureLog: CoreDriver._reconfigure,
    DeleteLog: CoreDriver._delete,
    AssignEpoch: CoreDriver._assign_epoch,
    TruncateTo: CoreDriver._truncate,
    ResetTo: CoreDriver._reset,
    AdvanceLogStart: CoreDriver._advance_start,
    AppendReplicated: CoreDriver._append_replicated,
    RequestDurable: CoreDriver._request_durable,
    ProbeDisk: CoreDriver._probe_disk,
    SendAlterIsr: CoreDriver._send_alter_isr,
    SendReplicaFetch: CoreDriver._send_replica_fetch,
    SendEpochEnd: CoreDriver._send_epoch_end,
    AnswerReplicaFetch: CoreDriver._answer_fetch,
    AnswerProduce: CoreDriver._answer_produce,
    AnswerDeleteRecords: CoreDriver._answer_delete_records,
    Wake: CoreDriver._wake,
    IsrChanged: CoreDriver._isr_changed,
    ScheduleTick: CoreDriver._schedule_tick,
    Note: CoreDriver._note,
}
