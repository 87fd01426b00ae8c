"""Several batches in flight per partition: the accumulator's bookkeeping and the
sender's rules (``client/inflight.py``) against the broker's own dedup rules
(``broker/rules.py``), through any order of answers, refusals, lost connections and
leader changes that lose what was not replicated. Whatever happens, the log holds every
batch once, in the order the producer sent them, and every batch is told it is stored.

The model: one partition, one leader at a time. A request written on a connection is
processed in order (dedup decision, then append); its answer is delivered in request
order, a success once the high watermark covers it (acks=all). A lost connection fails
every request written on it that is not answered, processed or not; a leader change also
cuts the log back to the high watermark and rebuilds the producer state from it (nothing
left: a leader that never heard of the producer).
"""

from __future__ import annotations

import threading
from collections import deque
from dataclasses import dataclass, field

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from conveyor.broker.rules import dedup_decision, record_producer_batch
from conveyor.client.accumulator import Accumulator, ProducerBatch
from conveyor.client.inflight import after_error, may_write
from conveyor.client.producer import ProducerConfig, check_max_in_flight
from conveyor.protocol.errors import ErrorCode
from conveyor.protocol.messages import Offset
from conveyor.protocol.records import Codec
from conveyor.protocol.replica import ProducerBatch as StoredBatch
from conveyor.protocol.replica import ProducerEntry

Batch = ProducerBatch[int]
EPOCH = 0


@dataclass
class Request:
    batch: Batch
    first: int
    last: int


@dataclass
class Leader:
    log: list[tuple[int, int]] = field(default_factory=list)  # (first, last) sequences
    high_watermark: int = 0  # entries of log replicated
    entry: ProducerEntry | None = None
    written: deque[Request] = field(default_factory=deque)  # not yet processed
    # processed: (request, error or None, log index of the batch)
    answers: deque[tuple[Request, ErrorCode | None, int]] = field(default_factory=deque)

    def process(self, refuse: bool) -> None:
        request = self.written.popleft()
        if refuse:  # e.g. NOT_ENOUGH_REPLICAS: refused before the dedup check, not written
            self.answers.append((request, ErrorCode.NOT_ENOUGH_REPLICAS, -1))
            return
        decision = dedup_decision(
            self.entry,
            producer_epoch=EPOCH,
            first_sequence=request.first,
            last_sequence=request.last,
        )
        if decision.action == "reject":
            self.answers.append((request, decision.error, -1))
        elif decision.action == "duplicate":
            assert decision.batch is not None
            self.answers.append((request, None, decision.batch.base_offset))
        else:
            self.log.append((request.first, request.last))
            self._remember(len(self.log) - 1)
            self.answers.append((request, None, len(self.log) - 1))

    def _remember(self, index: int) -> None:
        first, last = self.log[index]
        stored = StoredBatch(first, last, Offset(index), Offset(index))
        self.entry = record_producer_batch(self.entry, producer_epoch=EPOCH, batch=stored)

    def answer_ready(self) -> bool:
        if not self.answers:
            return False
        _request, error, index = self.answers[0]
        return error is not None or index < self.high_watermark

    def fail_over(self) -> Leader:
        """The next leader: the replicated log, the producer state rebuilt from it."""
        new = Leader(log=self.log[: self.high_watermark], high_watermark=self.high_watermark)
        for index in range(len(new.log)):
            new._remember(index)
        return new


