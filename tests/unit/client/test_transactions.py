"""The client's transaction state machine (``client/transactions.py``) against a scripted
transport: which answers are retried, which make the transaction abort-only (KIP-447's
group fencing), which are fatal (PRODUCER_FENCED), and what each step sends. The real
transports are tested against real processes (tests/integration/test_txn_fencing.py,
tests/kafka/test_transactions.py)."""

from __future__ import annotations

import asyncio
from collections import deque
from typing import Any

import pytest

from conveyor.client.errors import ProducerFencedError
from conveyor.client.kafka_txn import _for_version, error_name
from conveyor.client.transactions import TransactionSession, group_fields
from conveyor.client.types import ConsumerGroupMetadata
from conveyor.protocol.errors import ConveyorError, ErrorCode, RetriableError
from conveyor.protocol.kafka.apis import ApiKey
from conveyor.protocol.kafka.errors import KafkaError
from conveyor.protocol.txn import (
    TxnAddOffsetsRequest,
    TxnAddPartitionsRequest,
    TxnAddPartitionsResponse,
    TxnEndRequest,
    TxnInitRequest,
    TxnInitResponse,
    TxnOffsetCommitRequest,
    TxnOffsetCommitResponse,
    TxnPartitionResult,
    TxnResult,
)


class Scripted:
    """A transport answering each step from a script of error names (None: success),
    or raising the exception given; it records what was sent."""

    def __init__(self, **script: list[str | Exception | None]) -> None:
        self.script = {step: deque(answers) for step, answers in script.items()}
        self.sent: list[tuple[str, Any]] = []

    def _next(self, step: str, request: Any) -> str | None:
        self.sent.append((step, request))
        answers = self.script.get(step)
        answer = answers.popleft() if answers else None
        if isinstance(answer, Exception):
            raise answer
        return answer

    async def init(self, request: TxnInitRequest) -> TxnInitResponse:
        return TxnInitResponse(self._next("init", request), producer_id=7, producer_epoch=3)

    async def add_partitions(self, request: TxnAddPartitionsRequest) -> TxnAddPartitionsResponse:
        error = self._next("add_partitions", request)
        return TxnAddPartitionsResponse(
            [TxnPartitionResult(p.topic, p.partition, error) for p in request.partitions]
        )

    async def add_offsets(self, request: TxnAddOffsetsRequest) -> TxnResult:
        return TxnResult(self._next("add_offsets", request))

    async def offset_commit(self, request: TxnOffsetCommitRequest) -> TxnOffsetCommitResponse:
        error = self._next("offset_commit", request)
        return TxnOffsetCommitResponse(
            [TxnPartitionResult(o.topic, o.partition, error) for o in request.offsets]
        )

    async def end(self, request: TxnEndRequest) -> TxnResult:
        return TxnResult(self._next("end", request))


def session(transport: Scripted, request_timeout_ms: int = 5_000) -> TransactionSession:
    return TransactionSession(
        transport, "tid", transaction_timeout_ms=60_000, request_timeout_ms=request_timeout_ms
    )


def run(coro: Any) -> Any:
    return asyncio.run(coro)


def test_busy_or_moving_coordinators_are_retried() -> None:
    busy = ErrorCode.CONCURRENT_TRANSACTIONS.name
    moved = ErrorCode.NOT_COORDINATOR.name
    lost = RetriableError("connection closed", code=ErrorCode.NETWORK_ERROR)
    transport = Scripted(init=[busy, moved, lost, None], end=[busy, None])
    txn = session(transport)
    assert run(txn.init()) == (7, 3)
    txn.begin()
    run(txn.add_partition("t", 0))
    run(txn.end(commit=True))
    assert [step for step, _ in transport.sent] == [
        "init", "init", "init", "init", "add_partitions", "end", "end"
    ]  # fmt: skip
    assert not txn.in_transaction


def test_retries_stop_at_the_request_timeout() -> None:
    busy = ErrorCode.CONCURRENT_TRANSACTIONS.name
    txn = session(Scripted(init=[busy] * 1000), request_timeout_ms=50)
    with pytest.raises(ConveyorError) as refused:
        run(txn.init())
    assert refused.value.code is ErrorCode.CONCURRENT_TRANSACTIONS


