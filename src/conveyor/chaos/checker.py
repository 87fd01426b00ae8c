"""The checker: pure functions from (history, final log reads) to anomaly counts.

The anomalies are named as in Jepsen's Kafka workload so that results compare:

========================  ==========================================================  ======
name                      meaning                                                     kind
========================  ==========================================================  ======
lost                      an acknowledged send missing from the final read            safety
inconsistent-offsets      two values at one (partition, offset): ack vs log, poll     safety
                          vs log
aborted-read (G1a)        a send that definitely failed became visible                safety
poll-skip                 a consumer jumped over offsets present in the log           safety
nonmonotonic-poll         a consumer went back or repeated an offset, no rebalance    safety
duplicated                the same value stored at two offsets (idempotence)          safety
reordered                 per key, log order differs from acknowledged send order     safety
stale-read                a poll returned an offset the final log does not have        safety
                          (beyond the high watermark, or later truncated)
replica-divergence        two replicas' files hold different values at one offset     safety
corrupt-replica           a replica's files still hold a batch failing its CRC        safety
                          after every fault healed (not detected, or not repaired)
compaction-lost           on the compacted topic, a key's latest acknowledged value   safety
                          (or a later one) is missing from the final read, or a
                          value is not at the offset it was acknowledged at
unseen                    acknowledged, in the log, but never polled by any consumer  report
double-delivery           one value delivered again to another consumer (member or    report*
                          incarnation) after the group committed past it
                          (*a safety failure in a run that crashed no consumer)
redelivered               delivered again, explained: no commit covered it yet        report
                          (a crash or rebalance before commit)
========================  ==========================================================  ======

Values are ``"{key}:{sequence}"``; each key belongs to one producer process, which sends
its values one at a time in sequence order, so acknowledged order is sequence order.
Sends to the compacted topic are ops ``csend`` (same values); compaction may remove any
value but each key's latest, so only that one is checked (``check_compacted``).
A final read maps each partition to its records ``(offset, key, value)`` in offset order.
Nothing here does I/O or reads a clock: the harness passes everything in.
"""

from __future__ import annotations

import itertools
from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Final

from conveyor.chaos.history import Op

SAFETY: Final = (
    "lost",
    "inconsistent-offsets",
    "aborted-read",
    "poll-skip",
    "nonmonotonic-poll",
    "duplicated",
    "reordered",
    "stale-read",
    "replica-divergence",
    "corrupt-replica",
    "two-active-coordinators",  # chaos/ha.py: a deposed coordinator acted (runs with --ha)
    "compaction-lost",
)
REPORTED: Final = ("unseen", "double-delivery", "redelivered")
EXAMPLES_MAX: Final = 5

FinalRecord = tuple[int, str | None, str | None]  # offset, key, value
FinalReads = Mapping[int, Sequence[FinalRecord]]


@dataclass(frozen=True)
class Replica:
    """One replica's files after the run: its records and any CRC/format problems found."""

    partition: int
    broker: int
    records: Sequence[FinalRecord]
    problems: Sequence[str] = ()


@dataclass(frozen=True)
class Example:
    """One anomaly instance: what happened and the history entries that show it."""

    anomaly: str
    description: str
    op_indexes: tuple[int, ...]


@dataclass
class Findings:
    """Anomaly counts and the first :data:`EXAMPLES_MAX` examples of each (every
    checker's result: this one's, :mod:`conveyor.chaos.txn_checker`'s)."""

    counts: dict[str, int] = field(default_factory=dict)
    examples: list[Example] = field(default_factory=list)

    def add(self, anomaly: str, description: str, op_indexes: Iterable[int] = ()) -> None:
        self.counts[anomaly] += 1
        if sum(1 for e in self.examples if e.anomaly == anomaly) < EXAMPLES_MAX:
            self.examples.append(Example(anomaly, description, tuple(op_indexes)))


@dataclass
class Result(Findings):
    sends: dict[str, int] = field(default_factory=lambda: dict.fromkeys(("ok", "fail", "info"), 0))
    polls_ok: int = 0
    commits_ok: int = 0
    availability: float = 1.0
    availability_during_faults: float | None = None
    recovery_ms: list[float] = field(default_factory=list)
    # per fault (its id): the longest time no send completed ok while it was active
    stall_ms: dict[str, float] = field(default_factory=dict)
    consumer_faults: bool = False  # a consumer was crashed: double deliveries may happen
    # the anomalies this workload checks (chaos/queue_checker.py has its own)
    safety: tuple[str, ...] = SAFETY
    reported: tuple[str, ...] = REPORTED

    def __post_init__(self) -> None:
        for name in self.safety + self.reported:
            self.counts.setdefault(name, 0)

    @property
    def failed(self) -> list[str]:
        """The anomalies that make the run invalid: every safety count above 0, and
        double-delivery too when no consumer was crashed."""
        names = list(self.safety) + ([] if self.consumer_faults else ["double-delivery"])
        return [name for name in names if self.counts.get(name, 0) > 0]

    @property
    def valid(self) -> bool:
        return not self.failed


