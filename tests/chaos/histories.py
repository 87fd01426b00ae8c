"""What the chaos tests share: a history builder for the checkers' hand-built histories."""

from __future__ import annotations

from typing import Any, Self

from conveyor.chaos.history import Op, OpType


class HistoryBuilder:
    """Ops get indexes and 1 ms ticks in order (op ``n`` at ``n`` ms); each checker's test
    adds the op shapes of its workload."""

    def __init__(self) -> None:
        self.ops: list[Op] = []

    @property
    def now(self) -> int:
        """The next op's time, ns."""
        return len(self.ops) * 1_000_000

    def add(self, process: str, type_: OpType, f: str, value: dict[str, Any] | None = None) -> Self:
        self.ops.append(Op(len(self.ops), process, type_, f, value or {}, time_ns=self.now))
        return self