class Producer:
    def __init__(self, max_in_flight: int) -> None:
        # One record a batch: a batch is full (sealed, so it may pipeline) once the next
        # record comes; the last one stays open, waiting while any is in flight.
        self.acc: Accumulator[int, None] = Accumulator(
            batch_size_bytes=1,
            linger_ms=0,
            buffer_memory_bytes=1_000_000,
            delivery_timeout_ms=10**9,
            codec=Codec.NONE,
            lock=threading.Lock(),
            new_completion=self._completion,
            new_future=lambda _completion, _index: None,
            wake_sender=lambda: None,
            on_space=lambda: None,
            max_in_flight=max_in_flight,
        )
        self.batches = 0
        self.next_sequence = 0
        self.stamps: dict[int, tuple[int, int]] = {}  # completion -> sequences
        self.sent_order: list[tuple[int, int]] = []
        self.stored: list[int] = []
        self.failed: list[int] = []
        self.connection = 0
        self.known = False  # a batch was acknowledged: the leaders hold the producer

    def _completion(self, _topic: str, _partition: int) -> int:
        self.batches += 1
        return self.batches

    def append(self, records: int) -> None:
        for _ in range(records):
            self.acc.append("t", None, b"v", (), 0, 1, 0)

    def write(self, leader: Leader) -> None:
        """The sender: drain, then per batch the checks ``Sender._write`` makes."""
        for batch in self.acc.drain(0).ready:
            if self.acc.ahead_in_flight(batch) is None:
                self.acc.hold(batch)
                continue
            if batch.completion not in self.stamps:
                count = batch.records_count
                stamp = (self.next_sequence, self.next_sequence + count - 1)
                self.stamps[batch.completion] = stamp
                self.sent_order.append(stamp)
                self.next_sequence += count
            ahead = self.acc.ahead_in_flight(batch)
            if not may_write(ahead, self.connection, producer_known=self.known):
                self.acc.hold(batch)
                continue
            batch.sent_on = self.connection
            first, last = self.stamps[batch.completion]
            leader.written.append(Request(batch, first, last))

    def answered(self, batch: Batch, error: ErrorCode | None) -> None:
        if error is None:
            self._done(batch)
            return
        retriable = error in {ErrorCode.NOT_ENOUGH_REPLICAS, ErrorCode.NETWORK_ERROR}
        outcome = after_error(
            error, retriable=retriable, first_unanswered=self.acc.first_unanswered(batch)
        )
        if outcome == "retry":
            self.acc.retry(batch, retry_at_ms=0)
        elif outcome == "stored":
            self._done(batch)
        else:
            self.acc.complete(batch)
            self.failed.append(batch.completion)

    def _done(self, batch: Batch) -> None:
        self.known = True
        self.acc.complete(batch)
        self.stored.append(batch.completion)

    def lose_connection(self, leader: Leader) -> None:
        """Every request written on the connection and not answered fails, in order."""
        lost = [request for request, _error, _index in leader.answers]
        lost += list(leader.written)
        leader.answers.clear()
        leader.written.clear()
        self.connection += 1
        for request in lost:
            self.answered(request.batch, ErrorCode.NETWORK_ERROR)


APPEND, WRITE, PROCESS, REFUSE, REPLICATE, ANSWER, DISCONNECT, FAIL_OVER = range(8)


# the common events more often, so that several batches are in flight when things fail
WEIGHTED = [APPEND] * 3 + [PROCESS] * 3 + [ANSWER] * 3 + [REPLICATE] * 2
WEIGHTED += [WRITE, REFUSE, DISCONNECT, FAIL_OVER]


def step(event: int, producer: Producer, leader: Leader) -> Leader:
    if event == APPEND:  # and send: the sender wakes when a batch opens
        producer.append(3)
        producer.write(leader)
    elif event == WRITE:
        producer.write(leader)
    elif event in (PROCESS, REFUSE) and leader.written:
        leader.process(refuse=event == REFUSE)
    elif event == REPLICATE:
        leader.high_watermark = len(leader.log)
    elif event == ANSWER and leader.answer_ready():
        request, error, _index = leader.answers.popleft()
        producer.answered(request.batch, error)
    elif event == DISCONNECT:
        producer.lose_connection(leader)
    elif event == FAIL_OVER:
        producer.lose_connection(leader)
        leader = leader.fail_over()
    return leader


def settle(producer: Producer, leader: Leader) -> Leader:
    """No more failures: run until every batch is answered."""
    for _ in range(10_000):
        if producer.acc.incomplete_count == 0:
            return leader
        producer.write(leader)
        while leader.written:
            leader.process(refuse=False)
        leader.high_watermark = len(leader.log)
        while leader.answer_ready():
            request, error, _index = leader.answers.popleft()
            producer.answered(request.batch, error)
    raise AssertionError("the producer never finished")


@settings(max_examples=500, deadline=None)
@given(
    max_in_flight=st.integers(1, 5),
    events=st.lists(st.sampled_from(WEIGHTED), min_size=10, max_size=150),
)
def test_any_interleaving_stores_every_batch_once_in_order(
    max_in_flight: int, events: list[int]
) -> None:
    producer = Producer(max_in_flight)
    leader = Leader()
    for event in events:
        leader = step(event, producer, leader)
    producer.append(1)  # at least one batch
    leader = settle(producer, leader)
    assert producer.failed == []
    assert leader.log == producer.sent_order  # each once, in the order sent
    assert sorted(producer.stored) == list(range(1, producer.batches + 1))


