"""A broker-wide budget for fetch answers: bytes read from the log and not yet written.

A consumer that stops reading its socket holds its answer in the broker's memory until
the write deadline closes the connection. Without a budget, many such consumers hold a
full ``max_bytes`` answer each and the broker's memory grows with them (Kafka avoids this
with ``sendfile``; NATS with its slow-consumer limits). With it, answers beyond the budget
are cut to ``floor`` bytes (still at least one whole batch, so every fetch makes progress):
fetches keep being answered, and what stuck connections hold past the budget is one small
answer each, for at most the write deadline.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final

FLOOR_BYTES: Final = 64 * 1024


@dataclass(slots=True)
class FetchMemory:
    capacity: int
    floor: int = FLOOR_BYTES
    held: int = 0
    cut: int = 0  # answers whose read limit the budget lowered (a counter, one per answer)

    def grant(self, wanted: int) -> int:
        """How many bytes the next read may return (a log read still returns at least one
        whole batch): ``wanted`` while the budget has room, less as it fills, ``floor``
        once it is spent. Counts nothing: a long poll asks again while it waits, and an
        answer is counted once, by :meth:`hold`."""
        room = self.capacity - self.held
        if wanted <= room:
            return wanted
        return max(room, min(wanted, self.floor))

    def hold(self, size: int, *, wanted: int = 0, granted: int = 0) -> None:
        """An answer of ``size`` bytes is being written; it counts as cut (once) when the
        budget lowered its read limit: its last grant was below what was asked."""
        self.held += size
        if granted < wanted:
            self.cut += 1

    def release(self, size: int) -> None:
        self.held = max(0, self.held - size)
