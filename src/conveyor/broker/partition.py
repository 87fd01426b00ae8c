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
from concurrent.futures import Future

from conveyor.broker.reconcile import ReplicaState, Role, TopicPartition
from conveyor.broker.rules import high_watermark
from conveyor.protocol.errors import ConveyorError, ErrorCode, LogTruncatedError, RetriableError
from conveyor.protocol.messages import BrokerId, Epoch, HostedPartition, PartitionReport
from conveyor.storage import AppendResult, PartitionLog

log = logging.getLogger(__name__)


class Partition:
    def __init__(
        self, tp: TopicPartition, broker_id: BrokerId, log_: PartitionLog, state: ReplicaState
    ) -> None:
        self.tp = tp
        self.broker_id = broker_id
        self.log = log_
        self.state = state
        # Durable offsets the followers report in their replication fetches (issue 4).
        self.follower_durable_offsets: dict[BrokerId, int] = {}
        self.failure: ConveyorError | None = None
        self.closed = False
        self.reopening = False
        self._loop = asyncio.get_running_loop()
        self._high_watermark = 0
        # One event per kind of change, replaced after each set: a broadcast to every
        # waiter of that moment, with no busy polling and no lost wake-ups. A role change,
        # a failure or shutdown fires both.
        self._hw_advanced = asyncio.Event()
        self._appended = asyncio.Event()
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
        """Take a new role, epoch or replica set (from reconciliation)."""
        if state.leader_epoch != self.state.leader_epoch:
            # A new epoch starts the followers' progress afresh: they report again.
            self.follower_durable_offsets.clear()
        self.state = state
        self.refresh_high_watermark()
        self._wake_all()

    def replicating_isr(self) -> tuple[BrokerId, ...]:
        """The ISR members whose durable offsets bound the high watermark.

        Replication is not built yet (issue 4), so the leader holds the only copy and the
        high watermark is its durable offset. Issue 4 returns ``self.state.isr`` here."""
        return (self.broker_id,)

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
        """Append as leader (the caller checked the role) and track its durability."""
        if self.failure is not None:
            raise self.failure
        result = self.log.append(batches, leader_epoch=self.leader_epoch)
        durable = self.log.durable(result.last_offset)
        durable.add_done_callback(self._durable_done_threadsafe)
        self._appended = _fire(self._appended)
        return result

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
