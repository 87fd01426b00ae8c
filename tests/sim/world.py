"""One simulated cluster run: a manual clock, a seeded RNG, the nodes, the faults, and the
invariants checked after every step.

Everything happens through one event queue ordered by (time, sequence number), so a seed
reproduces a run exactly: the same messages in the same order, the same faults, the
same crashes losing the same unflushed writes.
"""

from __future__ import annotations

import dataclasses
import heapq
import random
from collections import Counter, deque
from collections.abc import Callable
from dataclasses import dataclass

from conveyor.protocol.batch import parse_header
from conveyor.protocol.records import decode_batches
from conveyor.protocol.replica import AnswerProduce, Effect, Event, RequestDurable, TopicPartition
from tests.sim.clients import SimConsumer, SimProducer
from tests.sim.history import (
    Entries,
    History,
    InvariantError,
    check_final,
    check_leader,
    check_one_leader_per_epoch,
)
from tests.sim.memlog import MemoryLog
from tests.sim.network import Network
from tests.sim.nodes import SimBroker, SimCoordinator
from tests.sim.scenario import Fault, Scenario, scenario_for

TRACE_LINES_KEPT = 400
# Steps at one simulated instant beyond which a run is stuck (a deadline in the past asked
# for again and again): a real process would spin; reported instead of hanging the run.
STEPS_AT_ONE_INSTANT_MAX = 20_000


@dataclass
class RunResult:
    seed: int
    scenario: Scenario
    violation: InvariantError | None
    steps: int
    sim_ms: int
    faults: Counter[str]
    trace: list[str]
    acked: int
    consumed: int

    @property
    def ok(self) -> bool:
        return self.violation is None


