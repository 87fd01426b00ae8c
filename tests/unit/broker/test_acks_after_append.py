"""An acks=all write the high watermark covers only because the ISR shrank below
min_insync_replicas while it waited is answered NOT_ENOUGH_REPLICAS_AFTER_APPEND, not
acknowledged (Kafka's DelayedProduce rule): acks=all promises min_insync_replicas copies."""

from __future__ import annotations

from msgspec.structs import replace

from conveyor.broker.replica import (
    AckWaiter,
    Replica,
    add_waiter,
    appended,
    apply_state,
    flushed,
    new_replica,
    record_fetch,
)
from conveyor.protocol.errors import ErrorCode
from conveyor.protocol.kafka.errors import KafkaError, kafka_error
from conveyor.protocol.messages import BrokerId, Offset
from conveyor.protocol.replica import AnswerProduce, Effect, LogFacts, ReplicaState, TopicPartition

TP = TopicPartition("t", 0)
B1, B2, B3 = BrokerId(1), BrokerId(2), BrokerId(3)
NOW_MS = 1_000_000


def waiting_leader() -> Replica:
    """Leader B1 of RF 3, min ISR 2: offsets 0-99 everywhere, 100-109 written and durable on
    the leader alone, an acks=all write waiting for offset 109."""
    state = ReplicaState(
        role="leader",
        leader_epoch=4,
        leader=B1,
        replicas=(B1, B2, B3),
        isr=(B1, B2, B3),
        min_insync_replicas=2,
    )
    replica, _ = new_replica(TP, B1, state, LogFacts(), {}, NOW_MS)
    replica, _ = appended(replica, replace(replica.log, log_end_offset=Offset(100)))
    replica, _ = flushed(replica, 100)
    for member in (B2, B3):
        replica, _ = record_fetch(replica, member, 100, 100, NOW_MS, 0)
    replica, _ = appended(replica, replace(replica.log, log_end_offset=Offset(110)))
    replica, _ = flushed(replica, 110)
    waiter = AckWaiter(ack_id=7, next_offset=110, leader_epoch=4, deadline_ms=NOW_MS + 30_000)
    replica, effects = add_waiter(replica, waiter)
    assert not _answers(effects) and replica.high_watermark == 100
    return replica


def _answers(effects: list[Effect]) -> list[AnswerProduce]:
    return [e for e in effects if isinstance(e, AnswerProduce)]


def test_a_write_covered_because_the_isr_shrank_below_min_is_not_acknowledged() -> None:
    replica = waiting_leader()
    shrunk = replace(replica.state, isr=(B1,), partition_epoch=replica.state.partition_epoch + 1)
    replica, effects = apply_state(replica, shrunk, NOW_MS + 10)
    [answer] = _answers(effects)
    assert replica.high_watermark == 110  # in the log, visible as Kafka's would be
    assert answer.ack_id == 7 and answer.error is not None
    assert answer.error.code is ErrorCode.NOT_ENOUGH_REPLICAS_AFTER_APPEND
    assert answer.error.retriable
    assert kafka_error(answer.error.code) is KafkaError.NOT_ENOUGH_REPLICAS_AFTER_APPEND


def test_a_write_covered_by_min_isr_after_a_shrink_is_acknowledged() -> None:
    replica = waiting_leader()
    replica, _ = record_fetch(replica, B2, 110, 110, NOW_MS + 5, 0)  # B2 holds it durably
    shrunk = replace(replica.state, isr=(B1, B2), partition_epoch=replica.state.partition_epoch)
    replica, effects = apply_state(replica, shrunk, NOW_MS + 10)
    [answer] = _answers(effects)
    assert answer.error is None and replica.high_watermark == 110
