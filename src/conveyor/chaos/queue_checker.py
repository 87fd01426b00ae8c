"""The queue workload's checker: pure functions from (history, final log read) to anomalies.

The history is described in :mod:`conveyor.chaos.queue_workload`. Acquisitions (the last
part of a lock token) are numbered by the share-partition in the order it makes them, and
a new leader continues the persisted numbering, so within one (group, partition) they order
deliveries without any clock; the few rules that compare times use the machine's one
monotonic clock, a call's invoke time as the earliest and its answer time as the latest
moment the broker can have acted on it.

Safety (any count above 0 makes the run invalid), besides the stream checks that still
apply to the producers (``lost``, ``duplicated``, ``reordered``, replicas, ...):

=============================  =============================================================
queue-lost                     a record of the log that a group settled (below its final
                               start offset) was neither accepted (an accept confirmed, or
                               sent without an answer) nor dead-lettered
redelivered-after-ack          a record acquired again (a higher acquisition) after an accept
                               or reject of it was confirmed
double-settle                  two confirmed accepts/rejects of one record, by different locks
key-order                      ``key_ordered`` group, one key: a record delivered while an
                               earlier record of the key was unsettled and outside that
                               delivery's lock (acquired after it, or its settlement confirmed
                               later), or a record settled after a later one's settlement was
                               confirmed
dlq-missing                    a confirmed reject, or a confirmed release of a delivery at
                               the attempt limit, with no dead letter
dlq-duplicate                  one record dead-lettered twice by one group
dlq-header                     a dead letter whose headers, key or value do not match its
                               source (group, topic, partition, offset, delivery count,
                               reason)
accepted-and-dead-lettered     a confirmed accept of a dead-lettered record
delivered-after-dead-letter    a delivery count above the dead letter's
inconsistent-delivery          a delivered value that is not the log's at that offset
=============================  =============================================================

Reported: ``unsettled`` (records not settled when the run ended: a liveness finding),
``redelivered`` (deliveries with a count above 1), ``ack-refused``, ``ack-unknown``,
``dead-lettered`` (dead letters read), ``dlq-unread`` (the reader did not catch up: the
dead-letter checks were skipped).

Key order, precisely: the share-partition keeps each key's unsettled records in offset
order; only a key's earliest unsettled record (its head) starts an acquisition, which takes
it and the deliverable records after it. So an acquisition ``a`` that holds record ``o``
of key ``k`` and whose earliest record of ``k`` is ``h`` proves that every record of ``k``
before ``h`` was settled when ``a`` was made: none of them may be acquired later (a higher
acquisition) nor have a settlement confirmed that was sent after ``a`` was received; and a
confirmed settlement of ``o`` proves every record of ``k`` before ``o`` was settled first.
"""

from __future__ import annotations

import bisect
from collections import defaultdict
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Final, TypeVar

from conveyor.chaos import checker
from conveyor.chaos.checker import FinalReads, Replica, Result
from conveyor.chaos.history import Op
from conveyor.chaos.queue_workload import (
    GROUPS,
    MAX_DELIVERY_ATTEMPTS,
    REJECT_PREFIX,
    dead_letter_topic,
)
from conveyor.chaos.workload import TOPIC
from conveyor.protocol.share import (
    DLQ_HEADER_DELIVERY_COUNT,
    DLQ_HEADER_ERROR,
    DLQ_HEADER_GROUP,
    DLQ_HEADER_OFFSET,
    DLQ_HEADER_PARTITION,
    DLQ_HEADER_TOPIC,
)

