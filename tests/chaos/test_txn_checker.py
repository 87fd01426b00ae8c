"""The transactional checker on hand-built histories: each anomaly class is found, with an
example naming its ops, and a clean history is valid."""

from __future__ import annotations

from typing import Any

import pytest

from conveyor.chaos import txn_checker
from conveyor.chaos.history import OpType
from tests.chaos.histories import HistoryBuilder

Final = dict[int, list[tuple[int, str | None, str | None]]]


class H(HistoryBuilder):
    """The transactional workload's ops."""

    def begin(self, process: str, txn: str) -> H:
        return self.add(process, "ok", "begin", {"txn": txn})

    def write(self, process: str, txn: str, partition: int, value: str) -> H:
        return self.add(
            process, "invoke", "tsend", {"txn": txn, "partition": partition, "value": value}
        )

    def end(
        self, process: str, txn: str, f: str = "commit", outcome: OpType | None = "ok",
        offsets: list[list[Any]] | None = None,
    ) -> H:  # fmt: skip
        self.add(process, "invoke", f, {"txn": txn})
        if outcome is not None:
            self.add(process, outcome, f, {"txn": txn, "offsets": offsets or []})
        return self

    def txn(
        self, process: str, txn: str, writes: list[tuple[int, str]], f: str = "commit",
        outcome: OpType | None = "ok",
    ) -> H:  # fmt: skip
        self.begin(process, txn)
        for partition, value in writes:
            self.write(process, txn, partition, value)
        return self.end(process, txn, f, outcome)

    def poll(self, process: str, *records: tuple[int, int, str], txn: str | None = None) -> H:
        self.add(process, "invoke", "poll")
        rows = [list(r) for r in records]
        return self.add(process, "ok", "poll", {"records": rows, "txn": txn})


W, R, P, Q = "txn-writer-0", "txn-reader-0", "txn-proc-0.0", "txn-proc-1.0"


def final(*records: tuple[int, int, str]) -> Final:
    out: Final = {}
    for partition, offset, value in records:
        out.setdefault(partition, []).append((offset, "k", value))
    return out


def clean() -> tuple[H, Final]:
    """A commit over two partitions, a deliberate abort, a processor that reads the
    commit and writes in its own transaction, a reader that sees every committed value."""
    h = H().txn(W, "w#0", [(0, "w#0/0"), (1, "w#0/1")])
    h.txn(W, "w#1", [(0, "w#1/0")], f="abort")
    h.poll(P, (0, 0, "w#0/0"), (1, 0, "w#0/1"), txn="p#0")
    h.txn(P, "p#0", [(2, "p#0/0@1")])
    h.poll(R, (0, 0, "w#0/0"), (1, 0, "w#0/1")).poll(R, (2, 0, "p#0/0@1"))
    return h, final((0, 0, "w#0/0"), (1, 0, "w#0/1"), (2, 0, "p#0/0@1"))


def only(result: txn_checker.TxnResult, anomaly: str) -> None:
    """``anomaly`` is counted with an example naming ops; no other safety count."""
    others = {n: c for n, c in result.counts.items() if n != anomaly and n in result.failed}
    assert result.counts[anomaly] >= 1, result.counts
    assert not others, others
    assert any(e.anomaly == anomaly and e.op_indexes for e in result.examples), result.examples
    assert not result.valid


def test_a_clean_history_is_valid() -> None:
    h, fin = clean()
    result = txn_checker.check(h.ops, fin)
    assert result.valid, (result.counts, result.examples)
    assert result.counts == dict.fromkeys(txn_checker.TXN_SAFETY + txn_checker.TXN_REPORTED, 0)
    assert result.txns == {"committed": 2, "aborted": 1, "unknown": 0}
    assert result.cycles_checked == 1


def test_an_aborted_value_polled_is_g1a() -> None:
    h, fin = clean()
    h.poll(R, (0, 1, "w#1/0"))  # the deliberately aborted transaction's value
    only(txn_checker.check(h.ops, fin), "G1a")


