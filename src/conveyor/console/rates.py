"""Per-second rates from counters sampled when pages are drawn (pure: ``now_ms`` passed).

The console computes messages per second from two readings of a monotonic count (a
topic's summed log end offsets, a broker's messages-in counter): the first reading of a
key gives no rate; a later one gives (count delta) / (time delta), at most once per
``min_gap_ms`` so that two users polling at once do not make a rate over 5 ms. A count
that went down (a broker restarted, a topic re-created) starts over.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final

KEYS_MAX: Final = 100_000  # bounds memory: past it the table starts over


@dataclass(frozen=True, slots=True)
class _Sample:
    at_ms: int
    count: int
    rate: float | None


class RateTable:
    def __init__(self, min_gap_ms: int = 1_000) -> None:
        self.min_gap_ms = min_gap_ms
        self._samples: dict[str, _Sample] = {}

    def rate(self, key: str, count: int, now_ms: int) -> float | None:
        """Messages per second for ``key`` given its count now; None until known."""
        previous = self._samples.get(key)
        if previous is None or count < previous.count:
            if len(self._samples) >= KEYS_MAX:
                self._samples.clear()
            self._samples[key] = _Sample(now_ms, count, None)
            return None
        gap_ms = now_ms - previous.at_ms
        if gap_ms < self.min_gap_ms:
            return previous.rate
        rate = (count - previous.count) * 1000.0 / gap_ms
        self._samples[key] = _Sample(now_ms, count, rate)
        return rate