QUEUE_SAFETY: Final = (
    "queue-lost",
    "redelivered-after-ack",
    "double-settle",
    "key-order",
    "dlq-missing",
    "dlq-duplicate",
    "dlq-header",
    "accepted-and-dead-lettered",
    "delivered-after-dead-letter",
    "inconsistent-delivery",
)
# the stream checks that apply to the producers and replicas of a queue run
STREAM_SAFETY: Final = (
    "lost",
    "inconsistent-offsets",
    "aborted-read",
    "duplicated",
    "reordered",
    "replica-divergence",
    "corrupt-replica",
    "two-active-coordinators",
)
SAFETY: Final = STREAM_SAFETY + QUEUE_SAFETY
REPORTED: Final = (
    "unsettled",
    "redelivered",
    "ack-refused",
    "ack-unknown",
    "dead-lettered",
    "dlq-unread",
)
SETTLES: Final = frozenset(("accept", "reject"))
T = TypeVar("T")
K = TypeVar("K")

Position = tuple[int, int]  # partition, offset


@dataclass(frozen=True)
class Delivery:
    group: str
    process: str
    partition: int
    offset: int
    key: str | None
    value: str | None
    count: int
    acquisition: int
    op: int  # the receive op's index
    t0: int  # the receive call's start
    t: int  # its return


@dataclass(frozen=True)
class Ack:
    group: str
    process: str
    partition: int
    offset: int
    type: str  # accept, release, reject
    acquisition: int
    reason: str | None
    outcome: str  # ok (confirmed), fail (refused), info (unknown)
    ops: tuple[int, ...]  # the commit's invoke and outcome indexes
    t0: int  # commit invoked
    t: int | None  # commit answered (ok only)


@dataclass(frozen=True)
class DeadLetter:
    group: str
    key: str | None
    value: str | None
    headers: Mapping[str, str | None]
    op: int


@dataclass
class Parsed:
    deliveries: list[Delivery] = field(default_factory=list)
    acks: list[Ack] = field(default_factory=list)
    dead_letters: list[DeadLetter] = field(default_factory=list)
    settled_below: dict[str, dict[int, int]] | None = None  # group -> partition -> start
    dlq_caught_up: bool = False
    dlq_behind: list[str] = field(default_factory=list)  # the partitions it had not read


def acquisition_of(token: str) -> int:
    return int(token.rsplit(":", 1)[1])


def parse(ops: Sequence[Op]) -> Parsed:
    out = Parsed()
    pending: dict[str, Op] = {}  # process -> its commit invoke without an outcome yet
    for op in ops:
        if op.f == "receive" and op.type == "ok":
            out.deliveries += _deliveries(op)
        elif op.f == "commit" and op.type == "invoke":
            if op.process in pending:
                out.acks += _acks(pending.pop(op.process), None)
            pending[op.process] = op
        elif op.f == "commit" and op.process in pending:
            out.acks += _acks(pending.pop(op.process), op)
        elif op.f == "dlq" and op.type == "ok":
            group = op.value["group"]
            for _p, _o, key, value, headers in op.value["records"]:
                out.dead_letters.append(DeadLetter(group, key, value, headers, op.index))
        elif op.f == "dlq-end" and op.type == "ok":
            out.dlq_caught_up = bool(op.value.get("caught_up"))
            out.dlq_behind = [str(b) for b in op.value.get("behind", [])]
        elif op.f == "drain" and op.type == "ok":
            out.settled_below = {
                g: {int(p): int(s) for p, s in starts.items()}
                for g, starts in op.value.get("start", {}).items()
            }
    for invoke in pending.values():  # the process died or the run ended first
        out.acks += _acks(invoke, None)
    return out


def _deliveries(op: Op) -> list[Delivery]:
    v = op.value
    return [
        Delivery(
            v["group"],
            op.process,
            p,
            o,
            key,
            value,
            count,
            acquisition_of(token),
            op.index,
            v["t0"],
            v["t"],
        )
        for p, o, key, value, count, token in v["records"]
    ]