@pytest.mark.parametrize(
    "refusal",
    [
        ErrorCode.ILLEGAL_GENERATION,
        ErrorCode.UNKNOWN_MEMBER,
        ErrorCode.FENCED_INSTANCE_ID,
        ErrorCode.FENCED_MEMBER,
    ],
)
def test_a_zombie_consumers_offsets_make_the_transaction_abort_only(refusal: ErrorCode) -> None:
    transport = Scripted(offset_commit=[refusal.name])
    txn = session(transport)
    run(txn.init())
    txn.begin()
    metadata = ConsumerGroupMetadata("g", 4, "member-1", "instance-1")
    with pytest.raises(ConveyorError) as refused:
        run(txn.send_offsets({("in", 0): 10}, metadata))
    assert refused.value.code is refusal
    sent = transport.sent[-1][1]
    assert (sent.group, sent.member_id, sent.generation, sent.instance_id) == (
        "g", "member-1", 4, "instance-1"
    )  # fmt: skip
    with pytest.raises(ConveyorError) as commit:
        run(txn.end(commit=True))
    assert commit.value.code is ErrorCode.INVALID_TXN_STATE
    run(txn.end(commit=False))
    assert transport.sent[-1][1].commit is False
    assert txn.producer_id == 7  # offsets refused left no sequence gap: same epoch


def test_producer_fenced_is_fatal() -> None:
    transport = Scripted(add_partitions=[ErrorCode.PRODUCER_FENCED.name])
    txn = session(transport)
    run(txn.init())
    txn.begin()
    with pytest.raises(ProducerFencedError):
        run(txn.add_partition("t", 1))
    sent = len(transport.sent)
    for step in (txn.begin, lambda: run(txn.end(commit=False)), lambda: run(txn.init())):
        with pytest.raises(ProducerFencedError):
            step()
    assert len(transport.sent) == sent  # nothing more was sent


def test_a_bare_group_id_is_unfenced_and_bad_groups_are_refused() -> None:
    assert group_fields("g") == ("g", "", -1, None)
    assert group_fields(ConsumerGroupMetadata("g", 2, "m")) == ("g", "m", 2, None)
    for bad in (ConsumerGroupMetadata(""), 42, ("g", 1, "m", None)):
        with pytest.raises(ValueError, match="group"):
            group_fields(bad)  # type: ignore[arg-type]


def test_kafka_answers_mean_what_http_answers_mean() -> None:
    """The Kafka transport's codes as the coordinator's names (retried, fatal, fencing)."""
    assert error_name(KafkaError.NONE) is None
    for code in (
        KafkaError.COORDINATOR_LOAD_IN_PROGRESS,
        KafkaError.COORDINATOR_NOT_AVAILABLE,
        KafkaError.NOT_COORDINATOR,
    ):
        assert error_name(code) == "NOT_COORDINATOR"
    assert error_name(KafkaError.CONCURRENT_TRANSACTIONS) == "CONCURRENT_TRANSACTIONS"
    assert error_name(KafkaError.INVALID_PRODUCER_EPOCH) == "PRODUCER_FENCED"
    assert error_name(KafkaError.PRODUCER_FENCED) == "PRODUCER_FENCED"
    assert error_name(KafkaError.TRANSACTIONAL_ID_AUTHORIZATION_FAILED) == "FORBIDDEN"
    assert error_name(KafkaError.UNKNOWN_MEMBER_ID) == "UNKNOWN_MEMBER"
    assert error_name(KafkaError.ILLEGAL_GENERATION) == "ILLEGAL_GENERATION"
    assert error_name(KafkaError.FENCED_INSTANCE_ID) == "FENCED_INSTANCE_ID"
    member = {"generation_id": 3, "member_id": "m", "group_instance_id": None, "group_id": "g"}
    assert _for_version(ApiKey.TXN_OFFSET_COMMIT, 3, member) == member
    assert _for_version(ApiKey.TXN_OFFSET_COMMIT, 2, member) == {"group_id": "g"}
    init = {"transactional_id": "t", "producer_id": 1, "producer_epoch": 0}
    assert _for_version(ApiKey.INIT_PRODUCER_ID, 2, init) == {"transactional_id": "t"}
