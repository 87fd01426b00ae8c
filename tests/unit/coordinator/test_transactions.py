"""The transaction coordinator's rules (issue 21), through the real transitions: Kafka's
state table (KIP-98), fencing by epoch (KIP-360), timeouts, pending offsets, and recovery
of every record through the store's codec."""

from __future__ import annotations

from pathlib import Path

import msgspec
from hypothesis import given, settings
from hypothesis import strategies as st

from conveyor.coordinator import transactions as rules
from conveyor.coordinator.model import ClusterState, apply, check_invariants, snapshot_records
from conveyor.coordinator.records_codec import decode_records, encode_records
from conveyor.coordinator.store import CoordinatorStore
from conveyor.protocol.messages import PartitionOffset
from conveyor.protocol.txn import TxnInitRequest, TxnPartition, TxnProducer, TxnVerifyRequest
from tests.unit.coordinator.helpers import with_brokers, with_topic

TID = "tx-1"


def _cluster() -> ClusterState:
    return with_topic(with_brokers([1]), "orders", partitions=2)


def _init(state: ClusterState, now_ms: int = 0, **asked: int) -> tuple[ClusterState, object]:
    result = rules.init_producer_id(state, TxnInitRequest(TID, 60_000, **asked), now_ms)
    return result.state, result.reply


def _open(state: ClusterState) -> tuple[ClusterState, TxnProducer]:
    state, reply = _init(state)
    producer = TxnProducer(TID, reply.producer_id, reply.producer_epoch)  # type: ignore[attr-defined]
    result = rules.add_partitions(state, producer, [TxnPartition("orders", 0)], 100)
    assert result.reply[0].error is None
    return result.state, producer


def test_init_then_commit_walks_kafkas_states() -> None:
    state, producer = _open(_cluster())
    assert state.transactions[TID].status == "ongoing"
    assert state.transactions[TID].started_ms == 100
    ended = rules.end(state, producer, True, 200)
    assert ended.reply.error is None
    assert ended.state.transactions[TID].status == "prepare_commit"
    retry = rules.end(ended.state, producer, True, 201)  # a retry: the same answer, no record
    assert retry.reply.error is None and retry.records == ()
    wrong_way = rules.end(ended.state, producer, False, 201)
    assert wrong_way.reply.error == "INVALID_TXN_STATE"
    done = rules.complete(ended.state, TID, producer.producer_id, producer.producer_epoch)
    assert done.reply is True
    assert done.state.transactions[TID].status == "complete_commit"
    assert done.state.transactions[TID].partitions == ()


def test_a_new_init_fences_the_open_transaction_at_a_bumped_epoch() -> None:
    state, zombie = _open(_cluster())
    state, reply = _init(state)
    assert reply.error == "CONCURRENT_TRANSACTIONS"  # type: ignore[attr-defined]
    txn = state.transactions[TID]
    assert (txn.status, txn.producer_epoch) == ("prepare_abort", zombie.producer_epoch + 1)
    assert state.producers[zombie.producer_id] == txn.producer_epoch
    # the zombie is refused everything while and after the abort completes
    assert rules.end(state, zombie, True, 1).reply.error == "PRODUCER_FENCED"
    state = rules.complete(state, TID, txn.producer_id, txn.producer_epoch).state
    state, reply = _init(state)
    assert reply.producer_epoch == zombie.producer_epoch + 2  # type: ignore[attr-defined]
    added = rules.add_partitions(state, zombie, [TxnPartition("orders", 1)], 2)
    assert added.reply[0].error == "PRODUCER_FENCED"


def _verify(state: ClusterState, producer: TxnProducer, epoch: int | None = None) -> list[object]:
    """KIP-890's answer for both partitions of orders, asked by producer id (no tid)."""
    asked = TxnVerifyRequest(
        producer.producer_id,
        producer.producer_epoch if epoch is None else epoch,
        [TxnPartition("orders", 0), TxnPartition("orders", 1)],
    )
    by_id = rules.verify(state, asked)
    named = rules.verify(state, msgspec.structs.replace(asked, transactional_id=TID))
    assert named.reply == by_id.reply  # the same answer, found either way
    assert by_id.records == () and by_id.state is state  # it changes nothing
    return [r.error for r in by_id.reply]