class Sim:
    def __init__(self, seed: int, scenario: Scenario | None = None, *, trace: bool = False) -> None:
        self.seed = seed
        self.scenario = scenario or scenario_for(seed)
        root = random.Random(seed)
        self.now = 0
        # (at_ms, sequence, action, label): the sequence keeps equal times in FIFO order
        self._queue: list[tuple[int, int, Callable[[], None], str]] = []
        self._seq = 0
        self.steps = 0
        self.tracing = trace
        self.lines: deque[str] = deque(maxlen=None if trace else TRACE_LINES_KEPT)
        self.faults: Counter[str] = Counter()
        self.history = History()
        self.network = Network(
            rng=random.Random(root.random()),
            schedule=lambda delay, action, label: self.at(self.now + delay, action, label),
            alive=self._incarnation,
            faults=dataclasses.replace(self.scenario.network),  # healing changes the copy
        )
        self.coordinator = SimCoordinator(self)
        self.brokers = {
            b: SimBroker(self, b, random.Random(root.random()))
            for b in range(1, self.scenario.brokers + 1)
        }
        self._by_name = {broker.name: broker for broker in self.brokers.values()}
        self.producers = [
            SimProducer(self, i, random.Random(root.random()))
            for i in range(1, self.scenario.producers + 1)
        ]
        self.consumer = SimConsumer(self)

    # ---- scheduling -------------------------------------------------------------------------

    def at(self, at_ms: int, action: Callable[[], None], label: str) -> None:
        self._seq += 1
        heapq.heappush(self._queue, (max(at_ms, self.now), self._seq, action, label))

    def after(self, delay_ms: int, node: str, action: Callable[[], None], label: str) -> None:
        self.at(self.now + delay_ms, action, f"{node} {label}")

    def every(self, interval_ms: int, node: str, action: Callable[[], None]) -> None:
        def again() -> None:
            action()
            self.at(self.now + interval_ms, again, f"{node} timer")

        self.at(self.now + interval_ms, again, f"{node} timer")

    def _incarnation(self, node: str) -> int | None:
        if node == "c":
            return self.coordinator.incarnation
        broker = self._by_name.get(node)
        return 0 if broker is None else broker.incarnation  # clients never crash

    # ---- the trace --------------------------------------------------------------------------

    def trace(self, node: str, line: str) -> None:
        self.lines.append(f"{self.now:>6} {node:>3} {line}")

    def trace_event(self, node: str, event: Event, effects: list[Effect]) -> None:
        if not self.tracing:
            return
        done = ", ".join(_effect(e) for e in effects if type(e).__name__ != "ScheduleTick")
        self.trace(node, f"{_describe(event)}{' -> ' + done if done else ''}")

    # ---- invariants -------------------------------------------------------------------------

    def check(self, broker: SimBroker) -> None:
        """After every step of ``broker``: it is the only broker ever to lead each of its
        partitions at that epoch; each high watermark it leads with moved only forward,
        and its log below it agrees with what clients were told. (Only the broker that
        stepped changed, so only it is looked at.)"""
        state = broker.state
        if state is None or broker.incarnation is None:
            return
        for tp, replica in state.replicas.items():
            if not replica.is_leader:
                continue
            check_one_leader_per_epoch(self.history, broker.broker_id, tp, replica.leader_epoch)
            log = broker.logs.get(tp)
            if log is None:
                continue
            key = (broker.broker_id, broker.incarnation, tp, replica.leader_epoch)
            check_leader(self.history, key, replica.high_watermark, self._entries(log))

    def _entries(self, log: MemoryLog) -> Callable[[int, int], Entries]:
        def entries(start: int, end: int) -> Entries:
            return [
                (s.base_offset, s.last_offset, self._value(s.data))
                for s in log.records()
                if s.last_offset >= start and s.base_offset < end
            ]

        return entries

    def _value(self, data: bytes) -> bytes:
        value = self.history.values_by_crc.get(parse_header(data).crc)
        if value is None:  # not a batch our producers built: decode it
            (record,) = decode_batches(data, verify_crc=False)
            value = record.value or b""
        return value

    # ---- faults -----------------------------------------------------------------------------

    def _schedule_faults(self) -> None:
        for fault in self.scenario.faults:
            self.at(fault.at_ms, lambda fault=fault: self._inject(fault), f"fault {fault}")

    def _inject(self, fault: Fault) -> None:
        self.faults[fault.kind] += 1
        self.trace("sim", f"fault: {fault}")
        if fault.kind == "crash-leader":
            leader = self.coordinator.leader_of(TopicPartition("t", 0))
            if leader is None:
                return
            fault = dataclasses.replace(fault, kind="crash", target=leader)
        if fault.kind == "crash-coordinator":
            if self.coordinator.incarnation is not None:
                self.coordinator.crash()
                self.at(self.now + fault.duration_ms, self.coordinator.restart, "restart c")
            return
        broker = self.brokers[fault.target]
        if fault.kind == "slow-disk":
            broker.slow_until_ms = self.now + fault.duration_ms
            return
        if fault.kind == "crash":
            if broker.incarnation is None:
                return
            broker.crash()
            self.at(self.now + fault.duration_ms, broker.restart, f"restart {broker.name}")
            return
        names = {b.name for b in self.brokers.values()}
        if fault.kind == "isolate":
            pairs = self.network.partition({broker.name}, names | {"c", "consumer"})
        elif fault.kind == "cut-coordinator":
            pairs = self.network.partition({broker.name}, {"c"})
        else:  # split the brokers in two; the coordinator stays with the larger side
            left = {f"b{b}" for b in self.brokers if b <= fault.target}
            right = names - left
            pairs = self.network.partition(left, right)
            pairs += self.network.partition(left if len(left) < len(right) else right, {"c"})
        self.at(self.now + fault.duration_ms, lambda: self._heal_cut(fault, pairs), "heal")

    def _heal_cut(self, fault: Fault, pairs: list[frozenset[str]]) -> None:
        self.trace("sim", f"healed: {fault}")
        self.network.heal(pairs)

    # ---- running ----------------------------------------------------------------------------

    def run(self) -> RunResult:
        violation: InvariantError | None = None
        try:
            self._start()
            self._run_until(self.scenario.load_ms)
            self._heal_all()
            self._settle()
        except InvariantError as exc:
            violation = exc
            self.trace("sim", f"VIOLATION {exc}")
        net = self.network.stats
        self.faults.update(
            {"dropped": net.dropped, "duplicated": net.duplicated, "blocked": net.blocked}
        )
        return RunResult(
            seed=self.seed,
            scenario=self.scenario,
            violation=violation,
            steps=self.steps,
            sim_ms=self.now,
            faults=self.faults,
            trace=list(self.lines),
            acked=len(self.history.acked),
            consumed=len(self.history.consumed),
        )

    def _start(self) -> None:
        self.coordinator.start()
        for broker in self.brokers.values():
            broker.start()
        for producer in self.producers:
            producer.start()
        self.consumer.start()
        self._schedule_faults()

    def _run_until(self, end_ms: int, done: Callable[[], bool] | None = None) -> None:
        queue = self._queue
        same_instant = 0
        while queue and queue[0][0] <= end_ms:
            at_ms, _, action, label = heapq.heappop(queue)
            same_instant = same_instant + 1 if at_ms == self.now else 0
            if same_instant > STEPS_AT_ONE_INSTANT_MAX:
                raise InvariantError("no progress", f"{same_instant} steps at {at_ms} ms: {label}")
            self.now = at_ms
            self.steps += 1
            action()
            if done is not None and self.steps % 50 == 0 and done():
                return
        self.now = max(self.now, end_ms)

    def _heal_all(self) -> None:
        """Faults stop: the network is whole and reliable, every broker runs."""
        self.trace("sim", "healing: faults stop")
        self.network.heal()
        self.network.faults.drop_rate = 0.0
        self.network.faults.duplicate_rate = 0.0
        if self.coordinator.incarnation is None:
            self.coordinator.restart()
        for broker in self.brokers.values():
            if broker.incarnation is None:
                broker.start()

    def _settle(self) -> None:
        """Let in-flight produces finish and replicas catch up, then check the end state."""
        self._run_until(self.now + self.scenario.settle_ms, self._converged)
        logs = self._final_logs()
        check_final(self.history, logs)

    def _converged(self) -> bool:
        if any(p.inflight for p in self.producers):
            return False
        state = self.coordinator.state
        for (topic, partition), assigned in state.partitions.items():
            if assigned.leader is None or set(assigned.isr) != set(assigned.replicas):
                return False
            tp = TopicPartition(topic, partition)
            ends = {
                self.brokers[b].logs[tp].log_end_offset
                for b in assigned.replicas
                if tp in self.brokers[b].logs
            }
            if len(ends) != 1:
                return False
        return True

    def _final_logs(self) -> dict[TopicPartition, list[Entries]]:
        out: dict[TopicPartition, list[Entries]] = {}
        for (topic, partition), assigned in sorted(self.coordinator.state.partitions.items()):
            tp = TopicPartition(topic, partition)
            replicas: list[Entries] = []
            for b in assigned.replicas:
                log = self.brokers[b].logs.get(tp) or self.brokers[b].disk.get(tp)
                if log is None:
                    replicas.append([])
                    continue
                replicas.append(
                    [(s.base_offset, s.last_offset, self._value(s.data)) for s in log.records()]
                )
            out[tp] = replicas
        return out


