"""The transactional workload's checker: pure functions from (history, final
read_committed read) to anomaly counts, named as Jepsen names them for Kafka's
transactions (its Kafka and Redpanda analyses; Adya's G1a/G1b/G1c):

======================  ==============================================================  ======
name                    meaning                                                         kind
======================  ==============================================================  ======
G1a                     aborted read: a value of a transaction that never committed    safety
                        (its abort answered ok, its commit was refused, or it never
                        asked to commit) was returned to a read_committed poll or is
                        in the final read_committed read
G1b                     intermediate read: a read_committed poll returned a value of   safety
                        a transaction that had not yet issued all its writes
read-past-lso           a read_committed poll returned a value of a transaction        safety
                        before that transaction asked to commit (it had written
                        everything: the read went past the last stable offset)
G1c                     cyclic information flow: a cycle of write-read edges (T2       safety
                        polled a value T1 wrote) and process order (one process's
                        transactions one after another) among transactions that
                        committed (or may have)
lost-committed          a value of a transaction whose commit answered ok is missing   safety
                        from the final read_committed read
non-atomic              a transaction with an unknown outcome is partly visible: some  safety
                        of its values in the final read, others not
duplicate               one value (written once) stored at two offsets, or polled at   safety
                        an offset other than the one it is stored at (abort/retry
                        must not write a value twice)
inconsistent-offsets    a committed write acknowledged at an offset the final read     safety
                        has another value at; a poll returned a value at an offset the
                        final read has nothing or something else at
poll-skip               a reader (no group) jumped over committed values of a          safety
                        partition: read_committed filtering dropped committed records
nonmonotonic-poll       a reader returned an offset at or below one it returned        safety
                        before on that partition
double-processed        a value consumed by two committed processor transactions      report
                        (each commits its group offsets with its writes)
unseen                  committed, in the final read, never polled by any reader       report
======================  ==============================================================  ======

Kafka does not order concurrent transactions' writes (Jepsen's Redpanda analysis,
"write cycles" and the Redpanda reply): two transactions may interleave on two partitions
in opposite orders, a G0 cycle Kafka allows. So the graph has no write-write edges:
G1c here is a cycle through what transactions read and their processes' order, which
read_committed rules out (each edge goes from a commit to a later point in time).

History (``conveyor.chaos.txn_workload``): per transaction ``txn`` (a unique id), ops
``begin`` (ok), ``tsend`` (invoke: ``partition``, ``value``), ``commit`` or ``abort``
(invoke, then ok / fail / info; a commit's ok names ``offsets``: ``[[partition, offset,
value], ...]``); ``poll`` (ok: ``records`` ``[[partition, offset, value], ...]`` and, for a
processor, the ``txn`` the polled values feed). Every poll is read_committed.
"""

from __future__ import annotations

import itertools
from collections import defaultdict, deque
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Final, Literal

from conveyor.chaos.checker import FinalReads, Findings, log_index
from conveyor.chaos.history import Op

TXN_SAFETY: Final = (
    "G1a",
    "G1b",
    "read-past-lso",
    "G1c",
    "lost-committed",
    "non-atomic",
    "duplicate",
    "inconsistent-offsets",
    "poll-skip",
    "nonmonotonic-poll",
)
TXN_REPORTED: Final = ("double-processed", "unseen")
READER_PREFIX: Final = "txn-reader"

Status = Literal["committed", "aborted", "unknown"]


@dataclass
class Txn:
    """One transaction as the history shows it."""

    id: str
    process: str
    begin: Op | None = None
    writes: list[Op] = field(default_factory=list)  # tsend invokes
    # invoke and outcome of its commit and of its abort (after a failed commit, or on purpose)
    ends: dict[str, tuple[Op, Op | None]] = field(default_factory=dict)
    reads: list[tuple[Op, str]] = field(default_factory=list)  # (poll op, value)

    def outcome(self, f: str) -> str | None:
        """``ok``/``fail``/``info`` of its ``commit`` or ``abort``, ``no answer``, or None
        when not asked for."""
        if f not in self.ends:
            return None
        end = self.ends[f][1]
        return "no answer" if end is None else end.type

    @property
    def status(self) -> Status:
        """committed: its commit answered ok; aborted: it surely never committed (commit
        never asked for, or refused, or its abort answered ok); unknown otherwise."""
        commit = self.outcome("commit")
        if commit == "ok":
            return "committed"
        if commit in (None, "fail") or self.outcome("abort") == "ok":
            return "aborted"
        return "unknown"

    @property
    def commit_ns(self) -> int | None:
        """When it asked to commit."""
        return self.ends["commit"][0].time_ns if "commit" in self.ends else None

    def op_indexes(self) -> tuple[int, ...]:
        ops = [self.begin, *(op for pair in self.ends.values() for op in pair)]
        return tuple(op.index for op in ops if op is not None)