def first_acknowledged(producer: Producer, leader: Leader) -> None:
    """One batch sent and acknowledged: the leader knows the producer from now on."""
    producer.append(1)
    producer.write(leader)
    assert len(leader.written) == 1
    leader.process(refuse=False)
    leader.high_watermark = len(leader.log)
    request, error, _ = leader.answers.popleft()
    producer.answered(request.batch, error)


def test_one_batch_at_a_time_until_the_first_is_acknowledged() -> None:
    producer = Producer(max_in_flight=5)
    leader = Leader()
    for _ in range(3):
        producer.append(1)
        producer.write(leader)
    assert [r.first for r in leader.written] == [0]  # the others are held
    leader = settle(producer, leader)
    assert leader.log == [(0, 0), (1, 1), (2, 2)]


def test_batches_pipeline_up_to_the_limit_then_wait() -> None:
    producer = Producer(max_in_flight=3)
    leader = Leader()
    first_acknowledged(producer, leader)
    for _ in range(5):
        producer.append(1)
        producer.write(leader)
    assert [r.first for r in leader.written] == [1, 2, 3]  # the 4th and 5th wait
    leader.process(refuse=False)
    leader.high_watermark = len(leader.log)
    request, error, _ = leader.answers.popleft()
    producer.answered(request.batch, error)
    producer.write(leader)
    assert [r.first for r in leader.written] == [2, 3, 4]


def test_a_refused_batch_goes_again_alone_before_the_ones_behind_it() -> None:
    producer = Producer(max_in_flight=5)
    leader = Leader()
    first_acknowledged(producer, leader)  # batch 0
    for _ in range(4):  # batches 1-3 go, full; batch 4 stays open behind them
        producer.append(1)
        producer.write(leader)
    assert [r.first for r in leader.written] == [1, 2, 3]
    leader.process(refuse=True)  # batch 1: NOT_ENOUGH_REPLICAS, not written
    leader.process(refuse=False)  # batch 2: OUT_OF_ORDER_SEQUENCE (1 is missing)
    leader.process(refuse=False)  # batch 3: likewise
    assert [error for _, error, _ in leader.answers] == [
        ErrorCode.NOT_ENOUGH_REPLICAS,
        ErrorCode.OUT_OF_ORDER_SEQUENCE,
        ErrorCode.OUT_OF_ORDER_SEQUENCE,
    ]
    request, error, _ = leader.answers.popleft()
    producer.answered(request.batch, error)
    producer.write(leader)
    assert not leader.written  # batches 2 and 3 are still in flight: 1 waits for them
    while leader.answers:
        request, error, _ = leader.answers.popleft()
        producer.answered(request.batch, error)
    producer.write(leader)
    assert [r.first for r in leader.written] == [1]  # alone
    leader = settle(producer, leader)
    assert leader.log == [(0, 0), (1, 1), (2, 2), (3, 3), (4, 4)]


def test_no_batch_reaches_a_new_leader_before_the_batch_ahead_of_it() -> None:
    """The case the broker cannot catch: a new leader that never heard of the producer
    appends whatever sequence comes first."""
    producer = Producer(max_in_flight=5)
    leader = Leader()
    first_acknowledged(producer, leader)  # batch 0
    producer.append(1)
    producer.write(leader)  # batch 1 on connection 0
    producer.connection = 1  # the route moved (another partition's answer, say)
    producer.append(1)
    producer.write(leader)
    assert [r.first for r in leader.written] == [1]  # batch 2 is held, not sent on 1
    producer.lose_connection(leader)
    leader = leader.fail_over()
    leader = settle(producer, leader)
    assert leader.log == [(0, 0), (1, 1), (2, 2)]


def _in_flight(**settings: object) -> int:
    return check_max_in_flight(ProducerConfig(url="http://x", **settings))  # type: ignore[arg-type]


def test_the_default_pipelines_only_with_idempotence() -> None:
    """5 full batches in flight with idempotence (the broker dedups a retry and refuses a
    batch whose predecessor is missing), 1 without (a retry could land after the batch
    behind it), 1 in a transaction; an explicit setting is kept, refused above 5 with
    idempotence."""
    assert _in_flight(acks="all") == 5
    assert _in_flight(acks="1") == 1
    assert _in_flight(acks="all", idempotence=False) == 1
    assert _in_flight(acks="all", transactional_id="t") == 1
    assert _in_flight(acks="1", max_in_flight_requests_per_connection=3) == 3
    with pytest.raises(ValueError, match="dedup window"):
        _in_flight(acks="all", max_in_flight_requests_per_connection=6)