@pytest.mark.parametrize(
    "end",
    [("abort", "ok"), ("commit", "fail"), (None, None)],
    ids=["abort-ok", "commit-refused", "commit-never-asked"],
)
def test_a_never_committed_value_in_the_final_read_is_g1a(end: tuple[str | None, Any]) -> None:
    h, fin = clean()
    f, outcome = end
    h.begin(W, "w#2").write(W, "w#2", 3, "w#2/0")
    if f is not None:
        h.end(W, "w#2", f, outcome)
    fin[3] = [(0, "k", "w#2/0")]
    only(txn_checker.check(h.ops, fin), "G1a")


def test_a_value_polled_before_its_transaction_wrote_the_rest_is_g1b() -> None:
    h, fin = clean()
    h.begin(W, "w#2").write(W, "w#2", 3, "w#2/0")
    h.poll(R, (3, 0, "w#2/0"))  # the transaction has more to write: an intermediate state
    h.write(W, "w#2", 0, "w#2/1").end(W, "w#2")
    fin[3] = [(0, "k", "w#2/0")]
    fin[0].append((1, "k", "w#2/1"))
    result = txn_checker.check(h.ops, fin)
    only(result, "G1b")
    assert result.counts["read-past-lso"] == 0


def test_a_value_polled_before_its_commit_is_read_past_the_lso() -> None:
    h, fin = clean()
    h.begin(W, "w#2").write(W, "w#2", 3, "w#2/0")
    h.poll(R, (3, 0, "w#2/0"))
    h.end(W, "w#2")
    fin[3] = [(0, "k", "w#2/0")]
    only(txn_checker.check(h.ops, fin), "read-past-lso")


def test_two_transactions_reading_each_other_are_g1c() -> None:
    """Found from what was read alone, whatever the clocks say: under read_committed a
    cycle also means a poll returned a value before its transaction asked to commit."""
    h, fin = clean()
    h.begin(P, "p#1").write(P, "p#1", 3, "p#1/0@1")
    h.begin(Q, "q#0").write(Q, "q#0", 3, "q#0/0@1")
    h.poll(P, (3, 1, "q#0/0@1"), txn="p#1").poll(Q, (3, 0, "p#1/0@1"), txn="q#0")
    h.end(P, "p#1").end(Q, "q#0")
    fin[3] = [(0, "k", "p#1/0@1"), (1, "k", "q#0/0@1")]
    result = txn_checker.check(h.ops, fin)
    assert set(result.failed) == {"G1c", "read-past-lso"}, result.counts
    assert result.counts["G1c"] == 1
    (example,) = [e for e in result.examples if e.anomaly == "G1c"]
    assert "p#1" in example.description and "q#0" in example.description


def test_a_cycle_through_process_order_is_g1c() -> None:
    """p#1 reads q#0's value; q#0 read a value of p#2, which p's process ran after p#1."""
    h, fin = clean()
    h.begin(Q, "q#0").write(Q, "q#0", 3, "q#0/0@1")
    h.poll(P, (3, 0, "q#0/0@1"), txn="p#1").txn(P, "p#1", [])
    h.txn(P, "p#2", [(3, "p#2/0@2")])
    h.poll(Q, (3, 1, "p#2/0@2"), txn="q#0").end(Q, "q#0")
    fin[3] = [(0, "k", "q#0/0@1"), (1, "k", "p#2/0@2")]
    result = txn_checker.check(h.ops, fin)
    assert set(result.failed) == {"G1c", "read-past-lso"}, result.counts
    assert result.counts["G1c"] == 1, result.examples
    (example,) = [e for e in result.examples if e.anomaly == "G1c"]
    assert "-[process]->" in example.description and example.op_indexes


def test_a_committed_value_missing_from_the_final_read_is_lost() -> None:
    h, fin = clean()
    fin[1] = []
    h.ops = [op for op in h.ops if op.process != R]  # the readers never saw it either
    only(txn_checker.check(h.ops, fin), "lost-committed")