def _acks(invoke: Op, outcome: Op | None) -> list[Ack]:
    refused: list[list[Any]] = []
    if outcome is not None and outcome.type == "ok":
        refused = outcome.value.get("refused", [])
    kind_of = "ok" if outcome is not None and outcome.type == "ok" else "info"
    ops = (invoke.index,) + (() if outcome is None else (outcome.index,))
    t = outcome.value.get("t") if outcome is not None and kind_of == "ok" else None
    out = []
    for p, o, kind, token, reason in invoke.value["acks"]:
        was_refused = any(
            rp == p and first <= o <= last and rkind == kind
            for rp, first, last, rkind, _error in refused
        )
        out.append(
            Ack(
                invoke.value["group"],
                invoke.process,
                p,
                o,
                kind,
                acquisition_of(token),
                reason,
                "fail" if was_refused else kind_of,
                ops,
                invoke.value["t0"],
                t,
            )
        )
    return out


def check(
    ops: Sequence[Op],
    final: FinalReads,
    replicas: Sequence[Replica] = (),
    coordinator_problems: Sequence[str] = (),
    compacted: FinalReads | None = None,
) -> Result:
    """Every check of a queue run (the signature of :func:`checker.check`)."""
    result = Result(safety=SAFETY, reported=REPORTED)
    for problem in coordinator_problems:
        result.add("two-active-coordinators", problem)
    checker.check_writes(ops, final, result)
    checker.check_replicas(replicas, result)
    checker.check_availability(ops, result)
    if compacted is not None:
        checker.check_compacted(ops, compacted, result)
    parsed = parse(ops)
    result.polls_ok = sum(op.f == "receive" and op.type == "ok" for op in ops)
    result.commits_ok = sum(op.f == "commit" and op.type == "ok" for op in ops)
    check_queue(parsed, final, result)
    return result


def check_queue(parsed: Parsed, final: FinalReads, result: Result) -> None:
    log = {(p, o): (k, v) for p, records in final.items() for o, k, v in records}
    for group, mode in GROUPS.items():
        deliveries = [d for d in parsed.deliveries if d.group == group]
        acks = [a for a in parsed.acks if a.group == group]
        letters = [d for d in parsed.dead_letters if d.group == group]
        _check_deliveries(deliveries, log, result)
        _check_acks(deliveries, acks, result)
        dead = _check_dead_letters(group, deliveries, acks, letters=letters, log=log, result=result)
        if not parsed.dlq_caught_up:
            behind = [b for b in parsed.dlq_behind if b.startswith(dead_letter_topic(group) + "[")]
            result.add("dlq-unread", f"{group}: the dead-letter reader did not catch up {behind}")
        else:
            _check_dlq_missing(deliveries, acks, dead, result)
        _check_settled(group, parsed.settled_below, acks, dead=dead, final=final, result=result)
        if mode == "key_ordered":
            check_key_order(deliveries, acks, result)


def _check_deliveries(
    deliveries: Sequence[Delivery], log: Mapping[Position, tuple[str | None, str | None]],
    result: Result,
) -> None:  # fmt: skip
    for d in deliveries:
        if d.count > 1:
            result.counts["redelivered"] += 1
        stored = log.get((d.partition, d.offset))
        if stored is None or stored[1] != d.value:
            result.add(
                "inconsistent-delivery",
                f"{d.group}: {d.process} got {d.value!r} at {d.partition}:{d.offset}, the log "
                f"has {None if stored is None else stored[1]!r}",
                (d.op,),
            )


def _check_acks(deliveries: Sequence[Delivery], acks: Sequence[Ack], result: Result) -> None:
    """redelivered-after-ack and double-settle; counts refused and unknown outcomes."""
    latest = _top(deliveries, _position, lambda d: d.acquisition)
    confirmed: dict[Position, Ack] = {}
    for ack in acks:
        if ack.outcome == "fail":
            result.counts["ack-refused"] += 1
        elif ack.outcome == "info":
            result.counts["ack-unknown"] += 1
        if ack.outcome != "ok" or ack.type not in SETTLES:
            continue
        position = (ack.partition, ack.offset)
        before = confirmed.setdefault(position, ack)
        if before.acquisition != ack.acquisition:
            result.add(
                "double-settle",
                f"{ack.group} {position}: {before.type} by lock {before.acquisition} and "
                f"{ack.type} by lock {ack.acquisition} both confirmed",
                before.ops + ack.ops,
            )
        later = latest.get(position)
        if later is not None and later.acquisition > ack.acquisition:
            result.add(
                "redelivered-after-ack",
                f"{ack.group} {position}: {ack.type} by lock {ack.acquisition} confirmed, "
                f"delivered again to {later.process} by lock {later.acquisition} "
                f"(delivery {later.count})",
                (*ack.ops, later.op),
            )


