"""The simulated processes: the coordinator (its pure core), brokers (the pure broker core
with in-memory logs), and the shells that perform their effects over the simulated
network, as ``broker/driver.py`` and ``coordinator/service.py`` do over HTTP and disks.
"""

from __future__ import annotations

import itertools
import random
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from conveyor.broker import core
from conveyor.broker import producers as producer_state
from conveyor.broker.corestate import BrokerState, CoreConfig
from conveyor.broker.replica import check_produce
from conveyor.coordinator import control
from conveyor.coordinator import state as coordinator
from conveyor.coordinator.model import ClusterState, apply, check_invariants
from conveyor.coordinator.records_codec import decode_records, encode_records
from conveyor.coordinator.state import Result, TopicDefaults
from conveyor.protocol.batch import parse_header
from conveyor.protocol.errors import ConveyorError, DiskFullError, ErrorCode
from conveyor.protocol.messages import (
    AlterIsrRequest,
    BrokerHeartbeat,
    BrokerId,
    CreateTopicRequest,
    EpochEndRequest,
    EpochEndResponse,
    EpochEndResult,
    ErrorBody,
    HeartbeatResponse,
    InitProducerIdRequest,
    Offset,
    ReplicaFetchRequest,
    ReplicaFetchResponse,
    ReplicaFetchResult,
    TopicConfig,
)
from conveyor.protocol.replica import (
    UNKNOWN_EPOCH,
    AdvanceLogStart,
    AlterIsrAnswered,
    AnswerDeleteRecords,
    AnswerProduce,
    AnswerReplicaFetch,
    AppendFailed,
    AppendReplicated,
    AssignEpoch,
    DeleteLog,
    DiskSpace,
    Effect,
    EpochEndAnswered,
    Event,
    Flushed,
    FollowerAppended,
    HeartbeatAnswered,
    IsrChanged,
    LeaderAppended,
    LogChanged,
    LogFacts,
    Note,
    Opened,
    OpenLog,
    ProbeDisk,
    ReconfigureLog,
    ReplicaFetchAnswered,
    ReplicaFetchArrived,
    ReplicaState,
    RequestDurable,
    ResetTo,
    RetryArrived,
    ScheduleTick,
    SendAlterIsr,
    SendEpochEnd,
    SendReplicaFetch,
    Tick,
    TopicPartition,
    TruncateTo,
    Wake,
)
from tests.sim.history import InvariantError
from tests.sim.memlog import MemoryLog

if TYPE_CHECKING:
    from tests.sim.world import Sim

SESSION_TIMEOUT_MS = 1500
HEARTBEAT_INTERVAL_MS = 300
EXPIRY_CHECK_MS = 200
# Shorter than a broker's default (10 s), so that followers cut off by a fault leave the
# ISR (and come back) within a run: the ISR rules get exercised, not just the happy path.
REPLICA_LAG_TIME_MAX_MS = 1000
# A lost replica request is noticed after this (10 s on a real broker: the sim's messages
# take milliseconds, and a 10 s stall per lost message would only slow the runs down).
REQUEST_TIMEOUT_MS = 1000
TOPIC = "t"


def facts(log: MemoryLog) -> LogFacts:
    return LogFacts(
        log_start_offset=Offset(log.log_start_offset),
        log_end_offset=Offset(log.log_end_offset),
        durable_offset=Offset(log.durable_offset),
        latest_epoch=log.latest_epoch,
    )


def error_of(exc: ConveyorError) -> ErrorBody:
    return core.error_body(exc)


# ---- the coordinator ------------------------------------------------------------------------


def durable_view(state: ClusterState) -> tuple[dict[Any, Any], ...]:
    """What a coordinator must still know after a crash: every decision anyone may have
    heard of (heartbeat times and reports are soft: brokers resend them)."""
    brokers = {
        b.broker_id: (b.url, b.alive, b.decommissioning, b.incarnation)
        for b in state.brokers.values()
    }
    return (brokers, dict(state.topics), dict(state.partitions), dict(state.producers))


