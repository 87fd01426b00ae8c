"""The one manual clock of the test suite (storage, coordinator and the simulation)."""

from __future__ import annotations

TIMESTAMP_MS = 1_700_000_000_000  # a fixed "now" for record timestamps


class ManualClock:
    """Milliseconds that move only when a test says so.

    Satisfies both clock shapes of the code: a ``Clock`` (``now_ms()``, the services and
    the simulation) and a ``clock_ms`` callable (``PartitionLog.open(clock_ms=...)``)."""

    def __init__(self, now_ms: int = TIMESTAMP_MS) -> None:
        self.now = now_ms

    def now_ms(self) -> int:
        return self.now

    def __call__(self) -> int:
        return self.now

    def advance(self, ms: int) -> None:
        self.now += ms
