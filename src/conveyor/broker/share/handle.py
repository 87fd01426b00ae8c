"""The shell around one share-partition on the leader of its data partition.

It loads the state (a fenced read from the share-state store, then the data log read
again for keys, gaps and not-before times), feeds decisions, persists their operations
and wakes receivers. Persistence is a pipeline with one write in flight: operations of
decisions made meanwhile go out together in the next delta (group commit), and a caller's
answer waits for the write holding its operations. A failed write leaves the in-memory
state ahead of the store: the handle is marked broken and rebuilt from the store on next
use (the store is the truth). A snapshot goes with every ``DELTA_SLOTS``-th delta.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Final, Protocol

from conveyor.broker.share import decide, window
from conveyor.broker.share.delivery import DecodedCache, answer_bytes
from conveyor.broker.share.state import ShareState, replay
from conveyor.broker.share.store import DELTA_SLOTS, SNAPSHOT_SLOT, delta_slot
from conveyor.protocol.errors import ConveyorError, OffsetOutOfRangeError
from conveyor.protocol.messages import SharePartitionStats
from conveyor.protocol.share import (
    Op,
    Range,
    ShareGroupConfig,
    ShareGroupInfo,
    StateDelta,
    StateEntry,
    StateSnapshot,
    decode_state,
    encode_state,
    share_key,
)

log = logging.getLogger(__name__)

READ_CHUNK_BYTES: Final = 1024 * 1024


class DataLog(Protocol):
    @property
    def log_start_offset(self) -> int: ...


class DataPartition(Protocol):
    """What a share-partition needs of its data partition's local leader replica."""

    @property
    def leader_epoch(self) -> int: ...

    @property
    def high_watermark(self) -> int: ...

    @property
    def is_leader(self) -> bool: ...

    @property
    def log(self) -> DataLog: ...

    def read(self, offset: int, max_bytes: int, upper_offset: int | None) -> bytes: ...

    def wakeup(self) -> asyncio.Future[None]:
        """Resolved at the partition's next change (new data visible, a role change): take
        it before looking, so no wake-up is missed (``broker/wakeup.py``)."""
        ...


class StateClient(Protocol):
    async def read(self, key: bytes, epoch: int) -> list[bytes]: ...

    async def write(self, key: bytes, epoch: int, entries: list[StateEntry]) -> None: ...


@dataclass(frozen=True, slots=True)
class Context:
    """The narrow dependencies every handle shares."""

    data_partition: Callable[[str, int], Awaitable[DataPartition]]
    state: StateClient
    now_ms: Callable[[], int]


def _fire(event: asyncio.Event) -> asyncio.Event:
    event.set()
    return asyncio.Event()