def test_verify_answers_only_for_partitions_of_the_ongoing_transaction() -> None:
    """KIP-890 part 1: partition 0 was added, 1 never was; after the commit neither is
    in an ongoing transaction; an older epoch is a zombie (PRODUCER_FENCED)."""
    state, producer = _open(_cluster())
    assert _verify(state, producer) == [None, "INVALID_TXN_STATE"]
    assert _verify(state, producer, epoch=producer.producer_epoch + 1) == ["INVALID_TXN_STATE"] * 2
    ended = rules.end(state, producer, True, 200)
    assert _verify(ended.state, producer) == ["INVALID_TXN_STATE"] * 2  # prepared: no new writes
    done = rules.complete(ended.state, TID, producer.producer_id, producer.producer_epoch)
    assert _verify(done.state, producer) == ["INVALID_TXN_STATE"] * 2
    fenced, _ = _init(done.state)
    assert _verify(fenced, producer) == ["PRODUCER_FENCED"] * 2
    unknown = TxnProducer(TID, producer.producer_id + 100, 0)
    assert _verify(state, unknown) == ["INVALID_TXN_STATE"] * 2


def test_offsets_become_the_groups_only_when_the_transaction_commits() -> None:
    state, producer = _open(_cluster())
    state = rules.add_offsets(state, producer, "g", 1).state
    offsets = [PartitionOffset(topic="orders", partition=1, offset=42, leader_epoch=6)]
    committed = rules.offset_commit(state, producer, "g", offsets)
    assert committed.reply[0].error is None
    assert rules.pending_offset(committed.state, "g", "orders", 1)
    assert "g" not in committed.state.group_offsets
    aborted = rules.end(committed.state, producer, False, 5).state
    assert "g" not in aborted.group_offsets
    decided = rules.end(committed.state, producer, True, 5).state
    assert decided.group_offsets["g"][("orders", 1)].offset == 42
    assert decided.group_offsets["g"][("orders", 1)].leader_epoch == 6  # TxnOffsetCommit v2+
    without_add = rules.offset_commit(_open(_cluster())[0], producer, "g", offsets)
    assert without_add.reply[0].error == "INVALID_TXN_STATE"


def test_pending_offsets_are_checked_as_commits_are() -> None:
    """Bad positions are refused per partition and never pending (they would become the
    group's committed offsets unchecked); the good ones of the same request are kept."""
    state, producer = _open(with_topic(with_brokers([1]), "orders", partitions=4))
    state = rules.add_offsets(state, producer, "g", 1).state
    offsets = [
        PartitionOffset(topic="orders", partition=0, offset=-1),
        PartitionOffset(topic="orders", partition=1, offset=5, leader_epoch=-2),
        PartitionOffset(topic="orders", partition=2, offset=5, metadata="x" * 5000),
        PartitionOffset(topic="orders", partition=99, offset=5),
        PartitionOffset(topic="orders", partition=3, offset=5, leader_epoch=2),
    ]
    result = rules.offset_commit(state, producer, "g", offsets)
    assert [r.error for r in result.reply] == [
        "INVALID_REQUEST",
        "INVALID_REQUEST",
        "OFFSET_METADATA_TOO_LARGE",
        "UNKNOWN_PARTITION",
        None,
    ]
    pending = [(p.partition, p.offset) for p in result.state.transactions[TID].offsets]
    assert pending == [(3, 5)]