def _check_dead_letters(
    group: str, deliveries: Sequence[Delivery], acks: Sequence[Ack], *,
    letters: Sequence[DeadLetter], log: Mapping[Position, tuple[str | None, str | None]],
    result: Result,
) -> dict[Position, DeadLetter]:  # fmt: skip
    """dlq-header, dlq-duplicate, accepted-and-dead-lettered, delivered-after-dead-letter;
    the dead letters by source position."""
    by_source: dict[Position, DeadLetter] = {}
    max_count = _top(deliveries, _position, lambda d: d.count)
    rejects: dict[Position, set[int]] = defaultdict(set)  # delivery counts of rejects sent
    count_of = {(d.partition, d.offset, d.acquisition): d.count for d in deliveries}
    accepted: dict[Position, Ack] = {}
    for ack in acks:
        position = (ack.partition, ack.offset)
        if ack.type == "reject" and ack.outcome != "fail":
            rejects[position].add(count_of.get((*position, ack.acquisition), -1))
        if ack.type == "accept" and ack.outcome == "ok":
            accepted[position] = ack
    for letter in letters:
        result.counts["dead-lettered"] += 1
        problem, source = _header_problem(group, letter, log, rejects)
        if problem is not None:
            result.add("dlq-header", f"{group}: {problem}", (letter.op,))
        if source is None:
            continue
        position = source
        if position in by_source:
            result.add(
                "dlq-duplicate",
                f"{group} {position} dead-lettered twice",
                (by_source[position].op, letter.op),
            )
            continue
        by_source[position] = letter
        if position in accepted:
            result.add(
                "accepted-and-dead-lettered",
                f"{group} {position}: accept confirmed, and dead-lettered",
                (*accepted[position].ops, letter.op),
            )
        count = _int(letter.headers.get(DLQ_HEADER_DELIVERY_COUNT))
        top = max_count.get(position)
        if top is not None and count is not None and top.count > count:
            result.add(
                "delivered-after-dead-letter",
                f"{group} {position}: dead-lettered at delivery {count}, delivered to "
                f"{top.process} as delivery {top.count}",
                (letter.op, top.op),
            )
    return by_source


def _header_problem(
    group: str, letter: DeadLetter, log: Mapping[Position, tuple[str | None, str | None]],
    rejects: Mapping[Position, set[int]],
) -> tuple[str | None, Position | None]:  # fmt: skip
    h = letter.headers
    partition, offset = _int(h.get(DLQ_HEADER_PARTITION)), _int(h.get(DLQ_HEADER_OFFSET))
    if partition is None or offset is None:
        return f"dead letter {letter.value!r} without a source partition/offset: {h}", None
    position = (partition, offset)
    if h.get(DLQ_HEADER_GROUP) != group or h.get(DLQ_HEADER_TOPIC) != TOPIC:
        return f"{position}: group/topic headers {h}", position
    stored = log.get(position)
    if stored is None or stored != (letter.key, letter.value):
        return (
            f"{position}: dead letter {letter.key}={letter.value}, the log has {stored}",
            position,
        )
    return _reason_problem(letter, position, rejects), position


