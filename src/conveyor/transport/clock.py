"""The one clock a service shell reads: monotonic milliseconds, anchored to wall time.

Every decision in Conveyor takes ``now_ms`` as an argument; only a shell reads a clock, and
each shell reads exactly one, injected through its constructor (tests and the simulation
pass a manual clock instead). Storage keeps the wall clock for what is about wall time
(record timestamps, retention by age).
"""

from __future__ import annotations

import time
from typing import Protocol


class Clock(Protocol):
    def now_ms(self) -> int: ...


class SystemClock:
    """Monotonic milliseconds anchored to the wall clock at start.

    Expiry needs a clock that never jumps (an NTP step must not kill every broker); people
    reading ``last_heartbeat_ms`` want something close to wall time. Both hold here.
    """

    def __init__(self) -> None:
        self._wall_ms = time.time_ns() // 1_000_000
        self._mono_ns = time.monotonic_ns()

    def now_ms(self) -> int:
        return self._wall_ms + (time.monotonic_ns() - self._mono_ns) // 1_000_000