@dataclass(frozen=True)
class _Send:
    invoke: Op
    outcome: Op | None  # None: the run ended first, which counts as info

    @property
    def type(self) -> str:
        return "info" if self.outcome is None else self.outcome.type


def pair_sends(ops: Sequence[Op], f: str = "send") -> dict[str, _Send]:
    """Each sent value with its invoke and outcome; a process does one op at a time."""
    pending: dict[str, Op] = {}
    sends: dict[str, _Send] = {}
    for op in ops:
        if op.f != f:
            continue
        if op.type == "invoke":
            pending[op.process] = op
            sends[op.value["value"]] = _Send(op, None)
        elif op.process in pending:
            invoke = pending.pop(op.process)
            sends[invoke.value["value"]] = _Send(invoke, op)
    return sends


def parse_value(value: str) -> tuple[str, int]:
    key, _, sequence = value.rpartition(":")
    return key, int(sequence)


def log_index(final: FinalReads) -> dict[str, list[tuple[int, int]]]:
    where: dict[str, list[tuple[int, int]]] = defaultdict(list)
    for partition, records in final.items():
        for offset, _key, value in records:
            if value is not None:
                where[value].append((partition, offset))
    return where


def _polled(ops: Sequence[Op]) -> Iterable[tuple[Op, int, int, str | None]]:
    for op in ops:
        if op.f == "poll" and op.type == "ok":
            for partition, offset, _key, value in op.value.get("records", ()):
                yield op, partition, offset, value


def check_writes(ops: Sequence[Op], final: FinalReads, result: Result) -> None:
    """lost, aborted-read, inconsistent-offsets (acks), duplicated, reordered."""
    sends = pair_sends(ops)
    where = log_index(final)
    at = {(p, o): v for p, records in final.items() for o, _k, v in records}
    polled_values = {value for _op, _p, _o, value in _polled(ops)}
    for value, send in sends.items():
        result.sends[send.type] += 1
        indexes = (send.invoke.index,) + (() if send.outcome is None else (send.outcome.index,))
        if send.type == "ok" and value not in where:
            result.add("lost", f"{value} acknowledged but not in the final read", indexes)
        if send.type == "fail" and (value in where or value in polled_values):
            result.add("aborted-read", f"{value} failed definitely but is visible", indexes)
        if send.type == "ok" and send.outcome is not None and "offset" in send.outcome.value:
            position = (send.outcome.value["partition"], send.outcome.value["offset"])
            if position in at and at[position] != value:
                result.add(
                    "inconsistent-offsets",
                    f"{value} acknowledged at {position}, the log has {at[position]} there",
                    indexes,
                )
    for value, positions in where.items():
        if len(positions) > 1:
            ops_of = _indexes_of(sends.get(value))
            result.add("duplicated", f"{value} stored at {sorted(positions)}", ops_of)
    _check_order(final, sends, result)


def _indexes_of(send: _Send | None) -> tuple[int, ...]:
    if send is None:
        return ()
    return (send.invoke.index,) + (() if send.outcome is None else (send.outcome.index,))


def _check_order(final: FinalReads, sends: Mapping[str, _Send], result: Result) -> None:
    for partition, records in final.items():
        highest: dict[str, tuple[int, str]] = {}
        for offset, _key, value in records:
            send = sends.get(value) if value is not None else None
            if value is None or send is None or send.type != "ok":
                continue
            key, sequence = parse_value(value)
            before = highest.get(key)
            if before is not None and before[0] > sequence:
                result.add(
                    "reordered",
                    f"key {key} partition {partition}: {value} at offset {offset} after "
                    f"{before[1]}, acknowledged later",
                    _indexes_of(send) + _indexes_of(sends.get(before[1])),
                )
            if before is None or sequence > before[0]:
                highest[key] = (sequence, value)