def _reason_problem(
    letter: DeadLetter, position: Position, rejects: Mapping[Position, set[int]]
) -> str | None:
    """A rejected record's reason and delivery count are the reject's; any other dead
    letter (releases, lock expiries) had the limit's delivery count."""
    count = _int(letter.headers.get(DLQ_HEADER_DELIVERY_COUNT))
    error = letter.headers.get(DLQ_HEADER_ERROR) or ""
    if error.startswith(REJECT_PREFIX):
        if error != REJECT_PREFIX + (letter.value or ""):
            return f"{position}: reason {error!r} names another record"
        if count not in rejects.get(position, set()):
            sent = sorted(rejects.get(position, set()))
            return f"{position}: rejected at delivery {count}, rejects sent at {sent}"
    elif count != MAX_DELIVERY_ATTEMPTS:
        return (
            f"{position}: dead-lettered ({error!r}) at delivery {count}, the limit is "
            f"{MAX_DELIVERY_ATTEMPTS}"
        )
    return None


def _check_dlq_missing(
    deliveries: Sequence[Delivery], acks: Sequence[Ack], dead: Mapping[Position, DeadLetter],
    result: Result,
) -> None:  # fmt: skip
    count_of = {(d.partition, d.offset, d.acquisition): d.count for d in deliveries}
    for ack in acks:
        position = (ack.partition, ack.offset)
        if ack.outcome != "ok" or position in dead:
            continue
        count = count_of.get((*position, ack.acquisition), 0)
        if ack.type == "reject" or (ack.type == "release" and count >= MAX_DELIVERY_ATTEMPTS):
            result.add(
                "dlq-missing",
                f"{ack.group} {position}: {ack.type} of delivery {count} confirmed, no dead letter",
                ack.ops,
            )


def _check_settled(
    group: str, settled_below: Mapping[str, Mapping[int, int]] | None, acks: Sequence[Ack], *,
    dead: Mapping[Position, DeadLetter], final: FinalReads, result: Result,
) -> None:  # fmt: skip
    """queue-lost and unsettled (only once the run drained: ``settled_below`` known)."""
    if settled_below is None:
        return
    starts = settled_below.get(group, {})
    accepted = {(a.partition, a.offset) for a in acks if a.type == "accept" and a.outcome != "fail"}
    for partition, records in final.items():
        start = starts.get(partition, 0)
        for offset, _key, value in records:
            position = (partition, offset)
            if offset >= start:
                result.counts["unsettled"] += 1
            elif position not in accepted and position not in dead:
                result.add(
                    "queue-lost",
                    f"{group} {position} ({value}) settled (start offset {start}) but neither "
                    "accepted nor dead-lettered",
                )


def check_key_order(deliveries: Sequence[Delivery], acks: Sequence[Ack], result: Result) -> None:
    """The key-order rules of the module docstring, per (partition, key)."""
    by_key: dict[tuple[int, str], list[Delivery]] = defaultdict(list)
    for d in deliveries:
        if d.key is not None:
            by_key[(d.partition, d.key)].append(d)
    key_of = {(d.partition, d.offset): d.key for d in deliveries}
    settles: dict[tuple[int, str], list[Ack]] = defaultdict(list)
    for ack in acks:
        key = key_of.get((ack.partition, ack.offset))
        if key is not None and ack.outcome == "ok" and ack.type in SETTLES:
            settles[(ack.partition, key)].append(ack)
    for where, group in by_key.items():
        _key_order_of(where, group, settles.get(where, []), result)