def _differences(loaded: ClusterState, coordinator: SimCoordinator) -> str:
    names = ("brokers", "topics", "partitions", "producers")
    pairs = zip(durable_view(loaded), coordinator.known_at_crash, strict=True)
    return ", ".join(name for name, (a, b) in zip(names, pairs, strict=True) if a != b)


def stored_after_crash(stored: list[tuple[int, bytes]], crash_ms: int) -> list[tuple[int, bytes]]:
    """What of the coordinator's store survives a crash: all of it, since a transition is
    committed (fsynced, or on an etcd quorum) before anyone hears of it. (A mutation
    replaces this to show what answering before the store is durable would break.)"""
    return stored


@dataclass
class SimCoordinator:
    """The coordinator's core with a durable log of its records, as the etcd store keeps
    one (``records_codec``: soft records such as heartbeat times are never written). A
    crash loses everything else; a restart replays the log with ``model.apply``, the same
    function live transitions use, then grants every broker a fresh session."""

    sim: Sim
    state: ClusterState = field(default_factory=lambda: ClusterState(cluster_id="sim"))
    topic_created: bool = False
    ticks: int = 0
    incarnation: int | None = 0  # None while crashed; messages to or from an older one are lost
    restarts: int = 0
    stored: list[tuple[int, bytes]] = field(default_factory=list)  # (written at ms, entry)
    known_at_crash: tuple[dict[Any, Any], ...] = ()  # the durable part of the crashed state

    def start(self) -> None:
        self.sim.every(EXPIRY_CHECK_MS, "c", self._expiry)

    def crash(self) -> None:
        """The process dies. Each transition was stored before its reply left (the service's
        writer persists, then answers), so the log holds every decision anyone saw."""
        self.incarnation = None
        self.known_at_crash = durable_view(self.state)
        self.stored = stored_after_crash(self.stored, self.sim.now)
        self.sim.trace("c", "crashed: soft state lost")

    def restart(self) -> None:
        """Load the stored log and restart every broker's session clock, as
        ``CoordinatorService.activate`` does; unless healing did already."""
        if self.incarnation is not None:
            return
        self.restarts += 1
        self.incarnation = self.restarts
        records = [r for _, entry in self.stored for r in decode_records(entry)]
        loaded = apply(ClusterState(cluster_id=self.state.cluster_id), records)
        check_invariants(loaded)
        if durable_view(loaded) != self.known_at_crash:  # checked twice: stored, then read
            raise InvariantError(
                "coordinator forgot a decision",
                f"restarted at {self.sim.now} ms, its stored {_differences(loaded, self)} "
                "differ from what it had decided before the crash",
            )
        self.state = coordinator.grant_grace(loaded, self.sim.now).state
        self.sim.trace("c", f"restarted: {len(records)} records replayed")

    def _commit(self, result: Result[Any]) -> None:
        """Store a transition's durable records, then take its state."""
        if result.durable_records:
            self.stored.append((self.sim.now, encode_records(result.durable_records)))
        self.state = result.state
        for decision in result.decisions:
            self.sim.trace("c", decision)

    def _expiry(self) -> None:
        if self.incarnation is None:
            return
        now = self.sim.now
        result = coordinator.expire_brokers(self.state, now, SESSION_TIMEOUT_MS)
        self._commit(result)
        self.ticks += 1
        if self.ticks % 4 == 0:  # moves and preferred leaders: the service's slower cadence
            moved = control.maintain(self.state, now, 3000, 2)
            self._commit(moved)
        self._maybe_create_topic()

    def _maybe_create_topic(self) -> None:
        scenario = self.sim.scenario
        if self.topic_created or len(self.state.alive_broker_ids()) < scenario.brokers:
            return
        request = CreateTopicRequest(
            name=TOPIC,
            partitions=scenario.partitions,
            replication_factor=scenario.replication_factor,
            config=TopicConfig(min_insync_replicas=scenario.min_insync_replicas),
        )
        result = coordinator.create_topic(self.state, request, self.sim.now, TopicDefaults())
        self._commit(result)
        self.topic_created = True
        self.sim.trace("c", f"created topic {TOPIC}")

    def heartbeat(self, beat: BrokerHeartbeat) -> HeartbeatResponse:
        result = coordinator.handle_heartbeat(self.state, beat, self.sim.now, HEARTBEAT_INTERVAL_MS)
        self._commit(result)
        return result.reply

    def alter_isr(self, request: AlterIsrRequest) -> tuple[Any, str | None]:
        try:
            result = control.alter_isr(self.state, request)
        except ConveyorError as exc:
            return None, exc.code.name
        self._commit(result)
        return result.reply.assignment, None

    def init_producer(self, producer_id: int = -1, epoch: int = -1) -> tuple[int, int]:
        request = InitProducerIdRequest(producer_id=producer_id, producer_epoch=epoch)
        result = control.init_producer_id(self.state, request)
        self._commit(result)
        return result.reply.producer_id, result.reply.producer_epoch

    def leader_of(self, tp: TopicPartition) -> int | None:
        partition = self.state.partitions.get((tp.topic, tp.partition))
        return None if partition is None else partition.leader