@dataclass
class TxnResult(Findings):
    counts: dict[str, int] = field(
        default_factory=lambda: dict.fromkeys(TXN_SAFETY + TXN_REPORTED, 0)
    )
    txns: dict[str, int] = field(
        default_factory=lambda: dict.fromkeys(("committed", "aborted", "unknown"), 0)
    )
    polls_ok: int = 0
    values_read: int = 0
    cycles_checked: int = 0  # committed transactions that read something

    @property
    def failed(self) -> list[str]:
        return [name for name in TXN_SAFETY if self.counts[name] > 0]

    @property
    def valid(self) -> bool:
        return not self.failed


def transactions(ops: Sequence[Op]) -> dict[str, Txn]:
    """Every transaction of the history by id."""
    txns: dict[str, Txn] = {}

    def txn_of(op: Op) -> Txn:
        txn_id = str(op.value["txn"])
        return txns.setdefault(txn_id, Txn(txn_id, op.process))

    for op in ops:
        if op.f == "begin" and op.type == "ok":
            txn_of(op).begin = op
        elif op.f == "tsend" and op.type == "invoke":
            txn_of(op).writes.append(op)
        elif op.f in ("commit", "abort") and "txn" in op.value:
            txn = txn_of(op)
            if op.type == "invoke":
                txn.ends[op.f] = (op, None)
            elif op.f in txn.ends:
                txn.ends[op.f] = (txn.ends[op.f][0], op)
        elif op.f == "poll" and op.type == "ok" and op.value.get("txn"):
            txn = txn_of(op)
            txn.reads += [(op, str(r[2])) for r in op.value.get("records", ()) if r[2]]
    return txns


def _polled(ops: Sequence[Op]) -> Iterable[tuple[Op, int, int, str]]:
    for op in ops:
        if op.f == "poll" and op.type == "ok":
            for partition, offset, value in op.value.get("records", ()):
                if value is not None:
                    yield op, int(partition), int(offset), str(value)


def check_reads(ops: Sequence[Op], writer: Mapping[str, Txn], result: TxnResult) -> None:
    """G1a, G1b and read-past-lso over every poll."""
    for op, partition, offset, value in _polled(ops):
        result.values_read += 1
        txn = writer.get(value)
        if txn is None:
            continue
        where = f"{op.process} polled {value} at ({partition}, {offset})"
        indexes = (op.index, *txn.op_indexes())
        if txn.status == "aborted":
            result.add("G1a", f"{where}: {txn.id} never committed ({_end(txn)})", indexes)
        elif op.time_ns < max(w.time_ns for w in txn.writes):
            later = [w for w in txn.writes if w.time_ns > op.time_ns]
            result.add(
                "G1b",
                f"{where} before {txn.id} wrote {later[0].value['value']}",
                (op.index, later[0].index),
            )
        elif txn.commit_ns is not None and op.time_ns < txn.commit_ns:
            result.add("read-past-lso", f"{where} before {txn.id} asked to commit", indexes)


def _end(txn: Txn) -> str:
    told = [f"{f} {txn.outcome(f)}" for f in ("commit", "abort") if f in txn.ends]
    return ", ".join(told) or "no commit asked for"


def _check_visibility(
    txn: Txn, where: Mapping[str, list[tuple[int, int]]], result: TxnResult
) -> None:
    """All of a committed transaction's values are in the final read, none of one that
    never committed, all or none of one whose outcome is unknown."""
    status = txn.status
    result.txns[status] += 1
    values = [str(w.value["value"]) for w in txn.writes]
    present = [v for v in values if v in where]
    missing = [v for v in values if v not in where]
    if status == "aborted" and present:
        result.add(
            "G1a", f"{txn.id} never committed ({_end(txn)}), the final read has "
            f"{present[0]} at {where[present[0]][0]}", txn.op_indexes(),
        )  # fmt: skip
    elif status == "committed" and missing:
        result.add(
            "lost-committed", f"{txn.id} committed, {missing[0]} is not in the final "
            f"read ({len(missing)} of {len(values)} missing)", txn.op_indexes(),
        )  # fmt: skip
    elif status == "unknown" and present and missing:
        result.add(
            "non-atomic", f"{txn.id} (outcome unknown): {present[0]} visible, "
            f"{missing[0]} not", txn.op_indexes(),
        )  # fmt: skip


