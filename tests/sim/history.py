"""What the clients saw, and the guarantees checked against it after every step.

* **no acknowledged write lost**: a leader's log agrees with every acknowledged write
  below its high watermark, and at the end every acknowledged write is in the final log;
* **one leader per partition epoch**: no two live brokers lead the same partition at the
  same leader epoch;
* **the high watermark never goes back** while a broker leads a partition at one epoch;
* **no consumer reads above the high watermark, nor data later truncated**: what a
  consumer read is what the leaders hold below their high watermark, now and at the end;
* **replicas converge after healing**: once faults stop, every replica of a partition
  holds the same batches;
* **idempotent producers never duplicate**: a value appears at most once in a log.

Checks are incremental (each leader's log is verified once per offset and epoch), so
checking after every step stays cheap.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field

from conveyor.protocol.replica import TopicPartition


class InvariantError(Exception):
    """A guarantee broken: the simulation stops at the step that broke it."""

    def __init__(self, kind: str, message: str) -> None:
        super().__init__(f"{kind}: {message}")
        self.kind = kind
        self.message = message

    def __reduce__(self) -> tuple[type[InvariantError], tuple[str, str]]:
        # results travel from worker processes pickled; the default would call
        # InvariantError(text) and fail, taking the whole pool down with it
        return InvariantError, (self.kind, self.message)


@dataclass
class History:
    # (tp, offset) -> value, from the producers' acknowledgements and the consumers' reads
    acked: dict[tuple[TopicPartition, int], bytes] = field(default_factory=dict)
    consumed: dict[tuple[TopicPartition, int], bytes] = field(default_factory=dict)
    values_by_crc: dict[int, bytes] = field(default_factory=dict)
    sent: int = 0
    failed: int = 0  # produces given up (outcome unknown)
    epoch_leaders: dict[tuple[TopicPartition, int], int] = field(default_factory=dict)
    # (broker, incarnation, tp, epoch) -> (high watermark, offsets verified below it)
    leaders: dict[tuple[int, int, TopicPartition, int], tuple[int, int]] = field(
        default_factory=dict
    )

    def expect(self, tp: TopicPartition, offset: int) -> bytes | None:
        value = self.acked.get((tp, offset))
        return value if value is not None else self.consumed.get((tp, offset))

    def ack(self, tp: TopicPartition, offset: int, value: bytes) -> None:
        self._record(self.acked, "acknowledged", tp, offset, value)

    def consume(self, tp: TopicPartition, offset: int, value: bytes) -> None:
        self._record(self.consumed, "consumed", tp, offset, value)

    def _record(
        self,
        table: dict[tuple[TopicPartition, int], bytes],
        what: str,
        tp: TopicPartition,
        offset: int,
        value: bytes,
    ) -> None:
        known = self.expect(tp, offset)
        if known is not None and known != value:
            raise InvariantError(
                "acknowledged write lost" if what == "acknowledged" else "consumer read lost data",
                f"{tp} offset {offset}: {what} {value!r}, but {known!r} was seen there before",
            )
        table[(tp, offset)] = value


Entries = list[tuple[int, int, bytes]]  # (base offset, last offset, value) of stored batches


def check_one_leader_per_epoch(
    history: History, broker: int, tp: TopicPartition, epoch: int
) -> None:
    """No two brokers ever lead ``tp`` at the same epoch (the coordinator gives each epoch
    one leader, so this holds over the whole run, not only between live brokers)."""
    other = history.epoch_leaders.setdefault((tp, epoch), broker)
    if other != broker:
        raise InvariantError(
            "two leaders in one epoch", f"{tp} epoch {epoch}: brokers {other} and {broker}"
        )


def check_leader(
    history: History,
    key: tuple[int, int, TopicPartition, int],
    hw: int,
    entries: Callable[[int, int], Entries],
) -> None:
    """A leader ``key`` = (broker, incarnation, tp, epoch) with high watermark ``hw``:
    it never went back, and its log below it agrees with what was acknowledged or read
    (``entries(start, end)`` lists its batches holding offsets in [start, end))."""
    broker, _, tp, epoch = key
    previous_hw, verified = history.leaders.get(key, (0, 0))
    if hw < previous_hw:
        raise InvariantError(
            "high watermark went back",
            f"{tp} leader b{broker} epoch {epoch}: {previous_hw} -> {hw}",
        )
    if hw > verified:
        for base, last, value in entries(verified, hw):
            for offset in range(max(base, verified), min(last + 1, hw)):
                expected = history.expect(tp, offset)
                if expected is not None and expected != value:
                    raise InvariantError(
                        "acknowledged write lost",
                        f"{tp} leader b{broker} epoch {epoch} holds {value!r} at {offset} "
                        f"below its high watermark {hw}; {expected!r} was acknowledged or read",
                    )
    history.leaders[key] = (hw, max(verified, hw))


def check_final(
    history: History, logs: dict[TopicPartition, list[list[tuple[int, int, bytes]]]]
) -> None:
    """After healing: replicas identical, nothing acknowledged or read missing, no value
    twice. ``logs[tp]``: each replica's entries (base, last, value), for every partition
    the coordinator has; a partition written or read that it no longer has is lost."""
    seen = {tp for tp, _ in history.acked} | {tp for tp, _ in history.consumed}
    for tp in sorted(seen - set(logs)):
        raise InvariantError("partition lost", f"{tp} was written or read; the cluster forgot it")
    for tp, replicas in logs.items():
        first = replicas[0]
        for other in replicas[1:]:
            if other != first:
                raise InvariantError(
                    "replicas did not converge",
                    f"{tp}: {len(first)} vs {len(other)} batches "
                    f"(first difference at {_first_difference(first, other)})",
                )
        held = {offset: value for base, last, value in first for offset in range(base, last + 1)}
        for (acked_tp, offset), value in sorted(history.acked.items()):
            if acked_tp == tp and held.get(offset) != value:
                raise InvariantError(
                    "acknowledged write lost",
                    f"{tp} offset {offset}: {value!r} acknowledged, {held.get(offset)!r} kept",
                )
        for (read_tp, offset), value in sorted(history.consumed.items()):
            if read_tp == tp and held.get(offset) != value:
                raise InvariantError(
                    "consumer read lost data",
                    f"{tp} offset {offset}: {value!r} read, {held.get(offset)!r} kept",
                )
        counts = Counter(value for _, _, value in first)
        twice = [value for value, count in counts.items() if count > 1]
        if twice:
            raise InvariantError("idempotent producer duplicated", f"{tp}: {sorted(twice)[:5]}")


def _first_difference(a: list[tuple[int, int, bytes]], b: list[tuple[int, int, bytes]]) -> str:
    for left, right in zip(a, b, strict=False):
        if left != right:
            return f"{left} vs {right}"
    return f"offset {min(len(a), len(b))} (one is longer)"
