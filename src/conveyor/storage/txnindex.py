"""One partition's transactions as its log shows them (issue 21): the open ones and the
aborted ones. Pure; ``PartitionLog`` feeds it every batch it appends (leader and follower
alike, since both write the same bytes) and rebuilds it from the log after opening or
truncating.

* A **transactional batch** (attribute bit 4) of a producer with no open transaction here
  opens one at its base offset.
* A **marker** (a control batch, ``protocol/txn.py``) closes the producer's open
  transaction; an ABORT marker records it as aborted: (producer id, first offset, the
  marker's offset).

The **last stable offset** (LSO) is the first offset of the oldest open transaction, or
the high watermark when it is lower: read_committed consumers read below it only, so they
never see a transaction that may still abort. With each fetch they get the aborted
transactions that overlap what they read and drop those records (as Kafka's fetch).

The aborted list lives in memory and is rebuilt from the log's tail on open
(``REBUILD_BYTES``, as the producers' state); a per-segment index file is not written yet
(docs/transactions.md).
"""

from __future__ import annotations

import bisect
from dataclasses import dataclass, field
from typing import Final

from conveyor.protocol.batch import TRANSACTIONAL_BIT, BatchHeader
from conveyor.protocol.txn import ABORT

REBUILD_BYTES: Final = 64 * 1024 * 1024
ABORTED_MAX: Final = 100_000  # aborted transactions remembered per partition (oldest go)


@dataclass(frozen=True, slots=True)
class AbortedTxn:
    producer_id: int
    first_offset: int
    last_offset: int  # the ABORT marker's offset


@dataclass(slots=True)
class TxnIndex:
    ongoing: dict[int, int] = field(default_factory=dict)  # producer id -> first offset
    aborted: list[AbortedTxn] = field(default_factory=list)  # by last_offset
    _ends: list[int] = field(default_factory=list)  # each aborted one's last_offset

    def observe(self, header: BatchHeader, marker: int | None) -> None:
        """A batch appended at ``header.base_offset``; ``marker``: its type when it is a
        transaction marker."""
        if not header.attributes & TRANSACTIONAL_BIT:
            return
        pid = header.producer_id
        if not header.is_control:
            self.ongoing.setdefault(pid, header.base_offset)
            return
        if marker is None:
            return
        first = self.ongoing.pop(pid, None)
        if marker == ABORT and first is not None:
            self.aborted.append(AbortedTxn(pid, first, header.base_offset))
            self._ends.append(header.base_offset)
            if len(self.aborted) > ABORTED_MAX:
                del self.aborted[: len(self.aborted) - ABORTED_MAX]
                del self._ends[: len(self._ends) - ABORTED_MAX]

    def first_unstable_offset(self) -> int | None:
        return min(self.ongoing.values()) if self.ongoing else None

    def last_stable_offset(self, high_watermark: int) -> int:
        first = self.first_unstable_offset()
        return high_watermark if first is None else min(first, high_watermark)

    def aborted_in(self, start: int, end: int) -> list[AbortedTxn]:
        """Aborted transactions with records in [start, end): those whose marker is at or
        after ``start`` and whose first offset is before ``end``."""
        found = []
        for aborted in self.aborted[bisect.bisect_left(self._ends, start) :]:
            if aborted.first_offset < end:
                found.append(aborted)
        return found
