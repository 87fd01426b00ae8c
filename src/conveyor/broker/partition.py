"""One hosted partition replica: its log, its role and epoch, its high watermark, and the
wake-ups that long-poll fetches and ``acks=all`` produces wait on.

Lives on the event loop thread. The log's appends and reads are page-cache work done
inline; fsyncs happen on the shared Flusher's threads and come back as futures whose
callbacks hop onto the loop (``call_soon_threadsafe``) to advance the high watermark.
Nothing here blocks on the disk.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import time
from collections.abc import Iterator
from concurrent.futures import Future
from dataclasses import dataclass

from conveyor.broker import producers as producer_state
from conveyor.broker.reconcile import ReplicaState, Role, TopicPartition
from conveyor.broker.rules import dedup_decision, high_watermark, isr_change_for_follower
from conveyor.protocol.errors import (
    ConveyorError,
    DiskFullError,
    ErrorCode,
    InvalidRequestError,
    LogTruncatedError,
    RetriableError,
)
from conveyor.protocol.messages import BrokerId, Epoch, HostedPartition, PartitionReport
from conveyor.storage import AppendResult, PartitionLog

log = logging.getLogger(__name__)

FETCH_FRESHNESS_MS = 3000  # a follower rejoins the ISR only if it fetched this recently
# After an append failed for lack of space, the log counts as failed (reported to the
# coordinator, which moves leadership away, and not fetched as a follower) until its
# filesystem has this much free again; checked at most once a second.
DISK_FREE_TO_RESUME_BYTES = 16 * 1024 * 1024
_DISK_CHECK_INTERVAL_S = 1.0


@dataclass(slots=True)
class FollowerProgress:
    """What the leader knows of one follower, from its replica fetches (Kafka's
    ``Replica`` state). ``last_caught_up_ms`` follows Kafka's rule: the time of a fetch that
    reached the leader's log end, or of the previous fetch when this one reached what the
    log end was then (a steadily written partition is never "caught up" at arrival)."""

    log_end_offset: int = 0
    durable_offset: int = 0
    last_caught_up_ms: float = 0.0
    last_fetch_leader_end: int = 0
    last_fetch_ms: float = 0.0


class Partition:
    def __init__(
        self,
        tp: TopicPartition,
        broker_id: BrokerId,
        log_: PartitionLog,
        state: ReplicaState,
        producers: producer_state.Producers | None = None,
    ) -> None:
        self.tp = tp
        # Idempotent producers' last batches (leader and followers alike, see producers.py).
        self.producers: producer_state.Producers = producers or {}
        self.broker_id = broker_id
        self.log = log_
        self.state = state
        # The followers' progress, from their replication fetches (leader only).
        self.followers: dict[BrokerId, FollowerProgress] = {}
        self.leader_since_ms = 0.0
        # An ISR change sent to the coordinator and not answered yet (Kafka's pending
        # "maximal ISR"): a member being added counts for the high watermark at once.
        self.pending_isr: tuple[BrokerId, ...] = ()
        self.failure: ConveyorError | None = None
        self.disk_full = False  # the last append found no space (see log_failed)
        self._disk_checked_at = 0.0
        self.closed = False
        self.reopening = False
        self._loop = asyncio.get_running_loop()
        self._high_watermark = 0
        # One event per kind of change, replaced after each set: a broadcast to every
        # waiter of that moment, with no busy polling and no lost wake-ups. A role change,
        # a failure or shutdown fires both.
        self._hw_advanced = asyncio.Event()
        self._appended = asyncio.Event()
        if state.role == "leader":
            self._became_leader()
        self.refresh_high_watermark()

    # ---- state ---------------------------------------------------------------------------

    @property
    def role(self) -> Role:
        return self.state.role

    @property
    def leader_epoch(self) -> int:
        return self.state.leader_epoch

    @property
    def is_leader(self) -> bool:
        return self.state.role == "leader" and not self.closed and not self.reopening

    @property
    def high_watermark(self) -> int:
        return self._high_watermark

    def apply(self, state: ReplicaState) -> None:
        """Take a new role, epoch or replica set (from reconciliation or AlterIsr)."""
        new_leadership = state.leader_epoch != self.state.leader_epoch or (
            state.role != self.state.role
        )
        if new_leadership or state.partition_epoch > self.state.partition_epoch:
            # The coordinator's state moved past any ISR change this leader had pending.
            self.pending_isr = ()
        if new_leadership:
            # A new epoch starts the followers' progress afresh: they report again.
            self.followers.clear()
        self.state = state
        if new_leadership and state.role == "leader":
            self._became_leader()
        self.refresh_high_watermark()
        self._wake_all()

    def _became_leader(self) -> None:
        self.leader_since_ms = self._loop.time() * 1000
        if self.state.leader_epoch >= 0 and not self.closed:
            # Where this epoch starts, before any follower asks (KIP-101).
            self.log.assign_epoch(self.state.leader_epoch)

    @property
    def follower_durable_offsets(self) -> dict[BrokerId, int]:
        return {broker: p.durable_offset for broker, p in self.followers.items()}

    def replicating_isr(self) -> tuple[BrokerId, ...]:
        """The ISR members whose durable offsets bound the high watermark: Kafka's
        "maximal ISR", the confirmed ISR plus any member being added. A shrink counts only
        once the coordinator confirmed it; an addition counts from the moment it is asked
        for, so no write is acknowledged without a replica that may lead from then on."""
        isr = self.state.isr or (self.broker_id,)
        if self.pending_isr:
            return tuple(dict.fromkeys((*isr, *self.pending_isr)))
        return isr

    # ---- the leader's view of its followers ----------------------------------------------

    def record_fetch(
        self, follower: BrokerId, fetch_offset: int, durable_offset: int, now_ms: float
    ) -> None:
        """A follower fetched from ``fetch_offset``: it holds everything below it, and
        ``durable_offset`` of it durably. Advances the high watermark."""
        progress = self.followers.get(follower)
        if progress is None:
            progress = FollowerProgress(last_caught_up_ms=self.leader_since_ms)
            self.followers[follower] = progress
        leader_end = self.log.log_end_offset
        if fetch_offset >= leader_end:
            progress.last_caught_up_ms = now_ms
        elif fetch_offset >= progress.last_fetch_leader_end:
            progress.last_caught_up_ms = max(progress.last_caught_up_ms, progress.last_fetch_ms)
        progress.last_fetch_leader_end = leader_end
        progress.last_fetch_ms = now_ms
        progress.log_end_offset = fetch_offset
        progress.durable_offset = min(durable_offset, fetch_offset)
        self.refresh_high_watermark()

    def isr_proposal(self, now_ms: float, lag_time_max_ms: int) -> tuple[BrokerId, ...] | None:
        """The ISR this leader should ask the coordinator for, None when it is right.

        A member that has not caught up within ``lag_time_max_ms`` leaves; a replica that
        holds durably at least the high watermark (or everything) joins, so a new member
        never lacks an acknowledged write."""
        if not self.is_leader:
            return None
        isr = list(self.state.isr)
        if self.broker_id not in isr:
            isr.insert(0, self.broker_id)
        leader_end = self.log.log_end_offset
        for replica in self.state.replicas:
            if replica == self.broker_id:
                continue
            progress = self.followers.get(replica)
            in_isr = replica in isr
            if progress is None:
                # Never fetched in this epoch: it leaves after the lag time, joins never.
                silent_ms = now_ms - self.leader_since_ms
                if in_isr and silent_ms > lag_time_max_ms:
                    isr.remove(replica)
                continue
            if not in_isr and now_ms - progress.last_fetch_ms > FETCH_FRESHNESS_MS:
                # Its progress is old news (a broker that died after its last fetch): only a
                # follower fetching now may rejoin.
                continue
            change = isr_change_for_follower(
                in_isr=in_isr,
                follower_log_end=progress.log_end_offset if in_isr else progress.durable_offset,
                leader_log_end=leader_end,
                high_watermark=self._high_watermark,
                last_caught_up_ms=int(progress.last_caught_up_ms),
                now_ms=int(now_ms),
                lag_time_max_ms=lag_time_max_ms,
            )
            if change == "shrink":
                isr.remove(replica)
            elif change == "expand":
                isr.append(replica)
        wanted = tuple(isr)
        if set(wanted) == set(self.state.isr):
            return None
        return wanted

    def refresh_high_watermark(self) -> None:
        if self.role != "leader" or self.closed:
            return
        new = high_watermark(
            leader=self.broker_id,
            leader_durable_offset=self.log.durable_offset,
            follower_durable_offsets=self.follower_durable_offsets,
            isr=self.replicating_isr(),
            previous=self._high_watermark,
            log_end_offset=self.log.log_end_offset,
        )
        if new != self._high_watermark:
            self._high_watermark = new
            self._hw_advanced = _fire(self._hw_advanced)

    def reset_high_watermark(self, value: int) -> None:
        """After a reopen or truncation: the log may now end below the old value."""
        self._high_watermark = min(value, self.log.log_end_offset)
        self.refresh_high_watermark()

    # ---- data ----------------------------------------------------------------------------

    def append(self, batches: bytes | memoryview) -> AppendResult:
        """Append as leader (the caller checked the role) and track its durability.

        A batch with a producer id is checked first: a retry of one already here is
        answered with its original offsets and not written again; a gap is refused."""
        if self.failure is not None:
            raise self.failure
        header = producer_state.idempotent_header(batches)
        if header is not None:
            if header.size_bytes != len(batches):
                raise InvalidRequestError(
                    "a batch with a producer id must be the only batch of its request"
                )
            decision = dedup_decision(
                self.producers.get(header.producer_id),
                producer_epoch=header.producer_epoch,
                first_sequence=header.base_sequence,
                last_sequence=producer_state.last_sequence(header),
            )
            if decision.action == "duplicate" and decision.batch is not None:
                return AppendResult(decision.batch.base_offset, decision.batch.last_offset)
            if decision.action == "reject":
                code = decision.error or ErrorCode.OUT_OF_ORDER_SEQUENCE
                entry = self.producers.get(header.producer_id)
                last = entry.batches[-1].last_sequence if entry and entry.batches else -1
                raise InvalidRequestError(
                    f"{self.tp}: producer {header.producer_id} epoch {header.producer_epoch} "
                    f"sequence {header.base_sequence}: {code.default_message}",
                    code=code,
                    producer_id=header.producer_id,
                    last_sequence=last,
                )
        with self._watching_space():
            result = self.log.append(batches, leader_epoch=self.leader_epoch)
        if header is not None:
            producer_state.observe(self.producers, header, base_offset=result.base_offset)
        durable = self.log.durable(result.last_offset)
        durable.add_done_callback(self._durable_done_threadsafe)
        self._appended = _fire(self._appended)
        return result

    def append_replicated(self, batches: bytes | memoryview) -> None:
        """Append as follower, byte for byte. Durability is asked for separately
        (:meth:`durable`): a follower catching up lets one fsync cover many appends."""
        if self.failure is not None:
            raise self.failure
        with self._watching_space():
            self.log.append_replicated(batches)
        producer_state.observe_chunk(self.producers, batches)
        self._appended = _fire(self._appended)

    @contextlib.contextmanager
    def _watching_space(self) -> Iterator[None]:
        """An append: no space marks the log failed (see ``log_failed``), success clears it."""
        try:
            yield
        except DiskFullError:
            if not self.disk_full:
                log.error(
                    "partition %s: no space left to append; reporting the log failed", self.tp
                )
            self.disk_full = True
            self._disk_checked_at = time.monotonic()
            raise
        self.disk_full = False

    @property
    def log_failed(self) -> bool:
        """The log cannot take writes: it failed (an fsync error, until a restart), or its
        disk was full and has not got ``DISK_FREE_TO_RESUME_BYTES`` free since. Reported in
        heartbeats (Kafka's offline replica): the coordinator elects another in-sync
        replica and drops this one from the ISR; as a follower it does not fetch, so it
        rejoins the ISR only after space returns and it has caught up."""
        if self.failure is not None:
            return True
        if not self.disk_full:
            return False
        now = time.monotonic()
        if now - self._disk_checked_at >= _DISK_CHECK_INTERVAL_S:
            self._disk_checked_at = now
            try:
                stats = os.statvfs(self.log.directory)
            except OSError:
                return True
            if stats.f_bavail * stats.f_frsize >= DISK_FREE_TO_RESUME_BYTES:
                log.info("partition %s: disk space is back; the log takes writes again", self.tp)
                self.disk_full = False
        return self.disk_full

    def durable(self) -> Future[int] | None:
        """A future for everything appended so far being durable (None when empty)."""
        end = self.log.log_end_offset
        if end <= self.log.log_start_offset:
            return None
        future = self.log.durable(end - 1)
        future.add_done_callback(self._durable_done_threadsafe)
        return future

    def set_follower_high_watermark(self, leader_high_watermark: int) -> None:
        """A follower's high watermark: the leader's, up to what it holds itself."""
        if self.role == "follower":
            value = min(leader_high_watermark, self.log.log_end_offset)
            if value != self._high_watermark:
                self._high_watermark = value
                self._hw_advanced = _fire(self._hw_advanced)

    @property
    def appended_event(self) -> asyncio.Event:
        return self._appended

    def read(self, offset: int, max_bytes: int, upper_offset: int | None) -> bytes:
        return self.log.read(offset, max_bytes, upper_offset=upper_offset)

    def _durable_done_threadsafe(self, future: Future[int]) -> None:
        # Runs on a flusher thread, or inline when the future was already done.
        # RuntimeError: the loop closed during shutdown; close() flushed the log anyway.
        with contextlib.suppress(RuntimeError):
            self._loop.call_soon_threadsafe(self._durable_done, future)

    def _durable_done(self, future: Future[int]) -> None:
        exc = future.exception()
        if isinstance(exc, LogTruncatedError):
            # Retriable, not a failure of the log: a truncation (a new leader's history, or
            # a reopen) removed the write before it was flushed. The log stays writable; the
            # producer waiting on it learns through wait_acknowledged (the HW never covers it).
            log.info("partition %s: an unflushed write was truncated: %s", self.tp, exc)
            self.refresh_high_watermark()
            self._wake_all()
            return
        if isinstance(exc, ConveyorError):
            if self.failure is None:
                log.error("partition %s: log failed, no longer writable: %s", self.tp, exc)
            self.failure = exc
            self._wake_all()
            return
        if exc is not None:
            raise exc  # a bug: surfaces through the loop's exception handler
        self.refresh_high_watermark()

    # ---- waiting -------------------------------------------------------------------------

    async def wait_high_watermark(self, timeout_s: float) -> None:
        """Until the high watermark moves, the role changes, or ``timeout_s`` passes."""
        await _wait(self._hw_advanced, timeout_s)

    async def wait_appended(self, timeout_s: float) -> None:
        """Until the log end moves (replication fetches, issue 4), or ``timeout_s`` passes."""
        await _wait(self._appended, timeout_s)

    async def wait_acknowledged(
        self, next_offset: int, leader_epoch: int, timeout_s: float
    ) -> None:
        """``acks=all``: until the high watermark reaches ``next_offset``. Raises NOT_LEADER
        when leadership moves meanwhile, REQUEST_TIMED_OUT after ``timeout_s``."""
        deadline = self._loop.time() + timeout_s
        while self._high_watermark < next_offset:
            if self.failure is not None:
                raise self.failure
            if not self.is_leader or self.leader_epoch != leader_epoch:
                raise RetriableError(
                    f"{self.tp}: leadership moved before offset {next_offset - 1} was "
                    "acknowledged; it may or may not survive",
                    code=ErrorCode.NOT_LEADER,
                )
            remaining = deadline - self._loop.time()
            if remaining <= 0:
                raise RetriableError(
                    f"{self.tp}: offset {next_offset - 1} written but not acknowledged "
                    f"within {timeout_s * 1000:.0f} ms (high watermark {self._high_watermark})",
                    code=ErrorCode.REQUEST_TIMED_OUT,
                    high_watermark=self._high_watermark,
                )
            await self.wait_high_watermark(remaining)

    def wake(self) -> None:
        """Wake every waiter (shutdown: long-polls return what they have)."""
        self._wake_all()

    def _wake_all(self) -> None:
        self._hw_advanced = _fire(self._hw_advanced)
        self._appended = _fire(self._appended)

    # ---- reports -------------------------------------------------------------------------

    def report(self) -> PartitionReport:
        return PartitionReport(
            topic=self.tp.topic,
            partition=self.tp.partition,
            leader_epoch=Epoch(self.state.leader_epoch),
            log_start_offset=self.log.log_start_offset,
            log_end_offset=self.log.log_end_offset,
            high_watermark=self._high_watermark,
            durable_offset=self.log.durable_offset,
            log_failed=self.log_failed,
        )

    def describe(self) -> HostedPartition:
        return HostedPartition(
            topic=self.tp.topic,
            partition=self.tp.partition,
            role=self.role,
            leader_epoch=Epoch(self.state.leader_epoch),
            log_start_offset=self.log.log_start_offset,
            log_end_offset=self.log.log_end_offset,
            high_watermark=self._high_watermark,
            size_bytes=self.log.size_bytes,
        )

    def mark_closed(self) -> None:
        self.closed = True
        self._wake_all()


def _fire(event: asyncio.Event) -> asyncio.Event:
    event.set()
    return asyncio.Event()


async def _wait(event: asyncio.Event, timeout_s: float) -> None:
    if timeout_s <= 0:
        return
    try:
        async with asyncio.timeout(timeout_s):
            await event.wait()
    except TimeoutError:
        pass
