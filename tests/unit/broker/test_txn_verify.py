"""KIP-890 part 1 on a leader (broker/txn_verify.py): a yes is remembered per partition,
producer epoch and leader epoch until a marker ends the transaction; a marker that
overtakes the coordinator's answer voids it; refusals are typed errors."""

from __future__ import annotations

import asyncio

import pytest

from conveyor.broker.txn_verify import TxnVerifier, transactional_data
from conveyor.protocol.errors import ConveyorError, ErrorCode, RetriableError
from conveyor.protocol.records import BatchBuilder, encode_batch
from conveyor.protocol.replica import ProducerWrite, TopicPartition
from conveyor.protocol.txn import (
    TxnAddPartitionsResponse,
    TxnPartitionResult,
    TxnVerifyRequest,
    marker_batch,
)

TP = TopicPartition("orders", 0)
WRITE = ProducerWrite(producer_id=7, producer_epoch=2, first_sequence=0, last_sequence=1)


class Coordinator:
    """Answers each verification with the next error of ``errors`` (None: yes); runs
    ``meanwhile`` while the answer 'travels'."""

    def __init__(self, *errors: str | None) -> None:
        self.errors = list(errors)
        self.asked: list[TxnVerifyRequest] = []
        self.meanwhile = lambda: None

    async def __call__(self, request: TxnVerifyRequest) -> TxnAddPartitionsResponse:
        self.asked.append(request)
        self.meanwhile()
        error = self.errors.pop(0)
        return TxnAddPartitionsResponse(
            [TxnPartitionResult(p.topic, p.partition, error) for p in request.partitions]
        )


def test_a_yes_is_kept_until_a_marker_or_a_new_leader_epoch() -> None:
    coordinator = Coordinator(None)
    verifier = TxnVerifier(coordinator)
    asyncio.run(verifier.verify(TP, WRITE, leader_epoch=4))
    assert coordinator.asked[0].producer_id == 7 and coordinator.asked[0].producer_epoch == 2
    verifier.admit(TP, WRITE, 4, open_here=False)  # no error
    with pytest.raises(ConveyorError) as refused:
        verifier.admit(TP, WRITE, 5, open_here=False)  # a new leadership forgets it
    assert refused.value.code is ErrorCode.INVALID_TXN_STATE
    bumped = ProducerWrite(producer_id=7, producer_epoch=3, first_sequence=0, last_sequence=0)
    assert not verifier.verified(TP, bumped, 4)
    verifier.ended(TP, 7)  # the COMMIT or ABORT marker
    with pytest.raises(ConveyorError):
        verifier.admit(TP, WRITE, 4, open_here=False)
    verifier.admit(TP, WRITE, 4, open_here=True)  # open at the partition: no question asked


def test_a_marker_overtaking_the_answer_voids_it() -> None:
    """The transaction ended while the yes travelled: asked again, and refused."""
    coordinator = Coordinator(None, "INVALID_TXN_STATE")
    verifier = TxnVerifier(coordinator)
    coordinator.meanwhile = lambda: verifier.ended(TP, 7)
    with pytest.raises(ConveyorError) as refused:
        asyncio.run(verifier.verify(TP, WRITE, 4))
    assert refused.value.code is ErrorCode.INVALID_TXN_STATE
    assert len(coordinator.asked) == 2
    assert not verifier.verified(TP, WRITE, 4)


def test_refusals_and_an_unreachable_coordinator_are_typed() -> None:
    verifier = TxnVerifier(Coordinator("PRODUCER_FENCED"))
    with pytest.raises(ConveyorError) as fenced:
        asyncio.run(verifier.verify(TP, WRITE, 4))
    assert fenced.value.code is ErrorCode.PRODUCER_FENCED

    async def unreachable(request: TxnVerifyRequest) -> TxnAddPartitionsResponse:
        raise RetriableError("connection refused", code=ErrorCode.NOT_COORDINATOR)

    with pytest.raises(RetriableError) as retriable:
        asyncio.run(TxnVerifier(unreachable).verify(TP, WRITE, 4))
    assert retriable.value.code is ErrorCode.NOT_ENOUGH_REPLICAS  # Kafka's, for a produce


def test_answers_kept_are_bounded() -> None:
    verifier = TxnVerifier(Coordinator(), entries_max=2)
    for partition in range(3):
        verifier.learn(TopicPartition("orders", partition), 7, 2, 4)
    assert not verifier.verified(TopicPartition("orders", 0), WRITE, 4)  # the oldest went
    assert verifier.verified(TopicPartition("orders", 2), WRITE, 4)


def test_transactional_data_is_a_transactional_batch_not_a_marker() -> None:
    builder = BatchBuilder()
    builder.set_producer(7, 2, 0, transactional=True)
    builder.append(b"v", timestamp_ms=1)
    assert transactional_data(builder.build())
    assert not transactional_data(marker_batch(7, 2, True, 0, 1))
    assert not transactional_data(encode_batch([(b"k", b"v")], producer_id=7, producer_epoch=2))
    assert not transactional_data(b"")
