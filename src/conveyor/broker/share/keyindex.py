"""The key-ordered mode's index: per key, its unsettled records in offset order.

Pure data structure (no clock, no I/O), owned by a :class:`~.state.ShareState`. Rules it
serves (docs/queues.md#key-ordered):

* a key's records are delivered in offset order, and only its *head* (the earliest
  unsettled record) can start a delivery: a released or expired record of a key blocks
  the later ones until it is settled;
* a key's records in flight form a prefix of its queue, all in one acquisition (one
  member): the state's decisions keep this, :meth:`KeyIndex.check` verifies it.

``ready`` is a heap of (head offset, key) candidates, validated when popped (a stale entry
is skipped), so keys are served oldest head first; ``delayed`` holds keys whose head may
not be delivered before a time. Keys are ids: a 62-bit hash of the key bytes (a collision
only makes two keys share an order, never breaks one), or ``-(offset + 1)`` for a record
without a key (each is its own key).
"""

from __future__ import annotations

import heapq
from collections import deque
from collections.abc import Callable
from typing import Final

KEY_MASK: Final = (1 << 62) - 1


def key_id(key: bytes | None, offset: int) -> int:
    if key is None:
        return -(offset + 1)
    return hash(key) & KEY_MASK


class KeyIndex:
    __slots__ = ("delayed", "queues", "ready")

    def __init__(self) -> None:
        self.queues: dict[int, deque[int]] = {}
        self.ready: list[tuple[int, int]] = []
        self.delayed: list[tuple[int, int, int]] = []

    def add(self, offset: int, key: int) -> None:
        """A record entered the window (in offset order); the caller calls :meth:`wake`
        when it may be deliverable."""
        queue = self.queues.get(key)
        if queue is None:
            self.queues[key] = deque((offset,))
            heapq.heappush(self.ready, (offset, key))
        else:
            queue.append(offset)

    def wake(self, offset: int, key: int) -> None:
        """``offset`` became available: a candidate if it heads its key."""
        queue = self.queues.get(key)
        if queue and queue[0] == offset:
            heapq.heappush(self.ready, (offset, key))

    def settle(self, offset: int, key: int) -> None:
        """``offset`` is settled: it leaves its key's queue; a new head is a candidate."""
        queue = self.queues.get(key)
        if not queue:
            return
        if queue[0] == offset:
            queue.popleft()
        else:
            try:
                queue.remove(offset)  # settled out of order: only by retention (skip)
            except ValueError:
                return
        if not queue:
            del self.queues[key]
        else:
            heapq.heappush(self.ready, (queue[0], key))

    def head(self, key: int) -> int | None:
        queue = self.queues.get(key)
        return queue[0] if queue else None

    def take(
        self,
        max_records: int,
        now_ms: int,
        deliverable: Callable[[int], bool],
        not_before: dict[int, int],
    ) -> list[int]:
        """Offsets to acquire, oldest head first: each chosen key's head and the records
        after it that are ``deliverable`` (available, not delayed), up to ``max_records``."""
        while self.delayed and self.delayed[0][0] <= now_ms:
            _, offset, key = heapq.heappop(self.delayed)
            heapq.heappush(self.ready, (offset, key))
        if len(self.ready) > 4 * len(self.queues) + 1024:  # mostly stale entries
            self.ready = [(queue[0], key) for key, queue in self.queues.items()]
            heapq.heapify(self.ready)
        taken: list[int] = []
        chosen: set[int] = set()  # the heap may hold a key twice
        ready = self.ready
        while ready and len(taken) < max_records:
            offset, key = heapq.heappop(ready)
            queue = self.queues.get(key)
            if not queue or queue[0] != offset or key in chosen or not deliverable(offset):
                continue  # stale, held (in flight) or being dead-lettered
            wait_until = not_before.get(offset, 0)
            if wait_until > now_ms:
                heapq.heappush(self.delayed, (wait_until, offset, key))
                continue
            chosen.add(key)
            for next_offset in queue:
                if (
                    len(taken) >= max_records
                    or not deliverable(next_offset)
                    or not_before.get(next_offset, 0) > now_ms
                ):
                    break
                taken.append(next_offset)
        return taken

    def next_wake_ms(self) -> int | None:
        return self.delayed[0][0] if self.delayed else None

    def drop_below(self, offset: int) -> None:
        """Retention removed every record below ``offset``."""
        for key in list(self.queues):
            queue = self.queues[key]
            while queue and queue[0] < offset:
                queue.popleft()
            if not queue:
                del self.queues[key]
            else:
                heapq.heappush(self.ready, (queue[0], key))

    def in_flight_prefix_ok(self, key: int, acquired: Callable[[int], int]) -> bool:
        """The invariant: ``key``'s acquired records (``acquired(offset)`` -> acquisition
        id, 0 when not acquired) form a prefix of its queue, all of one acquisition."""
        holder = 0
        prefix_over = False
        for offset in self.queues.get(key, ()):
            owner = acquired(offset)
            if owner:
                if prefix_over or (holder and owner != holder):
                    return False
                holder = owner
            else:
                prefix_over = True
        return True