def test_a_transaction_of_unknown_outcome_partly_visible_is_non_atomic() -> None:
    h, fin = clean()
    h.txn(W, "w#2", [(3, "w#2/0"), (0, "w#2/1")], outcome="info")
    fin[3] = [(0, "k", "w#2/0")]
    only(txn_checker.check(h.ops, fin), "non-atomic")


def test_a_value_stored_twice_is_a_duplicate() -> None:
    h, fin = clean()
    fin[0].append((2, "k", "w#0/0"))  # written again after an abort and retry
    only(txn_checker.check(h.ops, fin), "duplicate")


def test_a_committed_offset_holding_another_value_is_inconsistent() -> None:
    h = H().begin(W, "w#0").write(W, "w#0", 0, "w#0/0")
    h.end(W, "w#0", offsets=[[0, 5, "w#0/0"]])
    h.poll(R, (0, 6, "w#0/0"))
    fin = final((0, 5, "x"), (0, 6, "w#0/0"))
    result = txn_checker.check(h.ops, fin)
    assert result.counts["inconsistent-offsets"] == 1, result.counts
    assert "committed at (0, 5)" in result.examples[0].description


def test_a_reader_jumping_over_committed_values_is_a_poll_skip() -> None:
    h = H().txn(W, "w#0", [(0, "a")]).txn(W, "w#1", [(0, "b")]).txn(W, "w#2", [(0, "c")])
    h.poll(R, (0, 0, "a")).poll(R, (0, 4, "c"))  # b, committed at 2, never returned
    h.poll("txn-reader-1", (0, 0, "a"), (0, 2, "b"), (0, 4, "c"))
    only(txn_checker.check(h.ops, final((0, 0, "a"), (0, 2, "b"), (0, 4, "c"))), "poll-skip")


def test_a_reader_going_back_is_nonmonotonic() -> None:
    h, fin = clean()
    h.poll(R, (0, 0, "w#0/0"))
    only(txn_checker.check(h.ops, fin), "nonmonotonic-poll")


def test_a_value_processed_by_two_committed_transactions_is_reported_not_invalid() -> None:
    h, fin = clean()
    h.poll(Q, (0, 0, "w#0/0"), txn="q#0").txn(Q, "q#0", [])
    result = txn_checker.check(h.ops, fin)
    assert result.counts["double-processed"] == 1
    assert result.valid


def test_find_cycle_returns_a_shortest_cycle() -> None:
    edges = {
        "a": [("a", "b", "wr"), ("a", "d", "wr")],
        "b": [("b", "c", "wr")],
        "c": [("c", "a", "wr")],
        "d": [("d", "a", "process")],
    }
    assert txn_checker.find_cycle(edges) == [("a", "d", "wr"), ("d", "a", "process")]
    assert txn_checker.find_cycle({"a": [("a", "b", "wr")], "b": []}) is None


def test_a_value_polled_after_its_commit_was_asked_for_is_fine_whatever_follows() -> None:
    """Seed 404's false alarm: the commit went unanswered (the coordinator was killed),
    readers saw the values, then the writer's abort went unanswered too."""
    h, fin = clean()
    h.begin(W, "w#2").write(W, "w#2", 3, "w#2/0").end(W, "w#2", outcome="info")
    h.poll(R, (3, 0, "w#2/0"))
    h.end(W, "w#2", "abort", outcome="info")
    fin[3] = [(0, "k", "w#2/0")]
    result = txn_checker.check(h.ops, fin)
    assert result.valid, result.examples
    assert result.txns["unknown"] == 1


def test_an_abort_answered_ok_after_an_unanswered_commit_means_aborted() -> None:
    h, fin = clean()
    h.begin(W, "w#2").write(W, "w#2", 3, "w#2/0").end(W, "w#2", outcome="info")
    h.end(W, "w#2", "abort", outcome="ok")
    fin[3] = [(0, "k", "w#2/0")]
    only(txn_checker.check(h.ops, fin), "G1a")