# ---- a broker -----------------------------------------------------------------------------


@dataclass
class SimBroker:
    sim: Sim
    broker_id: int
    rng: random.Random
    incarnation: int | None = None  # None: down
    restarts: int = 0
    state: BrokerState | None = None
    disk: dict[TopicPartition, MemoryLog] = field(default_factory=dict)  # survives crashes
    logs: dict[TopicPartition, MemoryLog] = field(default_factory=dict)  # open ones
    cluster_id: str | None = None
    tick_at: int | None = None
    busy_until: dict[TopicPartition, int] = field(default_factory=dict)
    acks: dict[int, Callable[[ErrorBody | None], None]] = field(default_factory=dict)
    fetches: dict[int, Callable[[AnswerReplicaFetch], None]] = field(default_factory=dict)
    ids: itertools.count[int] = field(default_factory=lambda: itertools.count(1))
    queue: deque[Event] = field(default_factory=deque)
    stepping: bool = False
    slow_until_ms: int = 0  # a slow disk: fsyncs take hundreds of ms until then

    def __post_init__(self) -> None:
        self.name = f"b{self.broker_id}"

    # ---- lifetime --------------------------------------------------------------------------

    def start(self) -> None:
        self.restarts += 1
        self.incarnation = self.restarts
        self.state = core.new_state(
            CoreConfig(
                broker_id=BrokerId(self.broker_id),
                replica_fetch_max_wait_ms=200,
                replica_lag_time_max_ms=REPLICA_LAG_TIME_MAX_MS,
                replica_request_timeout_ms=REQUEST_TIMEOUT_MS,
            )
        )
        self.logs, self.tick_at, self.busy_until = {}, None, {}
        self.acks, self.fetches = {}, {}
        self.sim.trace(self.name, f"started (incarnation {self.incarnation})")
        self.step(Tick())
        for tp in sorted(self.disk):
            log = self.disk[tp]
            self.logs[tp] = log
            state = ReplicaState(role="follower", leader_epoch=UNKNOWN_EPOCH, leader=None)
            producers = producer_state.rebuilt(log.headers(log.log_start_offset))
            self.step(Opened(tp=tp, state=state, log=facts(log), producers=producers))
        self._heartbeat()

    def restart(self) -> None:
        """The end of a crash fault: start again unless healing already did."""
        if self.incarnation is None:
            self.start()

    def crash(self) -> None:
        self.sim.trace(self.name, "crashed: unflushed writes lost")
        self.incarnation = None
        self.state = None
        self.logs = {}
        for log in self.disk.values():
            log.crash(self.rng)

    def later(self, delay_ms: int, action: Callable[[], None], label: str) -> None:
        """Run ``action`` after ``delay_ms`` unless this incarnation is gone by then."""
        incarnation = self.incarnation

        def guarded() -> None:
            if self.incarnation == incarnation and incarnation is not None:
                action()

        self.sim.at(self.sim.now + delay_ms, guarded, f"{self.name} {label}")

    # ---- stepping the core -----------------------------------------------------------------

    def step(self, event: Event) -> None:
        self.queue.append(event)
        if self.stepping:
            return
        self.stepping = True
        try:
            while self.queue and self.state is not None:
                current = self.queue.popleft()
                self.state, effects = core.step(self.state, current, self.sim.now)
                self.sim.trace_event(self.name, current, effects)
                for effect in effects:
                    self._perform(effect)
        finally:
            self.stepping = False
            self.queue.clear()
        self.sim.check(self)

    def _perform(self, effect: Effect) -> None:
        PERFORMERS[type(effect)](self, effect)

    # ---- heartbeats ----------------------------------------------------------------------------

    def _heartbeat(self) -> None:
        if self.state is None:
            return
        beat = BrokerHeartbeat(
            broker_id=BrokerId(self.broker_id),
            url=f"http://{self.name}",
            partitions=core.reports(self.state),
            incarnation=f"i{self.incarnation}",
        )
        incarnation = self.incarnation

        def at_coordinator() -> None:
            response = self.sim.coordinator.heartbeat(beat)
            self.sim.network.send(
                "c", self.name, lambda: self._answered(response), "heartbeat-reply"
            )

        self.sim.network.send(self.name, "c", at_coordinator, "heartbeat")
        if incarnation is not None:
            self.later(HEARTBEAT_INTERVAL_MS, self._heartbeat, "heartbeat timer")

    def _answered(self, response: HeartbeatResponse) -> None:
        if self.cluster_id not in (None, response.cluster_id):
            return
        self.cluster_id = response.cluster_id
        self.step(HeartbeatAnswered(response=response))

    # ---- storage effects -----------------------------------------------------------------------

    def _storage(self, tp: TopicPartition, action: Callable[[], None], slow: bool) -> None:
        """Storage work of one partition, in order; slow operations take a few ms."""
        ready = self.busy_until.get(tp, 0)
        if not slow and ready <= self.sim.now:
            action()
            return
        at = max(ready, self.sim.now) + (self.rng.randint(1, 5) if slow else 0)
        self.busy_until[tp] = at
        self.later(at - self.sim.now, action, f"storage {tp}")

    def _open(self, effect: OpenLog) -> None:
        def work() -> None:
            log = self.disk.setdefault(effect.tp, MemoryLog())
            self.logs[effect.tp] = log
            producers = producer_state.rebuilt(log.headers(log.log_start_offset))
            self.step(Opened(tp=effect.tp, state=effect.state, log=facts(log), producers=producers))

        self._storage(effect.tp, work, slow=True)

    def _reconfigure(self, effect: ReconfigureLog) -> None:
        def work() -> None:
            log = self.logs[effect.tp]  # its settings do not change what the sim's log does
            self.step(LogChanged(tp=effect.tp, log=facts(log), log_config=effect.log_config))

        self._storage(effect.tp, work, slow=False)

    def _delete(self, effect: DeleteLog) -> None:
        def work() -> None:
            self.logs.pop(effect.tp, None)
            self.disk.pop(effect.tp, None)

        self._storage(effect.tp, work, slow=True)

    def _assign_epoch(self, effect: AssignEpoch) -> None:
        self._storage(
            effect.tp, lambda: self.logs[effect.tp].assign_epoch(effect.epoch), slow=False
        )

    def _truncate(self, effect: TruncateTo | ResetTo) -> None:
        def work() -> None:
            log = self.logs.get(effect.tp)
            if log is None:
                return
            if isinstance(effect, TruncateTo):
                log.truncate_to(effect.offset)
            else:
                log.reset_to(effect.offset)
            producers = producer_state.rebuilt(log.headers(log.log_start_offset))
            self.step(LogChanged(tp=effect.tp, log=facts(log), producers=producers))

        self._storage(effect.tp, work, slow=isinstance(effect, TruncateTo))

    def _advance_start(self, effect: AdvanceLogStart) -> None:
        def work() -> None:
            log = self.logs.get(effect.tp)
            if log is None:
                return
            if effect.offset <= log.log_end_offset:
                log.advance_start(effect.offset)
            self.step(LogChanged(tp=effect.tp, log=facts(log)))

        self._storage(effect.tp, work, slow=True)

    def _append_replicated(self, effect: AppendReplicated) -> None:
        def work() -> None:
            log = self.logs.get(effect.tp)
            if log is None:
                error = ConveyorError("not hosted", code=ErrorCode.NOT_LEADER)
                self.step(AppendFailed(tp=effect.tp, error=error))
                return
            try:
                log.append_replicated(effect.data)
            except DiskFullError as exc:
                self.step(AppendFailed(tp=effect.tp, error=exc, disk_full=True))
                return
            except ConveyorError as exc:
                self.step(AppendFailed(tp=effect.tp, error=exc))
                return
            self.step(FollowerAppended(tp=effect.tp, log=facts(log), data=effect.data))

        self._storage(effect.tp, work, slow=False)

    def _request_durable(self, effect: RequestDurable) -> None:
        log = self.logs.get(effect.tp)
        if log is None:
            return

        def flushed() -> None:
            if self.logs.get(effect.tp) is not log:
                return
            if effect.offset < log.log_end_offset:
                log.flush()  # a group commit: everything written so far
            self.step(Flushed(tp=effect.tp, durable_offset=Offset(log.durable_offset)))

        delay_ms = self.rng.randint(1, 8)
        if self.sim.now < self.slow_until_ms:
            delay_ms += self.rng.randint(200, 600)
        self.later(delay_ms, flushed, f"fsync {effect.tp}")

    def _probe_disk(self, effect: ProbeDisk) -> None:
        self.step(DiskSpace(tp=effect.tp, free_bytes=1 << 40))

    # ---- messages ------------------------------------------------------------------------------

    def _send_alter_isr(self, effect: SendAlterIsr) -> None:
        def at_coordinator() -> None:
            assignment, error = self.sim.coordinator.alter_isr(effect.request)
            answer = AlterIsrAnswered(
                tp=effect.tp, request=effect.request, assignment=assignment, error_code=error
            )
            self.sim.network.send("c", self.name, lambda: self.step(answer), "alter-isr-reply")

        self.sim.network.send(self.name, "c", at_coordinator, "alter-isr")

    def _send_fetch(self, effect: SendReplicaFetch) -> None:
        leader = self.sim.brokers.get(effect.leader)
        if leader is None:
            return
        request = effect.request

        def at_leader() -> None:
            leader.serve_fetch(request, self._fetch_answered(effect))

        self.sim.network.send(self.name, leader.name, at_leader, "replica-fetch")

    def _fetch_answered(
        self, effect: SendReplicaFetch
    ) -> Callable[[ReplicaFetchResponse, tuple[bytes, ...]], None]:
        def reply(response: ReplicaFetchResponse, chunks: tuple[bytes, ...]) -> None:
            answer = ReplicaFetchAnswered(
                leader=effect.leader,
                request=effect.request,
                response=response,
                chunks=chunks,
                draw=self.rng.random(),
            )
            self.step(answer)

        return reply

    def serve_fetch(
        self,
        request: ReplicaFetchRequest,
        reply: Callable[[ReplicaFetchResponse, tuple[bytes, ...]], None],
    ) -> None:
        """The leader's side: the core answers now or parks the long-poll."""
        if self.state is None:
            return
        fetch_id = next(self.ids)
        follower = self.sim.brokers[request.broker_id]

        def answer(effect: AnswerReplicaFetch) -> None:
            response, chunks = self._read_plan(request, effect)
            self.sim.network.send(
                self.name, follower.name, lambda: reply(response, chunks), "replica-fetch-reply"
            )

        self.fetches[fetch_id] = answer
        self.step(ReplicaFetchArrived(fetch_id=fetch_id, request=request))

    def _read_plan(
        self, request: ReplicaFetchRequest, effect: AnswerReplicaFetch
    ) -> tuple[ReplicaFetchResponse, tuple[bytes, ...]]:
        results: list[ReplicaFetchResult] = []
        chunks: list[bytes] = []
        budget = request.max_bytes
        for wanted, read in zip(request.partitions, effect.reads, strict=True):
            if isinstance(read, ErrorBody):
                results.append(
                    ReplicaFetchResult(topic=wanted.topic, partition=wanted.partition, error=read)
                )
                chunks.append(b"")
                continue
            log = self.logs.get(TopicPartition(read.topic, read.partition))
            data = b""
            try:
                if log is None:
                    raise ConveyorError("leadership moved", code=ErrorCode.NOT_LEADER)
                if budget > 0:
                    data = log.read(read.fetch_offset, min(request.partition_max_bytes, budget))
            except ConveyorError as exc:
                start = log.log_start_offset if log is not None else 0
                end = log.log_end_offset if log is not None else 0
                results.append(
                    ReplicaFetchResult(
                        topic=read.topic,
                        partition=read.partition,
                        error=error_of(exc),
                        log_start_offset=start,
                        log_end_offset=end,
                    )
                )
                chunks.append(b"")
                continue
            budget -= len(data)
            assert log is not None
            results.append(
                ReplicaFetchResult(
                    topic=read.topic,
                    partition=read.partition,
                    high_watermark=read.high_watermark,
                    log_start_offset=log.log_start_offset,
                    log_end_offset=log.log_end_offset,
                    size_bytes=len(data),
                )
            )
            chunks.append(data)
        return ReplicaFetchResponse(partitions=results), tuple(chunks)

    def _answer_fetch(self, effect: AnswerReplicaFetch) -> None:
        answer = self.fetches.pop(effect.fetch_id, None)
        if answer is not None:
            answer(effect)

    def _send_epoch_end(self, effect: SendEpochEnd) -> None:
        leader = self.sim.brokers.get(effect.leader)
        if leader is None:
            return

        def at_leader() -> None:
            response = leader.epoch_end(effect.request)
            if response is not None:
                self.sim.network.send(
                    leader.name,
                    self.name,
                    lambda: self._epoch_end_answered(effect, response),
                    "epoch-end-reply",
                )

        self.sim.network.send(self.name, leader.name, at_leader, "epoch-end")

    def epoch_end(self, request: EpochEndRequest) -> EpochEndResponse | None:
        if self.state is None:
            return None
        results: list[EpochEndResult] = []
        for wanted in request.partitions:
            tp = TopicPartition(wanted.topic, wanted.partition)
            problem = core.fencing_problem(
                self.state, request.broker_id, tp, wanted.current_leader_epoch
            )
            log = self.logs.get(tp)
            if problem is None and log is None:
                problem = ConveyorError("not hosted")
            if problem is not None:
                results.append(
                    EpochEndResult(topic=tp.topic, partition=tp.partition, error=error_of(problem))
                )
                continue
            assert log is not None
            epoch, end = log.end_offset_for_epoch(wanted.epoch)
            results.append(
                EpochEndResult(topic=tp.topic, partition=tp.partition, epoch=epoch, end_offset=end)
            )
        return EpochEndResponse(partitions=results)

    def _epoch_end_answered(self, effect: SendEpochEnd, response: EpochEndResponse) -> None:
        own: list[int] = []
        for wanted, result in zip(effect.request.partitions, response.partitions, strict=False):
            log = self.logs.get(TopicPartition(wanted.topic, wanted.partition))
            end = -1
            if log is not None and result.epoch >= 0:
                own_epoch, end = log.end_offset_for_epoch(result.epoch)
                if own_epoch < 0:
                    end = log.log_start_offset
            own.append(end)
        self.step(
            EpochEndAnswered(
                leader=effect.leader,
                request=effect.request,
                response=response,
                own_end_offsets=tuple(own),
            )
        )

    # ---- clients -------------------------------------------------------------------------------

    def produce(
        self, tp: TopicPartition, batch: bytes, reply: Callable[[ErrorBody | None, int, int], None]
    ) -> None:
        """The produce path of ``BrokerService.produce``, acks=all."""
        if self.state is None:
            return
        replica = self.state.replicas.get(tp)
        log = self.logs.get(tp)
        if replica is None or not replica.is_leader or log is None:
            reply(error_of(ConveyorError("not the leader", code=ErrorCode.NOT_LEADER)), -1, -1)
            return
        idempotent = producer_state.idempotent_write(batch)
        write = idempotent[0] if idempotent is not None else None
        try:
            duplicate = check_produce(replica, "all", write)
        except ConveyorError as exc:
            reply(error_of(exc), -1, -1)
            return
        ack_id = next(self.ids)
        deadline_ms = self.sim.now + 2000
        if duplicate is not None:
            self.sim.trace(self.name, f"{tp}: a retry of offset {duplicate.base_offset}")
            base, last = duplicate.base_offset, duplicate.last_offset
            self.acks[ack_id] = lambda error: reply(error, base, last)
            self.step(
                RetryArrived(
                    tp=tp, last_offset=Offset(last), ack_id=ack_id, deadline_ms=deadline_ms
                )
            )
            return
        base, last = log.append(batch, leader_epoch=replica.leader_epoch)
        if self.sim.tracing:
            value = self.sim.history.values_by_crc.get(parse_header(batch).crc)
            self.sim.trace(
                self.name, f"{tp}: appended {value!r} at {base} (epoch {replica.leader_epoch})"
            )
        self.acks[ack_id] = lambda error: reply(error, base, last)
        self.sim.trace(self.name, f"{tp}: ack #{ack_id} waits for offset {last + 1}")
        self.step(
            LeaderAppended(
                tp=tp,
                log=facts(log),
                base_offset=Offset(base),
                last_offset=Offset(last),
                producer=write,
                ack_id=ack_id,
                deadline_ms=deadline_ms,
            )
        )

    def _answer_produce(self, effect: AnswerProduce) -> None:
        reply = self.acks.pop(effect.ack_id, None)
        if reply is not None:
            reply(None if effect.error is None else error_of(effect.error))

    def consume(self, tp: TopicPartition, offset: int) -> tuple[bytes, int] | ErrorBody | None:
        """A consumer's fetch: batches below the high watermark, from the leader only."""
        if self.state is None:
            return None
        replica = self.state.replicas.get(tp)
        log = self.logs.get(tp)
        if replica is None or not replica.is_leader or log is None:
            return error_of(ConveyorError("not the leader", code=ErrorCode.NOT_LEADER))
        try:
            data = log.read(offset, 64 * 1024, upper_offset=replica.high_watermark)
        except ConveyorError as exc:
            return error_of(exc)
        return data, replica.high_watermark

    # ---- the rest ------------------------------------------------------------------------------

    def _schedule_tick(self, effect: ScheduleTick) -> None:
        if self.tick_at is not None and self.tick_at <= effect.at_ms:
            return
        self.tick_at = effect.at_ms

        def fire() -> None:
            if self.tick_at == effect.at_ms:
                self.tick_at = None
                self.step(Tick())

        self.later(max(0, effect.at_ms - self.sim.now), fire, "tick")

    def _ignore(self, effect: Effect) -> None:
        return None

    def _note(self, effect: Note) -> None:
        self.sim.trace(self.name, effect.message)

    def _isr_changed(self, effect: IsrChanged) -> None:
        self.sim.trace(self.name, f"isr {effect.tp} {list(effect.before)} -> {list(effect.after)}")


PERFORMERS: dict[type, Callable[[SimBroker, Any], None]] = {
    OpenLog: SimBroker._open,
    ReconfigureLog: SimBroker._reconfigure,
    DeleteLog: SimBroker._delete,
    AssignEpoch: SimBroker._assign_epoch,
    TruncateTo: SimBroker._truncate,
    ResetTo: SimBroker._truncate,
    AdvanceLogStart: SimBroker._advance_start,
    AnswerDeleteRecords: SimBroker._ignore,
    AppendReplicated: SimBroker._append_replicated,
    RequestDurable: SimBroker._request_durable,
    ProbeDisk: SimBroker._probe_disk,
    SendAlterIsr: SimBroker._send_alter_isr,
    SendReplicaFetch: SimBroker._send_fetch,
    SendEpochEnd: SimBroker._send_epoch_end,
    AnswerReplicaFetch: SimBroker._answer_fetch,
    AnswerProduce: SimBroker._answer_produce,
    Wake: SimBroker._ignore,
    IsrChanged: SimBroker._isr_changed,
    ScheduleTick: SimBroker._schedule_tick,
    Note: SimBroker._note,
}

__all__ = ["PERFORMERS", "SimBroker", "SimCoordinator"]