def check_polls(ops: Sequence[Op], final: FinalReads, result: Result) -> None:
    """poll-skip, nonmonotonic-poll, inconsistent-offsets (polls), stale-read, unseen,
    double-delivery and redelivered."""
    at = {(p, o): v for p, records in final.items() for o, _k, v in records}
    rank = {(p, o): i for p, records in final.items() for i, (o, _k, _v) in enumerate(records)}
    last: dict[tuple[str, int], tuple[int, int]] = {}  # (process, partition) -> offset, op
    delivered: dict[str, tuple[str, int]] = {}  # value -> first process, its poll op
    result.polls_ok = sum(op.f == "poll" and op.type == "ok" for op in ops)
    result.commits_ok = sum(op.f == "commit" and op.type == "ok" for op in ops)
    for op, partition, offset, value, committed in _polls(ops, last):
        position = (partition, offset)
        if position not in at:
            result.add("stale-read", f"{op.process} read {value} at {position}", (op.index,))
        elif at[position] != value:
            result.add(
                "inconsistent-offsets",
                f"{op.process} read {value} at {position}, the log has {at[position]}",
                (op.index,),
            )
        before = last.get((op.process, partition))
        if before is not None:
            previous, previous_op = before
            if offset <= previous:
                result.add(
                    "nonmonotonic-poll",
                    f"{op.process} partition {partition}: offset {offset} after {previous}",
                    (previous_op, op.index),
                )
            elif _skipped(rank, partition, previous, offset):
                result.add(
                    "poll-skip",
                    f"{op.process} partition {partition}: jumped {previous} -> {offset}",
                    (previous_op, op.index),
                )
        last[(op.process, partition)] = (offset, op.index)
        if value is None:
            continue
        first = delivered.setdefault(value, (op.process, op.index))
        if first[0] == op.process:
            continue  # the same consumer again: nonmonotonic-poll says so
        if committed.get(partition, -1) > offset:
            result.add(
                "double-delivery",
                f"{op.process} got {value} at {position} after {first[0]} did and the group "
                f"had committed offset {committed[partition]}",
                (first[1], op.index),
            )
        else:
            result.counts["redelivered"] += 1
    in_log = log_index(final)
    for value, send in pair_sends(ops).items():
        if send.type == "ok" and value not in delivered and value in in_log:
            result.counts["unseen"] += 1


Committed = Mapping[int, int]  # partition -> the group's highest committed offset


def _polls(
    ops: Sequence[Op], last: dict[tuple[str, int], tuple[int, int]]
) -> Iterable[tuple[Op, int, int, str | None, Committed]]:
    """Polled records in history order, each with the group's committed offsets as they
    were when that poll was invoked. A rebalance of a process forgets its positions (it may
    legitimately move back or forward after one)."""
    committed: dict[int, int] = {}
    at_invoke: dict[str, Committed] = {}
    for op in ops:
        if op.f == "rebalance" and op.type == "ok":
            for key in [k for k in last if k[0] == op.process]:
                del last[key]
        elif op.f == "commit" and op.type == "ok":
            for partition, offset in op.value.get("offsets", {}).items():
                committed[int(partition)] = max(committed.get(int(partition), -1), offset)
        elif op.f == "poll" and op.type == "invoke":
            at_invoke[op.process] = dict(committed)
        elif op.f == "poll" and op.type == "ok":
            snapshot = at_invoke.get(op.process, {})
            for partition, offset, _key, value in op.value.get("records", ()):
                yield op, partition, offset, value, snapshot


def _skipped(
    rank: Mapping[tuple[int, int], int], partition: int, previous: int, offset: int
) -> bool:
    """Whether offsets present in the final log lie strictly between the two polls."""
    a, b = rank.get((partition, previous)), rank.get((partition, offset))
    if a is None or b is None:
        return offset > previous + 1
    return b > a + 1


def check_availability(ops: Sequence[Op], result: Result) -> None:
    """Fraction of sends that succeeded, overall and while a fault was active, and the time
    from each heal to the first later send that succeeded."""
    windows: list[tuple[int, int | None]] = []
    named: list[tuple[str, int, int]] = []
    open_since: dict[str, int] = {}
    heals: list[int] = []
    for op in ops:
        if op.process != "nemesis" or op.type != "ok":
            continue
        name = str(op.value.get("id", op.value.get("fault", "")))
        if op.f == "fault":
            open_since[name] = op.time_ns
        elif op.f == "heal":
            start = open_since.pop(name, op.time_ns)
            windows.append((start, op.time_ns))
            named.append((name, start, op.time_ns))
            heals.append(op.time_ns)
    windows += [(start, None) for start in open_since.values()]
    sends = [s for s in pair_sends(ops).values()]
    completed = [s for s in sends if s.outcome is not None]
    if completed:
        result.availability = sum(s.type == "ok" for s in completed) / len(completed)
    during = [s for s in completed if _inside(s.invoke.time_ns, windows)]
    if during:
        result.availability_during_faults = sum(s.type == "ok" for s in during) / len(during)
    ok_times = sorted(s.outcome.time_ns for s in completed if s.outcome and s.type == "ok")
    for heal in heals:
        later = next((t for t in ok_times if t >= heal), None)
        if later is not None:
            result.recovery_ms.append((later - heal) / 1e6)
    for name, start, end in named:
        inside = [start, *(t for t in ok_times if start <= t <= end), end]
        result.stall_ms[name] = max(b - a for a, b in itertools.pairwise(inside)) / 1e6