class ShareHandle:
    def __init__(self, group: str, topic: str, partition: int, context: Context) -> None:
        self.group = group
        self.topic = topic
        self.partition = partition
        self.key = b""  # share_key(...) of the group incarnation loaded
        self._context = context
        self.state: ShareState | None = None
        self.config = ShareGroupConfig()
        self.config_version = 0
        self.epoch = -1
        self.data: DataPartition | None = None
        self.broken = False
        self.changed = asyncio.Event()
        self._load_lock = asyncio.Lock()
        self._pending: list[Op] = []
        self._waiters: list[asyncio.Future[None]] = []
        self._in_flight: list[asyncio.Future[None]] = []  # the waiters of the write under way
        self._writing = False
        self.dead_letter_task: asyncio.Task[None] | None = None
        self.cache = DecodedCache()  # decoded batches, for sparse answers (delivery.py)

    @property
    def label(self) -> str:
        return f"share-partition {self.group}/{self.topic}-{self.partition}"

    def wake(self) -> None:
        self.changed = _fire(self.changed)

    def current(self, data: DataPartition, info: ShareGroupInfo) -> bool:
        return (
            self.state is not None
            and not self.broken
            and data.is_leader
            and data.leader_epoch == self.epoch
            and self.config.mode == info.config.mode
            and info.version <= self.config_version
            and self.key == share_key(self.group, self.topic, self.partition, info.created_ms)
        )

    async def ready(self, info: ShareGroupInfo) -> ShareState:
        """The loaded state (loading or reloading it first when needed)."""
        data = await self._context.data_partition(self.topic, self.partition)
        if self.current(data, info) and self.state is not None:
            self.config, self.config_version = info.config, max(info.version, self.config_version)
            return self.state
        async with self._load_lock:
            data = await self._context.data_partition(self.topic, self.partition)
            if not (self.current(data, info) and self.state is not None):
                await self._load(data, info)
            assert self.state is not None
            return self.state

    async def _load(self, data: DataPartition, info: ShareGroupInfo) -> None:
        self.state = None
        self.cache.clear()
        config = info.config
        self.key = share_key(self.group, self.topic, self.partition, info.created_ms)
        epoch = data.leader_epoch
        values = await self._context.state.read(self.key, epoch)
        records = [decode_state(v) for v in values]
        state = replay(config.mode, [r for r in records if not _is_fence(r)])  # type: ignore[misc]
        if state is None:
            start = data.log.log_start_offset
            if config.start_from == "latest":
                start = data.high_watermark
            state = ShareState(config.mode, start)
            snapshot = StateEntry(SNAPSHOT_SLOT, encode_state(state.snapshot(epoch)))
            await self._context.state.write(self.key, epoch, [snapshot])
            log.info("%s: new, from offset %d (%s)", self.label, start, config.start_from)
        else:
            log.info(
                "%s: loaded at leader epoch %d: start %d, %d in flight, %d dead-lettering",
                self.label,
                epoch,
                state.start,
                state.states.count(1),
                sum(len(e) for e in state.dead_letters.values()),
            )
        self.state, self.epoch, self.data = state, epoch, data
        self.config, self.config_version = config, info.version
        self.broken = False
        self._pending, self._waiters = [], []
        self.refill()
        self.wake()

    # ---- persistence ---------------------------------------------------------------------

    def submit(self, ops: list[Op]) -> asyncio.Future[None]:
        """Persist ``ops`` (already applied); the future resolves once they are durable."""
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        if not ops:
            future.set_result(None)
            return future
        self._pending.extend(ops)
        self._waiters.append(future)
        if not self._writing:
            self._writing = True
            asyncio.get_running_loop().create_task(self._flush(), name=f"share-write {self.key!r}")
        return future

    async def _flush(self) -> None:
        try:
            while self._pending and self.state is not None:
                ops, waiters = self._pending, self._waiters
                self._pending, self._waiters = [], []
                self._in_flight = waiters  # durable() may still join this write
                state = self.state
                state.seq += 1
                delta = StateDelta(seq=state.seq, epoch=self.epoch, ops=ops)
                entries = [StateEntry(delta_slot(state.seq), encode_state(delta))]
                if state.seq % DELTA_SLOTS == 0:
                    snapshot = state.snapshot(self.epoch)
                    entries.append(StateEntry(SNAPSHOT_SLOT, encode_state(snapshot)))
                try:
                    await self._context.state.write(self.key, self.epoch, entries)
                except ConveyorError as exc:
                    self._fail(waiters + self._waiters, exc)
                    return
                for waiter in waiters:
                    if not waiter.done():
                        waiter.set_result(None)
        finally:
            self._writing = False
            self._in_flight = []

    def durable(self) -> asyncio.Future[None]:
        """Resolves once every operation submitted so far is durable (or fails with the
        write): a dead-letter batch is written only after the operation that numbered
        it, or a new leader that never saw that operation would number other records
        the same and the dead-letter topic would drop them as a duplicate."""
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        if self._pending:
            self._waiters.append(future)
        elif self._writing:
            self._in_flight.append(future)
        else:
            future.set_result(None)
        return future

    def _fail(self, waiters: list[asyncio.Future[None]], exc: ConveyorError) -> None:
        log.warning("%s: state write failed, reloading on next use: %s", self.label, exc)
        self.broken = True
        self._pending, self._waiters = [], []
        for waiter in waiters:
            if not waiter.done():
                waiter.set_exception(exc)
        self.wake()

    def drop(self, why: str) -> None:
        """Leadership moved (or the group went): forget the state; waiters fail."""
        if self.state is not None:
            log.info("%s: dropped (%s)", self.label, why)
        self.state = None
        self.broken = True
        if self.dead_letter_task is not None:
            self.dead_letter_task.cancel()
        self.wake()

    # ---- the data log --------------------------------------------------------------------

    def refill(self) -> bool:
        """Read records into the window while it has room; settle (and persist) what
        retention removed. True when the window grew."""
        state, data = self.state, self.data
        if state is None or data is None:
            return False
        end = state.end
        ops: list[Op] = []
        key_ordered = self.config.mode == "key_ordered"
        for _ in range(64):  # bounded: each round reads up to 1 MiB
            room = decide.window_room(state, self.config)
            high_watermark = data.high_watermark
            if room <= 0 or state.end >= high_watermark:
                break
            try:
                chunk = data.read(state.end, READ_CHUNK_BYTES, high_watermark)
            except OffsetOutOfRangeError as exc:
                ops += decide.skip_to(state, exc.log_start_offset)
                log.warning("%s: retention removed records below %d", self.label, state.start)
                continue
            if not chunk:
                break
            limit = state.start + self.config.window_records_max
            for span in window.scan(chunk, key_ordered, self.cache.put):
                if span.first >= limit:
                    break
                state.extend(span)
        if ops:
            self.submit(ops)
        return state.end != end

    def batches_for(self, ranges: list[Range]) -> bytes:
        """What a member gets for ``ranges`` (``delivery.answer_bytes``)."""
        data = self.data
        if data is None or not ranges:
            return b""
        return answer_bytes(lambda o, m: data.read(o, m, None), ranges, self.cache)

    # ---- views ---------------------------------------------------------------------------

    def stats(self, now_ms: int) -> SharePartitionStats | None:
        state = self.state
        if state is None:
            return None
        counts = state.counts_by_state()
        oldest = state.oldest_acquired_deadline_ms()
        age = None
        if oldest is not None:
            age = max(0, now_ms - (oldest - self.config.lock_duration_ms))
        return SharePartitionStats(
            group=self.group,
            topic=self.topic,
            partition=self.partition,
            start_offset=state.start,
            end_offset=state.end,
            in_flight=counts["acquired"],
            available=counts["available"],
            acknowledged=counts["acked"],
            archived=counts["archived"],
            dead_lettering=counts["dead"],
            oldest_in_flight_age_ms=age,
            leader_epoch=self.epoch,
        )


def _is_fence(record: object) -> bool:
    return not isinstance(record, StateSnapshot | StateDelta)
