"""How far ahead a queue member fetches (``QueueCore.receive``'s prefetch): pure."""

from __future__ import annotations

import math
from typing import Final

PREFETCH_DEPTH_MAX: Final = 4  # batches (of the caller's max_records) fetched ahead at most
PREFETCH_RECORDS_MAX: Final = 500  # ... and records beyond one batch
SMOOTHING: Final = 0.2  # weight of a new sample in the round-trip and per-record averages


class PrefetchPacing:
    """How many records to keep fetched ahead: enough for the application to work on
    while the next receive makes its round trip, as librdkafka keeps
    ``queued.min.messages`` ahead. ``target(max_records)`` is ``max_records`` plus the
    round trip (smoothed, from receives that brought records) divided by the application's
    time per record (smoothed, between its receive calls), at most
    ``PREFETCH_DEPTH_MAX * max_records`` and ``PREFETCH_RECORDS_MAX`` (or one batch, if
    larger: members taking thousands a receive then still share a topic fairly). A member
    working 5 ms a record against 200 ms round trips keeps 4 batches of 10 ahead, where one
    batch left it waiting 150 ms in every 200 (``conveyor bench queue``,
    docs/benchmarks.md#queues); one working slower than a round trip per record keeps one
    batch, so fetched records never wait long in their locks."""

    __slots__ = ("_handed", "_handed_at_s", "record_s", "rtt_s")

    def __init__(self) -> None:
        self.rtt_s: float | None = None
        self.record_s: float | None = None
        self._handed = 0
        self._handed_at_s = 0.0

    def round_trip(self, seconds: float) -> None:
        self.rtt_s = _smoothed(self.rtt_s, seconds)

    def receive_called(self, now_s: float) -> None:
        """The application asks again: it worked on the last records since they came."""
        if self._handed:
            self.record_s = _smoothed(self.record_s, (now_s - self._handed_at_s) / self._handed)
        self._handed = 0

    def handed_out(self, records: int, now_s: float) -> None:
        self._handed, self._handed_at_s = records, now_s

    def target(self, max_records: int) -> int:
        rtt_s, record_s = self.rtt_s, self.record_s
        if rtt_s is None or record_s is None:
            return max_records
        ahead = max_records + math.ceil(rtt_s / max(record_s, 1e-6) - 1e-6)
        cap = max(max_records, min(PREFETCH_DEPTH_MAX * max_records, PREFETCH_RECORDS_MAX))
        return min(ahead, cap)


def _smoothed(old: float | None, sample: float) -> float:
    return sample if old is None else old + SMOOTHING * (sample - old)