def _key_order_of(
    where: tuple[int, str], deliveries: Sequence[Delivery], settles: Sequence[Ack],
    result: Result,
) -> None:  # fmt: skip
    partition, key = where
    offsets = sorted({d.offset for d in deliveries})
    # offset -> its latest acquisition; offset -> its confirmed settlement sent last
    top_acquisition = _top(deliveries, lambda d: d.offset, lambda d: d.acquisition)
    last_sent = _top(settles, lambda a: a.offset, lambda a: a.t0)
    # prefix maxima over the key's offsets in order: the latest acquisition and the latest
    # confirmed settlement sent among the records before each index
    acq_max = _prefix_max(offsets, lambda o: top_acquisition[o].acquisition)
    sent_max = _prefix_max(offsets, lambda o: last_sent[o].t0 if o in last_sent else -1)

    def acquired_after(before: int, acquisition: int) -> Delivery | None:
        """The record before index ``before`` acquired last, if after ``acquisition``."""
        late = acq_max[before]
        return top_acquisition[late[1]] if late is not None and late[0] > acquisition else None

    def sent_after(before: int, t: int) -> Ack | None:
        """The confirmed settlement before index ``before`` sent last, if after ``t``."""
        sent = sent_max[before]
        return last_sent[sent[1]] if sent is not None and sent[0] > t else None

    heads: dict[int, int] = {}  # acquisition -> its earliest offset of this key
    for d in deliveries:
        heads[d.acquisition] = min(heads.get(d.acquisition, d.offset), d.offset)
    for d in deliveries:
        before = bisect.bisect_left(offsets, heads[d.acquisition])  # records before the head
        if (earlier := acquired_after(before, d.acquisition)) is not None:
            result.add(
                "key-order",
                f"{d.group} key {key} partition {partition}: {earlier.offset} acquired by lock "
                f"{earlier.acquisition} ({earlier.process}) after lock {d.acquisition} took "
                f"{d.offset} without it ({d.process})",
                (d.op, earlier.op),
            )
        if (ack := sent_after(before, d.t)) is not None:
            result.add(
                "key-order",
                f"{d.group} key {key} partition {partition}: {ack.offset} settled by "
                f"{ack.process} (sent after {d.process} received {d.offset} without it)",
                (d.op, *ack.ops),
            )
    for ack in settles:  # a confirmed settlement: every earlier record was settled before
        assert ack.t is not None
        before = bisect.bisect_left(offsets, ack.offset)
        if (other := sent_after(before, ack.t)) is not None:
            result.add(
                "key-order",
                f"{ack.group} key {key} partition {partition}: {other.offset} settled by "
                f"{other.process} after {ack.offset}'s settlement was confirmed",
                ack.ops + other.ops,
            )
        if (earlier := acquired_after(before, ack.acquisition)) is not None:
            result.add(
                "key-order",
                f"{ack.group} key {key} partition {partition}: {earlier.offset} acquired by "
                f"lock {earlier.acquisition} after {ack.offset} was settled by lock "
                f"{ack.acquisition}",
                (*ack.ops, earlier.op),
            )


def _position(item: Delivery | Ack) -> Position:
    return (item.partition, item.offset)


def _top(items: Iterable[T], where: Callable[[T], K], score: Callable[[T], int]) -> dict[K, T]:
    """Per ``where(item)``: the item of the highest ``score`` (the first one of a tie)."""
    out: dict[K, T] = {}
    for item in items:
        at = where(item)
        if at not in out or score(item) > score(out[at]):
            out[at] = item
    return out


def _prefix_max(
    offsets: Sequence[int], score: Callable[[int], int]
) -> list[tuple[int, int] | None]:
    """``out[i]``: (the highest score, its offset) among ``offsets[:i]`` (None if none)."""
    out: list[tuple[int, int] | None] = [None]
    best: tuple[int, int] | None = None
    for offset in offsets:
        value = score(offset)
        if value >= 0 and (best is None or value > best[0]):
            best = (value, offset)
        out.append(best)
    return out


def _int(text: str | None) -> int | None:
    try:
        return None if text is None else int(text)
    except ValueError:
        return None


def summary(ops: Iterable[Op]) -> dict[str, int]:
    """Counts for a run's report line: deliveries, acknowledgements, dead letters."""
    parsed = parse(list(ops))
    return {
        "deliveries": len(parsed.deliveries),
        "acks": len(parsed.acks),
        "dead_letters": len(parsed.dead_letters),
    }
