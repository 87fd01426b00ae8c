"""The history of a chaos run: every operation as an invoke followed by its outcome.

Like Jepsen's histories, each operation is recorded twice: ``invoke`` when a process starts
it, then ``ok`` (it happened), ``fail`` (it definitely did not happen: the broker answered
so) or ``info`` (unknown: a timeout, a crash; it may or may not have happened). Values are
plain data so that the checker stays pure and a history can be written to and read from a
JSON-lines file for replay and inspection.

Operation functions (``f``):

- ``send``: value ``{"key", "value"}``; on ok, also ``{"partition", "offset"}``.
- ``poll``: ok value ``{"records": [[partition, offset, key, value], ...]}``.
- ``commit``: value ``{"offsets": {partition: offset}}`` (next offset to read).
- ``rebalance``: ok value ``{"partitions": [...]}``: the consumer's assignment changed.
- ``fault`` / ``heal``: nemesis events, value ``{"fault": name, ...}``.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Final, Literal

OpType = Literal["invoke", "ok", "fail", "info"]
OP_TYPES: Final = ("invoke", "ok", "fail", "info")


@dataclass(frozen=True)
class Op:
    """One history entry. ``process`` names the client (``producer-0``, ``consumer-1.2``:
    member 1 in its third incarnation, ``nemesis``); ``time_ns`` is monotonic since start."""

    index: int
    process: str
    type: OpType
    f: str
    value: dict[str, Any] = field(default_factory=dict)
    time_ns: int = 0
    error: str | None = None


class History:
    """A thread-safe, append-only list of :class:`Op`; indexes are assigned in order."""

    def __init__(self) -> None:
        self._ops: list[Op] = []
        self._lock = threading.Lock()
        self._recorded = threading.Condition(self._lock)
        self._start_ns = time.monotonic_ns()

    def record(
        self,
        process: str,
        type_: OpType,
        f: str,
        value: dict[str, Any] | None = None,
        error: str | None = None,
        *,
        monotonic_ns: int | None = None,
    ) -> Op:
        """``monotonic_ns``: when it happened, if not now (a child process's report:
        CLOCK_MONOTONIC is the machine's, the same in every process)."""
        with self._lock:
            op = Op(
                index=len(self._ops),
                process=process,
                type=type_,
                f=f,
                value=value or {},
                time_ns=(monotonic_ns or time.monotonic_ns()) - self._start_ns,
                error=error,
            )
            self._ops.append(op)
            self._recorded.notify_all()
            return op

    def wait_for_each(self, needed: Mapping[str, str], timeout_s: float) -> list[str]:
        """Wait until each member of ``needed`` (member -> an op ``f``) has had that op
        answer ok in one of its incarnations (``consumer-1.2`` is member ``consumer-1``),
        at most ``timeout_s``; the members that have not (none: all have)."""
        left = dict(needed)
        seen = 0

        def done() -> bool:
            nonlocal seen
            for op in self._ops[seen:]:  # each op looked at once: this runs per record
                member = op.process.partition(".")[0]
                if op.type == "ok" and left.get(member) == op.f:
                    del left[member]
            seen = len(self._ops)
            return not left

        with self._recorded:
            self._recorded.wait_for(done, timeout_s)
        return sorted(left)

    def ops(self) -> list[Op]:
        with self._lock:
            return list(self._ops)

    def dump(self, path: Path) -> None:
        with path.open("w") as out:
            for op in self.ops():
                out.write(json.dumps(asdict(op)) + "\n")


def load(path: Path) -> list[Op]:
    """Read a history written by :meth:`History.dump`."""
    ops = []
    with path.open() as lines:
        for line in lines:
            raw = json.loads(line)
            ops.append(Op(**raw))
    return ops