def test_open_transactions_past_their_timeout_are_aborted() -> None:
    state, producer = _open(_cluster())
    assert rules.expired(state, 100 + 60_000) == []
    late = rules.expired(state, 100 + 60_001)
    assert late == [TID]
    result = rules.abort_expired(state, late, 100 + 60_001)
    txn = result.state.transactions[TID]
    assert (txn.status, txn.producer_epoch) == ("prepare_abort", producer.producer_epoch + 1)
    assert rules.end(result.state, producer, True, 1).reply.error == "PRODUCER_FENCED"


def test_bad_requests_change_nothing() -> None:
    state = _cluster()
    for asked in (TxnInitRequest("", 1000), TxnInitRequest(TID, 0), TxnInitRequest(TID, 10**9)):
        result = rules.init_producer_id(state, asked, 0)
        assert result.reply.error is not None and result.records == ()
    state, producer = _open(state)
    unknown = rules.add_partitions(state, producer, [TxnPartition("nope", 0)], 1)
    assert unknown.reply[0].error == "UNKNOWN_PARTITION" and unknown.records == ()
    stranger = TxnProducer(TID, producer.producer_id + 7, producer.producer_epoch)
    assert rules.end(state, stranger, True, 1).reply.error == "INVALID_PRODUCER_ID_MAPPING"


@settings(max_examples=60)
@given(st.lists(st.sampled_from(["init", "add", "offsets", "commit", "abort", "complete", "tick"])))
def test_any_sequence_keeps_the_state_recoverable(steps: list[str]) -> None:
    """Whatever the producer does, the records replay (through the store's codec) to the
    same transactions, and a prepare state is only left by completing it."""
    state = _cluster()
    records: list[object] = []
    now = 0
    for step in steps:
        now += 20_000
        txn = state.transactions.get(TID)
        producer = TxnProducer(TID, txn.producer_id, txn.producer_epoch) if txn else None
        if step == "init" or producer is None:
            result = rules.init_producer_id(state, TxnInitRequest(TID, 60_000), now)
        elif step == "add":
            result = rules.add_partitions(state, producer, [TxnPartition("orders", 0)], now)
        elif step == "offsets":
            result = rules.add_offsets(state, producer, "g", now)
        elif step in ("commit", "abort"):
            result = rules.end(state, producer, step == "commit", now)
        elif step == "complete":
            result = rules.complete(state, TID, producer.producer_id, producer.producer_epoch)
        else:
            result = rules.abort_expired(state, rules.expired(state, now), now)
        before = state.transactions.get(TID)
        state = result.state
        after = state.transactions.get(TID)
        if before is not None and before.status.startswith("prepare") and after != before:
            assert step in ("complete", "init") and after is not None
            assert after.status.startswith("complete") or after == before
        records += result.records
        check_invariants(state)
    replayed = apply(_cluster(), decode_records(encode_records(records)))  # type: ignore[arg-type]
    for tid, txn in state.transactions.items():
        stored = replayed.transactions[tid]
        if stored != txn:  # only a completion is soft: stored, it is still being prepared
            assert (stored.status, txn.status) in (
                ("prepare_commit", "complete_commit"),
                ("prepare_abort", "complete_abort"),
            )
            assert (stored.producer_id, stored.producer_epoch) == (
                txn.producer_id,
                txn.producer_epoch,
            )
    snapshot = apply(ClusterState("x"), snapshot_records(state))
    assert snapshot.transactions == state.transactions


def test_the_sqlite_store_keeps_a_prepared_transaction(tmp_path: Path) -> None:
    """What a restarted coordinator loads: the prepare state it must complete."""
    state, producer = _open(_cluster())
    prepared = rules.end(state, producer, True, 5)
    store = CoordinatorStore.open(tmp_path)
    try:
        store.write([*snapshot_records(state), *prepared.durable_records])
    finally:
        store.close()
    reopened = CoordinatorStore.open(tmp_path)
    try:
        loaded = reopened.load()
    finally:
        reopened.close()
    assert loaded.transactions == prepared.state.transactions
    assert loaded.transactions[TID].status == "prepare_commit"
