"""Simulated clients: idempotent producers with acks=all and a consumer, as the real
client library behaves (one request in flight per partition, retries of the same bytes,
metadata refreshed from the coordinator), recording what they saw in the history."""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from conveyor.protocol.batch import parse_header
from conveyor.protocol.errors import ConveyorError
from conveyor.protocol.messages import ErrorBody
from conveyor.protocol.records import decode_batches, encode_batch
from conveyor.protocol.replica import TopicPartition

if TYPE_CHECKING:
    from tests.sim.world import Sim

REQUEST_TIMEOUT_MS = 2500
RETRY_MS = 40
QUEUED_MAX = 3  # values waiting per partition (a bounded producer buffer)
RETRIES_MAX = 60  # then the write is given up (its outcome unknown) and the epoch bumped
_FATAL = {"OUT_OF_ORDER_SEQUENCE", "PRODUCER_FENCED", "DUPLICATE_SEQUENCE"}


@dataclass
class InFlight:
    batch: bytes
    value: bytes
    attempts: int = 0
    request: int = 0  # which attempt is outstanding (answers to older ones are ignored)


@dataclass
class SimProducer:
    sim: Sim
    index: int
    rng: random.Random
    producer_id: int = -1
    producer_epoch: int = 0
    sequences: dict[TopicPartition, int] = field(default_factory=dict)
    queued: dict[TopicPartition, list[bytes]] = field(default_factory=dict)
    inflight: dict[TopicPartition, InFlight] = field(default_factory=dict)
    counter: int = 0
    requests: int = 0  # request ids, unique per producer (a duplicated reply is recognised)

    @property
    def name(self) -> str:
        return f"p{self.index}"

    def start(self) -> None:
        self.producer_id, self.producer_epoch = self.sim.coordinator.init_producer()
        self.sim.every(self.sim.scenario.produce_interval_ms, self.name, self._produce_one)

    def _produce_one(self) -> None:
        if self.sim.now >= self.sim.scenario.load_ms or not self.sim.coordinator.topic_created:
            return
        partition = self.rng.randrange(self.sim.scenario.partitions)
        tp = TopicPartition("t", partition)
        if len(self.queued.get(tp, ())) >= QUEUED_MAX:
            return  # the producer's buffer is full: the application waits
        self.counter += 1
        value = f"{self.name}-{self.counter}".encode()
        self.queued.setdefault(tp, []).append(value)
        self._send_next(tp)

    def _send_next(self, tp: TopicPartition) -> None:
        if tp in self.inflight or not self.queued.get(tp):
            return
        value = self.queued[tp].pop(0)
        sequence = self.sequences.get(tp, 0)
        batch = encode_batch(
            [(None, value)],
            timestamp_ms=1_700_000_000_000,
            producer_id=self.producer_id,
            producer_epoch=self.producer_epoch,
            base_sequence=sequence,
        )
        self.sim.history.values_by_crc[parse_header(batch).crc] = value
        self.sim.history.sent += 1
        self.inflight[tp] = InFlight(batch, value)
        self._attempt(tp)

    def _attempt(self, tp: TopicPartition) -> None:
        flight = self.inflight.get(tp)
        if flight is None:
            return
        flight.attempts += 1
        self.requests += 1
        flight.request = attempt = self.requests
        leader = self.sim.coordinator.leader_of(tp)
        broker = self.sim.brokers.get(leader) if leader is not None else None
        if broker is None:
            self.sim.after(RETRY_MS, self.name, lambda: self._retry(tp, attempt), "no leader")
            return

        def at_broker() -> None:
            def reply(error: ErrorBody | None, base: int, last: int) -> None:
                self.sim.network.send(
                    broker.name,
                    self.name,
                    lambda: self._answered(tp, attempt, error, base),
                    "produce-reply",
                )

            broker.produce(tp, flight.batch, reply)

        self.sim.network.send(self.name, broker.name, at_broker, f"produce {flight.value!r}")
        self.sim.after(REQUEST_TIMEOUT_MS, self.name, lambda: self._retry(tp, attempt), "timeout")

    def _retry(self, tp: TopicPartition, attempt: int) -> None:
        flight = self.inflight.get(tp)
        if flight is None or flight.request != attempt:
            return  # answered meanwhile, or another attempt is out
        if flight.attempts >= RETRIES_MAX:
            self._give_up(tp)
            return
        self._attempt(tp)

    def _answered(
        self, tp: TopicPartition, attempt: int, error: ErrorBody | None, base: int
    ) -> None:
        flight = self.inflight.get(tp)
        if flight is None or flight.request != attempt:
            return
        if error is None:
            self.sim.history.ack(tp, base, flight.value)
            self.sim.trace(self.name, f"acked {flight.value!r} at {tp} {base}")
            del self.inflight[tp]
            self.sequences[tp] = self.sequences.get(tp, 0) + 1
            self._send_next(tp)
            return
        if error.code in _FATAL:
            self._give_up(tp)
            return
        self.sim.after(RETRY_MS, self.name, lambda: self._retry(tp, attempt), f"retry {error.code}")

    def _give_up(self, tp: TopicPartition) -> None:
        """The outcome is unknown: bump the epoch so sequences restart without a gap."""
        self.sim.history.failed += 1
        self.inflight.pop(tp, None)
        try:
            self.producer_id, self.producer_epoch = self.sim.coordinator.init_producer(
                self.producer_id, self.producer_epoch
            )
        except ConveyorError as exc:  # fatal to this producer: the application makes a new one
            self.sim.trace(self.name, f"epoch bump refused ({exc.code.name}): new producer")
            self.producer_id, self.producer_epoch = self.sim.coordinator.init_producer()
        self.sequences = {}
        self.sim.trace(self.name, f"gave up on {tp}; epoch {self.producer_epoch}")
        for partition in sorted(self.queued):
            self._send_next(partition)


@dataclass
class SimConsumer:
    sim: Sim
    positions: dict[TopicPartition, int] = field(default_factory=dict)

    name = "consumer"

    def start(self) -> None:
        self.sim.every(100, self.name, self._poll)

    def _poll(self) -> None:
        for partition in range(self.sim.scenario.partitions):
            tp = TopicPartition("t", partition)
            leader = self.sim.coordinator.leader_of(tp)
            broker = self.sim.brokers.get(leader) if leader is not None else None
            if broker is None:
                continue
            offset = self.positions.get(tp, 0)

            def at_broker(tp: TopicPartition = tp, offset: int = offset, broker=broker) -> None:
                answer = broker.consume(tp, offset)
                if answer is None or isinstance(answer, ErrorBody):
                    return
                data, hw = answer
                self.sim.network.send(
                    broker.name, self.name, lambda: self._got(tp, offset, data, hw), "fetch-reply"
                )

            self.sim.network.send(self.name, broker.name, at_broker, "fetch")

    def _got(self, tp: TopicPartition, offset: int, data: bytes, hw: int) -> None:
        if self.positions.get(tp, 0) != offset:
            return
        for record in decode_batches(data, start_offset=offset):
            if record.offset >= hw:
                from tests.sim.history import InvariantError

                raise InvariantError(
                    "read above the high watermark", f"{tp} offset {record.offset} >= {hw}"
                )
            assert record.value is not None
            self.sim.history.consume(tp, record.offset, record.value)
            self.positions[tp] = record.offset + 1
