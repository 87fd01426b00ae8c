"""One partition's open transactions as its log shows them (issue 21). Pure;
``PartitionLog`` feeds it every batch it appends (leader and follower alike, since both
write the same bytes) and rebuilds it after opening or truncating (``txnrecovery.py``).

* A **transactional batch** (attribute bit 4) of a producer with no open transaction here
  opens one at its base offset.
* A **marker** (a control batch, ``protocol/txn.py``) closes the producer's open
  transaction; an ABORT marker answers it as aborted: (producer id, first offset, the
  marker's offset, the last stable offset just after it), which ``PartitionLog`` writes
  to the active segment's aborted-transaction index (``abortindex.py``).

The **last stable offset** (LSO) is the first offset of the oldest open transaction, or
the high watermark when it is lower: read_committed consumers read below it only, so they
never see a transaction that may still abort. With each fetch they get the aborted
transactions that overlap what they read (from the segments' indexes) and drop those
records (as Kafka's fetch).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from conveyor.protocol.batch import TRANSACTIONAL_BIT, BatchHeader
from conveyor.protocol.txn import ABORT
from conveyor.storage.abortindex import AbortedTxn

__all__ = ["AbortedTxn", "TxnIndex"]


@dataclass(slots=True)
class TxnIndex:
    ongoing: dict[int, int] = field(default_factory=dict)  # producer id -> first offset

    def observe(self, header: BatchHeader, marker: int | None) -> AbortedTxn | None:
        """A batch appended at ``header.base_offset``; ``marker``: its type when it is a
        transaction marker. Returns the aborted transaction an ABORT marker ends."""
        if not header.attributes & TRANSACTIONAL_BIT:
            return None
        pid = header.producer_id
        if not header.is_control:
            self.ongoing.setdefault(pid, header.base_offset)
            return None
        if marker is None:
            return None
        first = self.ongoing.pop(pid, None)
        if marker != ABORT or first is None:
            return None
        stable = self.first_unstable_offset()
        end = header.base_offset + 1
        return AbortedTxn(pid, first, header.base_offset, end if stable is None else stable)

    def first_unstable_offset(self) -> int | None:
        return min(self.ongoing.values()) if self.ongoing else None

    def last_stable_offset(self, high_watermark: int) -> int:
        first = self.first_unstable_offset()
        return high_watermark if first is None else min(first, high_watermark)
