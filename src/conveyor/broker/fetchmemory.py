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
    cut: int = 0  # answers cut to the floor because the budget was spent (a counter)

    def grant(self, wanted: int) -> int:
        """How many bytes the next read may return (a log read still returns at least one
        whole batch): ``wanted`` while the budget has room, less as it fills, ``floor``
        once it is spent."""
        room = self.capacity - self.held
        if wanted <= room:
            return wanted
        self.cut += 1
        return max(room, min(wanted, self.floor))

    def hold(self, size: int) -> None:
        self.held += size

    def release(self, size: int) -> None:
        self.held = max(0, self.held - size)