def _inside(time_ns: int, windows: Sequence[tuple[int, int | None]]) -> bool:
    return any(start <= time_ns and (end is None or time_ns <= end) for start, end in windows)


def check_replicas(replicas: Sequence[Replica], result: Result) -> None:
    """replica-divergence: two replicas of a partition disagree at an offset both hold (a
    shorter replica is only behind); corrupt-replica: a replica still has a bad batch."""
    by_partition: dict[int, list[Replica]] = defaultdict(list)
    for replica in replicas:
        by_partition[replica.partition].append(replica)
        for problem in replica.problems:
            result.add(
                "corrupt-replica", f"partition {replica.partition} broker {replica.broker}: "
                f"{problem}",
            )  # fmt: skip
    for partition, group in sorted(by_partition.items()):
        values: dict[int, tuple[int, str | None]] = {}
        for replica in sorted(group, key=lambda r: r.broker):
            for offset, _key, value in replica.records:
                seen = values.setdefault(offset, (replica.broker, value))
                if seen[1] != value:
                    result.add(
                        "replica-divergence",
                        f"partition {partition} offset {offset}: broker {seen[0]} has "
                        f"{seen[1]}, broker {replica.broker} has {value}",
                    )


def check_compacted(ops: Sequence[Op], compacted: FinalReads, result: Result) -> None:
    """compaction-lost: per key of the compacted topic, the final read's last value must
    be the latest acknowledged one or a later send (acknowledged or not: an unanswered
    send may have been written), and an acknowledged value still in the log must sit at
    the offset it was acknowledged at (compaction keeps offsets)."""
    sends = pair_sends(ops, "csend")
    latest: dict[str, tuple[int, _Send]] = {}
    for value, send in sends.items():
        key, sequence = parse_value(value)
        if send.type == "ok" and sequence >= latest.get(key, (-1, send))[0]:
            latest[key] = (sequence, send)
    last: dict[str, int] = {}  # key -> the sequence of its last value in the log
    at: dict[tuple[int, int], str] = {}
    for partition, records in compacted.items():
        for offset, _key, stored in records:
            if stored is not None:
                key, sequence = parse_value(stored)
                last[key] = sequence
                at[(partition, offset)] = stored
    for key, (sequence, send) in sorted(latest.items()):
        found = last.get(key)
        if found is None or found < sequence:
            shown = "nothing" if found is None else f"{key}:{found}"
            result.add(
                "compaction-lost",
                f"{key}:{sequence} acknowledged last, the compacted log ends with {shown}",
                _indexes_of(send),
            )
    for value, send in sends.items():
        if send.type != "ok" or send.outcome is None or "offset" not in send.outcome.value:
            continue
        position = (send.outcome.value["partition"], send.outcome.value["offset"])
        if position in at and at[position] != value:
            result.add(
                "compaction-lost",
                f"{value} acknowledged at {position}, the compacted log has {at[position]}",
                _indexes_of(send),
            )


def check(
    ops: Sequence[Op],
    final: FinalReads,
    replicas: Sequence[Replica] = (),
    coordinator_problems: Sequence[str] = (),
    compacted: FinalReads | None = None,
) -> Result:
    """Every check over one history, the final read of every partition and, when given,
    every replica's files read after the cluster stopped, the "two active coordinators"
    findings of ``chaos/ha.py`` over the coordinators' logs and the compacted topic's
    final read."""
    result = Result()
    for problem in coordinator_problems:
        result.add("two-active-coordinators", problem)
    result.consumer_faults = "kill-consumer" in injected_faults(ops)
    check_writes(ops, final, result)
    check_polls(ops, final, result)
    check_replicas(replicas, result)
    check_availability(ops, result)
    if compacted is not None:
        check_compacted(ops, compacted, result)
    return result


def injected_faults(ops: Iterable[Op]) -> set[str]:
    """The kinds of fault the nemesis injected (its ``fault`` ops that succeeded)."""
    return {
        op.value.get("fault", "")
        for op in ops
        if op.process == "nemesis" and op.f == "fault" and op.type == "ok"
    }


def context(ops: Sequence[Op], example: Example, radius: int = 2) -> list[Op]:
    """The minimal history around an anomaly: its ops, the ops of the same processes just
    before them, and the nemesis events active around them."""
    wanted: set[int] = set()
    for index in example.op_indexes:
        wanted.update(range(max(0, index - radius), min(len(ops), index + radius + 1)))
    if example.op_indexes:
        first = min(example.op_indexes)
        faults = [op.index for op in ops[:first] if op.process == "nemesis"]
        wanted.update(faults[-2:])
    return [ops[i] for i in sorted(wanted)]
