"""The transaction coordinator's rules (issue 21): pure functions of (state, request,
now_ms) returning a ``Result`` of records and a reply, as Kafka's
``TransactionCoordinator`` decides them (KIP-98, KIP-360, KIP-447). No I/O: the shell
(``txn_service.py``) persists, writes the markers and completes.

Fencing, worked through: producer A initialises ``tx-1`` and gets (id 7, epoch 0); it adds
partition p and writes. Producer B (A's replacement) initialises ``tx-1``: the open
transaction is moved to ``prepare_abort`` at epoch 1 and B is told
CONCURRENT_TRANSACTIONS; the shell writes ABORT markers at epoch 1 to p, which fences A's
epoch 0 at p's leader (its later writes: PRODUCER_FENCED), and completes the abort. B
retries and gets (7, 2). A's EndTxn, AddPartitions and TxnOffsetCommit carry epoch 0:
PRODUCER_FENCED. Nothing A wrote becomes visible to read_committed consumers.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import replace
from typing import Final, TypeVar

from conveyor.coordinator.model import (
    ClusterState,
    CommittedOffset,
    OffsetRecord,
    ProducerRecord,
    Record,
    apply,
)
from conveyor.coordinator.state import Result, make_result
from conveyor.coordinator.txn_model import (
    PREPARE,
    PendingOffset,
    Transaction,
    TransactionCompleted,
    TransactionRecord,
    TxnStatus,
)
from conveyor.coordinator.validation import offset_refusal
from conveyor.protocol.errors import ErrorCode
from conveyor.protocol.messages import PartitionOffset
from conveyor.protocol.txn import (
    TxnInitRequest,
    TxnInitResponse,
    TxnPartition,
    TxnPartitionResult,
    TxnProducer,
    TxnResult,
    TxnVerifyRequest,
)

PRODUCER_EPOCH_MAX: Final = 32767  # int16; at the limit a new producer id (Kafka's rule)
TRANSACTION_TIMEOUT_MAX_MS: Final = 900_000  # Kafka's transaction.max.timeout.ms
TRANSACTIONAL_ID_CHARS_MAX: Final = 255
T = TypeVar("T")


def _err(code: ErrorCode | None) -> str | None:
    return None if code is None else code.name


def _new_producer_id(state: ClusterState) -> int:
    return max(state.producers, default=-1) + 1


def _saved(
    state: ClusterState, txn: Transaction, reply: T, decision: str, bumped: bool = False
) -> Result[T]:
    records: list[Record] = [TransactionRecord(txn)]
    if bumped:  # ids are allocated over both kinds of producer: keep the one table current
        records.insert(0, ProducerRecord(txn.producer_id, txn.producer_epoch))
    return make_result(apply(state, records), records, reply, [decision])


def _bump(state: ClusterState, txn: Transaction) -> Transaction:
    if txn.producer_epoch + 1 > PRODUCER_EPOCH_MAX:
        return replace(txn, producer_id=_new_producer_id(state), producer_epoch=0)
    return replace(txn, producer_epoch=txn.producer_epoch + 1)


def init_producer_id(  # noqa: PLR0911 -- one answer per case of Kafka's table
    state: ClusterState, request: TxnInitRequest, now_ms: int
) -> Result[TxnInitResponse]:
    """A transactional producer's id and epoch. A new id starts at epoch 0; a known one is
    bumped, which fences every older epoch. An open transaction is aborted first, at a
    bumped epoch (the caller is told CONCURRENT_TRANSACTIONS and retries once the abort
    completed); one already completing is CONCURRENT_TRANSACTIONS too."""
    tid = request.transactional_id
    timeout_ms = request.transaction_timeout_ms
    if not tid or len(tid) > TRANSACTIONAL_ID_CHARS_MAX:
        return make_result(state, (), TxnInitResponse(error=ErrorCode.INVALID_REQUEST.name))
    if not 0 < timeout_ms <= TRANSACTION_TIMEOUT_MAX_MS:
        error = ErrorCode.INVALID_TRANSACTION_TIMEOUT.name
        return make_result(state, (), TxnInitResponse(error=error))
    txn = state.transactions.get(tid)
    if txn is None:
        txn = Transaction(tid, _new_producer_id(state), 0, timeout_ms, updated_ms=now_ms)
        reply = TxnInitResponse(producer_id=txn.producer_id, producer_epoch=0)
        decision = f"transaction {tid}: new producer id {txn.producer_id}"
        return _saved(state, txn, reply, decision, bumped=True)
    if txn.status in PREPARE:
        return make_result(state, (), TxnInitResponse(error=ErrorCode.CONCURRENT_TRANSACTIONS.name))
    if request.producer_id >= 0 and (
        request.producer_id != txn.producer_id or request.producer_epoch != txn.producer_epoch
    ):  # KIP-360: only the current producer may ask for its own epoch bump
        return make_result(state, (), TxnInitResponse(error=ErrorCode.PRODUCER_FENCED.name))
    if txn.status == "ongoing":
        aborting = replace(_bump(state, txn), status="prepare_abort", updated_ms=now_ms)
        reply = TxnInitResponse(error=ErrorCode.CONCURRENT_TRANSACTIONS.name)
        decision = (
            f"transaction {tid}: aborting the open transaction of producer {txn.producer_id} "
            f"epoch {txn.producer_epoch} (fenced by a new InitProducerId)"
        )
        return _saved(state, aborting, reply, decision, bumped=True)
    new = replace(
        _bump(state, txn), timeout_ms=timeout_ms, status="empty", started_ms=-1, updated_ms=now_ms
    )
    reply = TxnInitResponse(producer_id=new.producer_id, producer_epoch=new.producer_epoch)
    decision = f"transaction {tid}: producer {new.producer_id} epoch {new.producer_epoch}"
    return _saved(state, new, reply, decision, bumped=True)


def producer_error(txn: Transaction | None, producer: TxnProducer) -> ErrorCode | None:
    """Kafka's checks of every request of a transaction's producer."""
    if txn is None or txn.producer_id != producer.producer_id:
        return ErrorCode.INVALID_PRODUCER_ID_MAPPING
    if txn.producer_epoch != producer.producer_epoch:
        return ErrorCode.PRODUCER_FENCED
    if txn.status in PREPARE:
        return ErrorCode.CONCURRENT_TRANSACTIONS
    return None


def _begin(txn: Transaction, now_ms: int) -> Transaction:
    """The transaction open: a completed (or empty) one starts a new one."""
    if txn.status == "ongoing":
        return txn
    return replace(txn, status="ongoing", partitions=(), groups=(), offsets=(), started_ms=now_ms)


def add_partitions(
    state: ClusterState, producer: TxnProducer, partitions: list[TxnPartition], now_ms: int
) -> Result[list[TxnPartitionResult]]:
    """AddPartitionsToTxn: every partition or none (Kafka's rule: one unknown partition
    fails the others with OPERATION_NOT_ATTEMPTED; here they carry the same error)."""
    txn = state.transactions.get(producer.transactional_id)
    error = producer_error(txn, producer)
    unknown = [p for p in partitions if (p.topic, p.partition) not in state.partitions]
    if error is None and unknown:
        error = ErrorCode.UNKNOWN_PARTITION
    if error is not None or txn is None:
        results = [TxnPartitionResult(p.topic, p.partition, _err(error)) for p in partitions]
        return make_result(state, (), results)
    results = [TxnPartitionResult(p.topic, p.partition) for p in partitions]
    wanted = {(p.topic, p.partition) for p in partitions}
    if txn.status == "ongoing" and wanted <= set(txn.partitions):
        return make_result(state, (), results)  # a retry: nothing new
    begun = _begin(txn, now_ms)
    new = replace(
        begun, partitions=tuple(sorted(set(begun.partitions) | wanted)), updated_ms=now_ms
    )
    decision = (
        f"transaction {txn.transactional_id}: producer {txn.producer_id} epoch "
        f"{txn.producer_epoch} adds {len(wanted)} partitions ({len(new.partitions)} in all)"
    )
    return _saved(state, new, results, decision)


def verify(state: ClusterState, request: TxnVerifyRequest) -> Result[list[TxnPartitionResult]]:
    """KIP-890 part 1: a partition leader asks, before it appends a producer's first
    transactional batch to a partition, whether the partition is in that producer's
    ongoing transaction. Changes nothing. PRODUCER_FENCED for an older epoch (a zombie's
    write); INVALID_TXN_STATE when no such transaction is ongoing or it does not hold the
    partition: a late write of a transaction that ended, or a client that wrote before
    adding the partition. Appended, either would open a transaction at the partition
    that no coordinator will ever end (a hanging transaction: the LSO stuck for good).

    Worked through: producer 7 epoch 0 adds p and writes; its transaction times out and
    is aborted (epoch 1, ABORT markers). A retry of its write, delayed in the network,
    reaches q (never added): the leader of q asks; the answer is PRODUCER_FENCED (epoch 0
    < 1) and nothing is appended. Had the producer itself written to q without adding it,
    the answer is INVALID_TXN_STATE. No records: decided as a transition all the same, so
    that a coordinator whose lease may have expired answers NOT_COORDINATOR, not from its
    stale state (it could say yes for a transaction the active one has ended)."""
    tid = request.transactional_id
    if tid is not None:
        txn = state.transactions.get(tid)
    else:  # a produce over HTTP names no transactional id: one pass over the ids
        txn = next(
            (t for t in state.transactions.values() if t.producer_id == request.producer_id),
            None,
        )
    error: ErrorCode | None = None
    if txn is None or txn.producer_id != request.producer_id:
        error = ErrorCode.INVALID_TXN_STATE
    elif request.producer_epoch < txn.producer_epoch:
        error = ErrorCode.PRODUCER_FENCED
    elif request.producer_epoch != txn.producer_epoch or txn.status != "ongoing":
        error = ErrorCode.INVALID_TXN_STATE
    held = set(txn.partitions) if txn is not None and error is None else set()
    results = []
    for p in request.partitions:
        refusal = error or (None if (p.topic, p.partition) in held else ErrorCode.INVALID_TXN_STATE)
        results.append(TxnPartitionResult(p.topic, p.partition, _err(refusal)))
    return make_result(state, (), results)


def add_offsets(
    state: ClusterState, producer: TxnProducer, group: str, now_ms: int
) -> Result[TxnResult]:
    txn = state.transactions.get(producer.transactional_id)
    error = producer_error(txn, producer)
    if error is not None or txn is None:
        return make_result(state, (), TxnResult(_err(error)))
    if txn.status == "ongoing" and group in txn.groups:
        return make_result(state, (), TxnResult())
    begun = _begin(txn, now_ms)
    new = replace(begun, groups=tuple(sorted({*begun.groups, group})), updated_ms=now_ms)
    decision = f"transaction {txn.transactional_id}: offsets of group {group} join it"
    return _saved(state, new, TxnResult(), decision)


def offset_commit(
    state: ClusterState, producer: TxnProducer, group: str, offsets: list[PartitionOffset]
) -> Result[list[TxnPartitionResult]]:
    """TxnOffsetCommit: the offsets wait in the transaction until it commits (the group's
    fencing, KIP-447, is checked by the caller against the group's membership)."""
    txn = state.transactions.get(producer.transactional_id)
    error = producer_error(txn, producer)
    if error is None and txn is not None and (txn.status != "ongoing" or group not in txn.groups):
        error = ErrorCode.INVALID_TXN_STATE  # AddOffsetsToTxn first
    if error is not None or txn is None:
        return make_result(state, (), _results(offsets, error))
    refusals = [_offset_refusal(state, o) for o in offsets]
    valid = [o for o, refusal in zip(offsets, refusals, strict=True) if refusal is None]
    kept = {(p.group, p.topic, p.partition): p for p in txn.offsets}
    for o in valid:
        kept[(group, o.topic, o.partition)] = PendingOffset(
            group, o.topic, o.partition, o.offset, o.metadata, o.leader_epoch
        )
    results = [
        TxnPartitionResult(o.topic, o.partition, _err(refusal))
        for o, refusal in zip(offsets, refusals, strict=True)
    ]
    if not valid:
        return make_result(state, (), results)
    new = replace(txn, offsets=tuple(kept[k] for k in sorted(kept)))
    decision = f"transaction {txn.transactional_id}: {len(valid)} offsets of group {group} pending"
    return _saved(state, new, results, decision)


def _offset_refusal(state: ClusterState, offset: PartitionOffset) -> ErrorCode | None:
    """A pending offset is checked as a commit's (``validation.offset_refusal``): it
    becomes the group's committed offset, unchecked again, when the transaction commits."""
    if (offset.topic, offset.partition) not in state.partitions:
        return ErrorCode.UNKNOWN_PARTITION
    refusal = offset_refusal(offset)
    return None if refusal is None else refusal[0]


def _results(offsets: list[PartitionOffset], error: ErrorCode | None) -> list[TxnPartitionResult]:
    return [TxnPartitionResult(o.topic, o.partition, _err(error)) for o in offsets]


def end(state: ClusterState, producer: TxnProducer, commit: bool, now_ms: int) -> Result[TxnResult]:
    """EndTxn: the decision. An open transaction moves to its prepare state (and, for a
    commit, its pending offsets become the groups' committed offsets, in the same
    transition); a retry of a decision already taken is answered as the first time."""
    txn = state.transactions.get(producer.transactional_id)
    error = producer_error(txn, producer)
    if txn is None or error not in (None, ErrorCode.CONCURRENT_TRANSACTIONS):
        return make_result(state, (), TxnResult(_err(error)))
    wanted: TxnStatus = "prepare_commit" if commit else "prepare_abort"
    done: TxnStatus = "complete_commit" if commit else "complete_abort"
    if txn.status in (wanted, done):
        return make_result(state, (), TxnResult())  # a retry: already decided this way
    if txn.status != "ongoing":
        return make_result(state, (), TxnResult(ErrorCode.INVALID_TXN_STATE.name))
    return _prepare(state, txn, commit, now_ms, "EndTxn")


def _prepare(
    state: ClusterState, txn: Transaction, commit: bool, now_ms: int, reason: str
) -> Result[TxnResult]:
    status: TxnStatus = "prepare_commit" if commit else "prepare_abort"
    new = replace(txn, status=status, updated_ms=now_ms)
    records: list[Record] = [TransactionRecord(new)]
    if commit:
        records += [
            OffsetRecord(
                CommittedOffset(
                    p.group, p.topic, p.partition, p.offset, p.metadata, now_ms, p.leader_epoch
                )
            )
            for p in txn.offsets
            if (p.topic, p.partition) in state.partitions
        ]  # fmt: skip
    decision = (
        f"transaction {txn.transactional_id}: {status} ({reason}) of producer "
        f"{txn.producer_id} epoch {txn.producer_epoch}: {len(txn.partitions)} partitions, "
        f"{len(txn.offsets)} offsets"
    )
    return make_result(apply(state, records), records, TxnResult(), [decision])


def complete(
    state: ClusterState, transactional_id: str, producer_id: int, producer_epoch: int
) -> Result[bool]:
    """The markers of a prepared transaction are all written: it is complete. False when
    the transaction moved on meanwhile (nothing to do)."""
    txn = state.transactions.get(transactional_id)
    if (
        txn is None
        or txn.status not in PREPARE
        or (txn.producer_id, txn.producer_epoch) != (producer_id, producer_epoch)
    ):
        return make_result(state, (), False)
    status: TxnStatus = "complete_commit" if txn.status == "prepare_commit" else "complete_abort"
    new = replace(txn, status=status, partitions=(), groups=(), offsets=(), started_ms=-1)
    records = [TransactionCompleted(new)]  # soft: see its docstring
    return make_result(
        apply(state, records), records, True, [f"transaction {transactional_id}: {status}"]
    )


def expired(state: ClusterState, now_ms: int) -> list[str]:
    """Open transactions past their timeout."""
    return [
        t.transactional_id
        for t in state.transactions.values()
        if t.status == "ongoing" and t.started_ms >= 0 and now_ms - t.started_ms > t.timeout_ms
    ]


def abort_expired(
    state: ClusterState, transactional_ids: Iterable[str], now_ms: int
) -> Result[int]:
    """Abort transactions left open past their timeout, at a bumped epoch (Kafka's rule
    since KIP-360: the producer that let it expire is fenced and must initialise again)."""
    records: list[Record] = []
    decisions: list[str] = []
    current = state
    for tid in transactional_ids:
        txn = current.transactions.get(tid)
        if txn is None or txn.status != "ongoing" or now_ms - txn.started_ms <= txn.timeout_ms:
            continue
        bumped = _bump(current, txn)
        done = _prepare(current, bumped, False, now_ms, f"timed out after {txn.timeout_ms} ms")
        producer = ProducerRecord(bumped.producer_id, bumped.producer_epoch)
        current = apply(done.state, [producer])
        records += [producer, *done.records]
        decisions += done.decisions
    return make_result(current, records, len(decisions), decisions)


def pending_offset(state: ClusterState, group: str, topic: str, partition: int) -> bool:
    """Is an open transaction holding an offset of this group's partition (KIP-447's
    OffsetFetch with require_stable answers UNSTABLE_OFFSET_COMMIT)?"""
    return any(
        (p.group, p.topic, p.partition) == (group, topic, partition)
        for t in state.transactions.values()
        if t.status == "ongoing" and group in t.groups
        for p in t.offsets
    )
