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
            return op

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