def check_final(
    ops: Sequence[Op], txns: Mapping[str, Txn], final: FinalReads, result: TxnResult
) -> None:
    """G1a (in the final read), lost-committed, non-atomic, duplicate and
    inconsistent-offsets."""
    where = log_index(final)
    at = {(p, o): v for p, records in final.items() for o, _k, v in records}
    for txn in txns.values():
        _check_visibility(txn, where, result)
        commit = txn.ends.get("commit", (None, None))[1]
        if txn.status == "committed" and commit is not None:
            for partition, offset, value in commit.value.get("offsets", ()):
                stored = at.get((partition, offset))
                if stored is not None and stored != value:
                    result.add(
                        "inconsistent-offsets", f"{value} committed at ({partition}, "
                        f"{offset}), the final read has {stored} there", txn.op_indexes(),
                    )  # fmt: skip
    writer = {str(w.value["value"]): t for t in txns.values() for w in t.writes}
    for value, positions in where.items():
        if len(positions) > 1:
            source = writer.get(value)
            indexes = (
                () if source is None else (*(w.index for w in source.writes), *source.op_indexes())
            )
            result.add("duplicate", f"{value} stored at {sorted(positions)}", indexes)
    _check_polled_offsets(ops, where, at, result)


def _check_polled_offsets(
    ops: Sequence[Op], where: Mapping[str, list[tuple[int, int]]],
    at: Mapping[tuple[int, int], str | None], result: TxnResult,
) -> None:  # fmt: skip
    """A polled value must sit where the final read has it."""
    for op, partition, offset, value in _polled(ops):
        stored = at.get((partition, offset))
        if stored == value:
            continue
        if value in where and (partition, offset) not in where[value]:
            result.add(
                "duplicate", f"{op.process} polled {value} at ({partition}, {offset}), "
                f"stored at {where[value]}", (op.index,),
            )  # fmt: skip
        elif stored is not None:
            result.add(
                "inconsistent-offsets", f"{op.process} polled {value} at ({partition}, "
                f"{offset}), the final read has {stored} there", (op.index,),
            )  # fmt: skip


def check_readers(ops: Sequence[Op], final: FinalReads, result: TxnResult) -> None:
    """poll-skip and nonmonotonic-poll for the readers (no group: each reads every
    partition from its start, so it must return every committed value in order)."""
    offsets = {p: [o for o, _k, v in records if v is not None] for p, records in final.items()}
    rank = {(p, o): i for p, listed in offsets.items() for i, o in enumerate(listed)}
    last: dict[tuple[str, int], tuple[int, int]] = {}  # (process, partition) -> rank, op
    for op, partition, offset, _value in _polled(ops):
        if not op.process.startswith(READER_PREFIX) or (partition, offset) not in rank:
            continue  # not a reader, or a value the final read lacks (flagged elsewhere)
        here = rank[(partition, offset)]
        before = last.get((op.process, partition), (-1, op.index))
        if here <= before[0]:
            result.add(
                "nonmonotonic-poll", f"{op.process} partition {partition}: offset {offset} "
                f"after {offsets[partition][before[0]]}", (before[1], op.index),
            )  # fmt: skip
        elif here > before[0] + 1:
            skipped = offsets[partition][before[0] + 1]
            result.add(
                "poll-skip", f"{op.process} partition {partition}: jumped to {offset}, "
                f"over committed offset {skipped}", (before[1], op.index),
            )  # fmt: skip
        last[(op.process, partition)] = (max(here, before[0]), op.index)


def check_processing(ops: Sequence[Op], txns: Mapping[str, Txn], result: TxnResult) -> None:
    """double-processed and unseen (reported, not safety)."""
    consumed: dict[str, str] = {}
    for txn in txns.values():
        if txn.status != "committed":
            continue
        for _op, value in txn.reads:
            first = consumed.setdefault(value, txn.id)
            if first != txn.id:
                result.counts["double-processed"] += 1
    read_by_readers = {v for op, _p, _o, v in _polled(ops) if op.process.startswith(READER_PREFIX)}
    for txn in txns.values():
        if txn.status == "committed":
            values = (str(w.value["value"]) for w in txn.writes)
            result.counts["unseen"] += sum(v not in read_by_readers for v in values)
    result.polls_ok = sum(op.f == "poll" and op.type == "ok" for op in ops)


