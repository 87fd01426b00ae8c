"""A transactional id's durable state (issue 21), as ``model.ClusterState.transactions``
holds it and ``TransactionRecord`` (an upsert) changes it. Data only: the rules are in
``transactions.py``.

Statuses, Kafka's ``TransactionState`` (KIP-98)::

    empty ─AddPartitions─▶ ongoing ─EndTxn(commit)─▶ prepare_commit ─markers─▶ complete_commit
                             │ EndTxn(abort), a timeout, a fencing InitProducerId
                             ▼
                        prepare_abort ─markers─▶ complete_abort

From empty or a complete state, the next AddPartitions (or AddOffsets) opens a new one.

A prepare state is the decision: once it is durable the transaction will complete that
way, whatever fails (the coordinator completes prepare states after a restart or a
takeover). Pending offsets (TxnOffsetCommit) become the group's committed offsets in the
same transition that decides the commit.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar, Final, Literal

TxnStatus = Literal[
    "empty", "ongoing", "prepare_commit", "prepare_abort", "complete_commit", "complete_abort"
]
PREPARE: Final = ("prepare_commit", "prepare_abort")
COMPLETE: Final = ("empty", "complete_commit", "complete_abort")
# Kafka's names for DescribeTransactions/ListTransactions
KAFKA_STATE: Final[dict[str, str]] = {
    "empty": "Empty",
    "ongoing": "Ongoing",
    "prepare_commit": "PrepareCommit",
    "prepare_abort": "PrepareAbort",
    "complete_commit": "CompleteCommit",
    "complete_abort": "CompleteAbort",
}


@dataclass(frozen=True, slots=True)
class PendingOffset:
    """An offset a transaction commits for a group when (if) it commits."""

    group: str
    topic: str
    partition: int
    offset: int
    metadata: str | None = None
    leader_epoch: int = -1  # TxnOffsetCommit v2+'s committed leader epoch


@dataclass(frozen=True, slots=True)
class Transaction:
    transactional_id: str
    producer_id: int
    producer_epoch: int
    timeout_ms: int
    status: TxnStatus = "empty"
    partitions: tuple[tuple[str, int], ...] = ()  # sorted, each once
    groups: tuple[str, ...] = ()  # AddOffsetsToTxn's groups, sorted
    offsets: tuple[PendingOffset, ...] = ()
    started_ms: int = -1  # when the current transaction began (-1: none)
    updated_ms: int = 0


@dataclass(frozen=True, slots=True)
class TransactionRecord:
    """A transactional id's state after a decision (upsert)."""

    durable: ClassVar[bool] = True
    transaction: Transaction


@dataclass(frozen=True, slots=True)
class TransactionCompleted:
    """A prepared transaction's markers are all written: complete (soft, no fsync). Lost
    in a crash, the store still says prepare and the coordinator writes the markers again
    after it starts: a second marker of a transaction already closed changes nothing at a
    partition, and the producer cannot have opened its next transaction meanwhile (its
    AddPartitionsToTxn is durable, and replaces the prepare state in the store)."""

    durable: ClassVar[bool] = False
    transaction: Transaction