def _describe(event: Event) -> str:
    name = type(event).__name__
    request = getattr(event, "request", None)
    if name in ("ReplicaFetchArrived", "ReplicaFetchAnswered") and request is not None:
        parts = ", ".join(
            f"{p.topic}-{p.partition}@{p.fetch_offset}/d{p.durable_offset}e{p.leader_epoch}"
            for p in request.partitions
        )
        who = f"b{request.broker_id}" if name == "ReplicaFetchArrived" else f"b{event.leader}"  # type: ignore[attr-defined]
        return f"{name} {who} [{parts}]"
    tp = getattr(event, "tp", None)
    leader = getattr(event, "leader", None)
    where = f" {tp}" if tp is not None else f" from b{leader}" if leader is not None else ""
    return f"{name}{where}"


def _effect(effect: Effect) -> str:
    name = type(effect).__name__
    if isinstance(effect, AnswerProduce):
        outcome = "" if effect.error is None else f" {effect.error.code.name}"
        return f"AnswerProduce#{effect.ack_id}{outcome}"
    if isinstance(effect, RequestDurable):
        return f"RequestDurable({effect.offset})"
    return name


def run_seed(seed: int, scenario: Scenario | None = None, *, trace: bool = False) -> RunResult:
    return Sim(seed, scenario, trace=trace).run()