Edge = tuple[str, str, str]  # from txn, to txn, why


def dependency_graph(txns: Mapping[str, Txn]) -> dict[str, list[Edge]]:
    """Write-read and process-order edges among transactions that may have committed."""
    live = {i: t for i, t in txns.items() if t.status != "aborted"}
    writer = {str(w.value["value"]): t.id for t in live.values() for w in t.writes}
    edges: dict[str, list[Edge]] = defaultdict(list)
    for txn in live.values():
        for _op, value in txn.reads:
            source = writer.get(value)
            if source is not None:
                edges[source].append((source, txn.id, f"wr {value}"))
    by_process: dict[str, list[Txn]] = defaultdict(list)
    for txn in live.values():
        if txn.begin is not None:
            by_process[txn.process].append(txn)
    for listed in by_process.values():
        listed.sort(key=lambda t: t.begin.index if t.begin is not None else 0)
        for a, b in itertools.pairwise(listed):
            edges[a.id].append((a.id, b.id, "process"))
    return edges


def find_cycle(edges: Mapping[str, Sequence[Edge]]) -> list[Edge] | None:
    """A shortest cycle through some node of a strongly connected component of more than
    one node (or a self-loop), else None. Iterative Tarjan, then a BFS back to the start."""
    for component in _components(edges):
        start = min(component)
        parent: dict[str, Edge] = {}
        queue = deque([start])
        while queue:
            node = queue.popleft()
            for edge in edges.get(node, ()):
                target = edge[1]
                if target not in component or target in parent:
                    continue
                parent[target] = edge
                if target == start:
                    return _path(parent, start)
                queue.append(target)
    return None


def _path(parent: Mapping[str, Edge], start: str) -> list[Edge]:
    path = [parent[start]]
    while path[-1][0] != start:
        path.append(parent[path[-1][0]])
    return path[::-1]


def _components(edges: Mapping[str, Sequence[Edge]]) -> list[set[str]]:
    """Strongly connected components that hold a cycle (iterative Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[set[str]] = []
    for root in list(edges):
        if root in index:
            continue
        work = [(root, 0)]
        while work:
            node, child = work.pop()
            if child == 0:
                index[node] = low[node] = len(index)
                stack.append(node)
                on_stack.add(node)
            targets = [e[1] for e in edges.get(node, ())]
            if child < len(targets):
                work.append((node, child + 1))
                target = targets[child]
                if target not in index:
                    work.append((target, 0))
                elif target in on_stack:
                    low[node] = min(low[node], index[target])
                continue
            for target in targets:
                if target in on_stack:
                    low[node] = min(low[node], low[target])
            if low[node] == index[node]:
                component = _pop_component(stack, on_stack, node)
                if len(component) > 1 or node in targets:
                    found.append(component)
    return found


def _pop_component(stack: list[str], on_stack: set[str], root: str) -> set[str]:
    component = set()
    while True:
        member = stack.pop()
        on_stack.discard(member)
        component.add(member)
        if member == root:
            return component


def check_cycles(txns: Mapping[str, Txn], result: TxnResult) -> None:
    """G1c: one example cycle per strongly connected component."""
    edges = dependency_graph(txns)
    result.cycles_checked = sum(1 for t in txns.values() if t.reads and t.status == "committed")
    for component in _components(edges):
        sub = {n: [e for e in edges.get(n, ()) if e[1] in component] for n in component}
        cycle = find_cycle(sub) or []
        shown = " -> ".join(f"{a} -[{why}]-> {b}" for a, b, why in cycle[:6])
        indexes = [i for a, _b, _w in cycle for i in txns[a].op_indexes()]
        result.add("G1c", f"cycle of {len(component)} transactions: {shown}", indexes)


def check(ops: Sequence[Op], final: FinalReads) -> TxnResult:
    """Every check over one history and the final read_committed read."""
    result = TxnResult()
    txns = transactions(ops)
    writer = {str(w.value["value"]): t for t in txns.values() for w in t.writes}
    check_reads(ops, writer, result)
    check_final(ops, txns, final, result)
    check_readers(ops, final, result)
    check_processing(ops, txns, result)
    check_cycles(txns, result)
    return result
