"""The I/O engine behind ``Queue`` and ``AsyncQueue`` (docs/queues.md): share-group
membership, receiving from the partitions' leaders, acknowledgements batched into ranges.

Runs on one event loop (the sync ``Queue``'s private loop thread, or the caller's loop).
Acknowledgements made with ``ack()``/``release()``/``reject()`` are kept here (thread-safe)
and go out with the next receive to that partition's leader, or with ``commit()``, or on
their own after ``ack_flush_ms``: one request and one state write carry a whole batch's
acknowledgements. A receive asks each leader of an assigned partition; a leader that
answers after the caller has what it wanted leaves its records in a buffer for the next
receive (they are locked for this member; dropped when their lock would have expired).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import struct
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Final, NamedTuple

import msgspec

from conveyor.client.metadata import MetadataClient
from conveyor.client.queue_prefetch import PrefetchPacing
from conveyor.protocol.errors import ConveyorError, ErrorCode, InvalidRequestError
from conveyor.protocol.records import Record, decode_batches
from conveyor.protocol.share import (
    AckRange,
    AckResult,
    AckType,
    ReceiveRequest,
    ReceiveResponse,
    ShareGroupConfig,
    ShareGroupHeartbeatRequest,
    ShareGroupHeartbeatResponse,
    ShareMode,
    lock_token,
)
from conveyor.transport.client import AsyncHTTP, coordinator_set
from conveyor.transport.tls import TLSConfig
from conveyor.transport.waits import gather_all

log = logging.getLogger(__name__)

RECEIVE_CONTENT_TYPE: Final = "application/vnd.conveyor.share-receive"
_FRAME: Final = struct.Struct(">I")
LEADERLESS_REFRESH_S: Final = 0.2
_LEADER_MOVED: Final = frozenset(
    (ErrorCode.NOT_LEADER, ErrorCode.LEADER_NOT_AVAILABLE, ErrorCode.UNKNOWN_PARTITION)
)


@dataclass(frozen=True, slots=True)
class QueueSettings:
    url: str
    topic: str
    group: str
    mode: ShareMode | None = None
    config: ShareGroupConfig | None = None
    client_id: str = ""
    session_timeout_ms: int = 10_000
    request_timeout_ms: int = 30_000
    ack_flush_ms: int = 100
    prefetch: bool = True  # fetch the next batch while the application handles this one
    tls: TLSConfig | None = None
    authorization: str | None = field(default=None, repr=False)

    def __post_init__(self) -> None:
        if not self.topic or not self.group:
            raise ValueError("a queue needs a topic and a group")
        if self.mode not in (None, "unordered", "key_ordered"):
            raise ValueError("mode must be 'unordered' or 'key_ordered'")
        if self.ack_flush_ms < 0:
            raise ValueError("ack_flush_ms must be >= 0")


class Delivered(NamedTuple):
    """One acquired record: the record, where it is, its lock (a tuple: made per record)."""

    record: Record
    partition: int
    acquisition: int
    delivery_count: int
    lock_deadline_s: float  # this process's monotonic clock


@dataclass(frozen=True, slots=True)
class AckFailure:
    """An acknowledgement the broker refused (or that could not be sent)."""

    partition: int
    first_offset: int
    last_offset: int
    type: AckType
    error: str
    message: str


class PendingAcks:
    """Acknowledgements made and not yet sent; thread-safe (the sync queue's callers add,
    its loop thread takes). Consecutive offsets of one kind merge into one range."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        # (partition, type, acquisition, delay_ms, reason) -> offsets
        self._items: dict[tuple[int, AckType, int, int | None, str | None], list[int]] = {}

    def add(  # noqa: PLR0917 -- one acknowledgement's fields
        self,
        partition: int,
        offset: int,
        acquisition: int,
        kind: AckType,
        delay_ms: int | None = None,
        reason: str | None = None,
    ) -> None:
        key = (partition, kind, acquisition, delay_ms, reason)
        with self._lock:
            found = self._items.get(key)
            if found is None:
                self._items[key] = [offset]
            else:
                found.append(offset)

    def add_many(self, entries: list[tuple[int, int, int]], kind: AckType) -> None:
        """(partition, offset, acquisition) of several records, one kind, one lock."""
        with self._lock:
            items = self._items
            for partition, offset, acquisition in entries:
                key = (partition, kind, acquisition, None, None)
                found = items.get(key)
                if found is None:
                    items[key] = [offset]
                else:
                    found.append(offset)

    def __len__(self) -> int:
        with self._lock:
            return sum(len(v) for v in self._items.values())

    def take(self) -> dict[int, list[AckRange]]:
        with self._lock:
            items, self._items = self._items, {}
        out: dict[int, list[AckRange]] = {}
        for (partition, kind, acquisition, delay_ms, reason), offsets in items.items():
            for first, last in _ranges(offsets):
                out.setdefault(partition, []).append(
                    AckRange(
                        partition=partition,
                        first_offset=first,
                        last_offset=last,
                        type=kind,
                        acquisition=acquisition,
                        delay_ms=delay_ms,
                        reason=reason,
                    )
                )
        return out


def _ranges(offsets: list[int]) -> list[tuple[int, int]]:
    out: list[tuple[int, int]] = []
    for offset in sorted(set(offsets)):
        if out and out[-1][1] == offset - 1:
            out[-1] = (out[-1][0], offset)
        else:
            out.append((offset, offset))
    return out


def parse_received(body: bytes) -> tuple[ReceiveResponse, list[bytes]]:
    (length,) = _FRAME.unpack_from(body)
    header = msgspec.json.decode(body[_FRAME.size : _FRAME.size + length], type=ReceiveResponse)
    position = _FRAME.size + length
    chunks: list[bytes] = []
    for answer in header.partitions:
        chunks.append(body[position : position + answer.size_bytes])
        position += answer.size_bytes
    return header, chunks


class QueueCore:
    def __init__(self, settings: QueueSettings) -> None:
        self.settings = settings
        coordinators = coordinator_set(settings.url)
        self.http = AsyncHTTP(
            settings.tls,
            timeout_s=settings.request_timeout_ms / 1000 + 35,
            authorization=settings.authorization,
            coordinators=coordinators,
        )
        self._url = coordinators.primary.rstrip("/")
        self.metadata = MetadataClient(
            self.http, self._url, auto_create=False, request_timeout_ms=settings.request_timeout_ms
        )
        self.pending = PendingAcks()
        self.member_id: str | None = None
        self.assigned: list[int] = []
        self.config: ShareGroupConfig | None = None
        self.config_version = 0
        self.heartbeat_interval_ms = 1_000
        self.refused: ConveyorError | None = None  # a heartbeat refused for good
        self.on_ack_error: Callable[[AckFailure], None] | None = None
        self._buffer: list[Delivered] = []
        self._outstanding: set[asyncio.Task[None]] = set()
        # receives not answered yet (counted down before their records are announced, so a
        # waiter woken by them sees them done: a task's own end comes a step later)
        self._in_flight = 0
        self._prefetch: tuple[int, float] | None = None  # asked for while one was in flight
        self.pacing = PrefetchPacing()
        self._leaderless_refresh_s = 0.0  # monotonic: no refresh for a leaderless one before
        # Requests carrying acknowledgements go one at a time, and never long-poll: two on
        # separate connections may arrive in either order, and in key-ordered mode the
        # accept of a key's later record before its earlier one's is refused.
        self._ack_carrier = False
        self._receive_failed = False
        self._ack_carrier_done = asyncio.Event()
        self._ack_carrier_done.set()
        self._arrived = asyncio.Event()
        self._tasks: list[asyncio.Task[None]] = []
        self._joined = asyncio.Event()
        self.closed = False

    # ---- membership ----------------------------------------------------------------------

    async def start(self) -> None:
        """Join (the first heartbeat: a mode clash is raised here), then keep beating."""
        try:
            await self._beat()
        except ConveyorError as exc:
            if exc.code is not ErrorCode.UNKNOWN_TOPIC:
                raise
            log.info("queue %s: topic %s does not exist yet", self.settings.group, exc)
        loop = asyncio.get_running_loop()
        self._tasks.append(loop.create_task(self._heartbeats(), name="queue-heartbeats"))
        self._tasks.append(loop.create_task(self._flushes(), name="queue-ack-flush"))

    async def _beat(self, leave: bool = False) -> None:
        settings = self.settings
        answer = await self.http.call(
            "POST",
            f"{self._url}/v1/share-groups/{settings.group}/heartbeat",
            ShareGroupHeartbeatResponse,
            body=ShareGroupHeartbeatRequest(
                member_id=self.member_id,
                client_id=settings.client_id,
                topics=[settings.topic],
                mode=settings.mode,
                config=settings.config if self.member_id is None else None,
                session_timeout_ms=settings.session_timeout_ms,
                leave=leave,
            ),
            timeout_s=settings.request_timeout_ms / 1000,
        )
        if leave:
            return
        self.member_id = answer.member_id
        self.assigned = sorted(a.partition for a in answer.assigned if a.topic == settings.topic)
        self.config, self.config_version = answer.config, answer.config_version
        self.heartbeat_interval_ms = answer.heartbeat_interval_ms
        self._joined.set()

    async def _heartbeats(self) -> None:
        failures = 0
        while not self.closed:
            await asyncio.sleep(self.heartbeat_interval_ms / 1000 if not failures else 0.5)
            try:
                await self._beat()
                failures = 0
            except ConveyorError as exc:
                failures += 1
                if not exc.retriable and exc.code is not ErrorCode.UNKNOWN_TOPIC:
                    self.refused = exc
                log.warning("queue %s: heartbeat failed: %s", self.settings.group, exc)

    # ---- acknowledgements ----------------------------------------------------------------

    async def _flushes(self) -> None:
        """Acknowledgements nobody carried within ``ack_flush_ms`` go on their own."""
        while not self.closed:
            await asyncio.sleep(max(self.settings.ack_flush_ms, 10) / 1000)
            if len(self.pending) and not self._ack_carrier:
                with contextlib.suppress(ConveyorError):
                    await self.commit()

    async def commit(self) -> list[AckFailure]:
        """Send every pending acknowledgement now; the failures (empty: all done)."""
        while self._ack_carrier:  # after the acknowledgements already on their way
            await self._ack_carrier_done.wait()
        acks = self._take_acks()
        if not acks:
            return []
        failures: list[AckFailure] = []
        try:
            by_leader = await self._by_leader(sorted(acks))
            self._fail_unrouted(by_leader, acks, failures)
            requests = [
                self._request(url, [], [a for p in parts for a in acks[p]], 0, 0, failures)
                for url, parts in by_leader.items()
            ]
            await gather_all(*requests)
        finally:
            self._carried()
        return failures

    def _take_acks(self) -> dict[int, list[AckRange]]:
        """The pending acknowledgements, for the one request that may carry them now
        (none while another carries some), in offset order per partition."""
        if self._ack_carrier:
            return {}
        acks = self.pending.take()
        if acks:
            self._ack_carrier = True
            self._ack_carrier_done.clear()
            for ranges in acks.values():
                ranges.sort(key=lambda a: a.first_offset)
        return acks

    def _carried(self) -> None:
        self._ack_carrier = False
        self._ack_carrier_done.set()

    def _fail_acks(
        self, acks: list[AckRange], failures: list[AckFailure], error: str, message: str
    ) -> None:
        for ack in acks:
            failure = AckFailure(
                ack.partition, ack.first_offset, ack.last_offset, ack.type, error, message
            )
            failures.append(failure)
            self._report(failure)

    def _report(self, failure: AckFailure) -> None:
        if self.on_ack_error is not None:
            self.on_ack_error(failure)
        else:
            log.warning(
                "queue %s: %s of %s-%d %d..%d refused: %s %s",
                self.settings.group,
                failure.type,
                self.settings.topic,
                failure.partition,
                failure.first_offset,
                failure.last_offset,
                failure.error,
                failure.message,
            )

    # ---- receive -------------------------------------------------------------------------

    async def receive(self, max_records: int, timeout_s: float) -> list[Delivered]:
        if self.refused is not None:
            raise self.refused
        pacing = self.pacing
        pacing.receive_called(time.monotonic())
        got = self._from_buffer(max_records)
        if not got:
            got = await self._wait_for_records(max_records, timeout_s)
        pacing.handed_out(len(got), time.monotonic())
        target = pacing.target(max_records)
        if got and self.settings.prefetch and len(self._buffer) < target:
            # the next records are fetched (and decoded) while the application works on
            # these; enough to cover a round trip at the rate it works (PrefetchPacing)
            wanted = max(max_records, target - len(self._buffer))
            if self._in_flight:
                self._prefetch = (wanted, timeout_s)  # once the one in flight ends
            else:
                self._send_receives(wanted, timeout_s)
        return got

    async def _wait_for_records(self, max_records: int, timeout_s: float) -> list[Delivered]:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + max(0.0, timeout_s)
        if not self._joined.is_set():
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(max(0.0, timeout_s)):
                    await self._joined.wait()
        if not self._in_flight:
            self._send_receives(max_records, deadline - loop.time())
        while True:
            got = self._from_buffer(max_records)
            left = deadline - loop.time()
            if got or left <= 0 or self.closed:
                return got
            if not self._in_flight:
                if not self.assigned:
                    await asyncio.sleep(min(left, 0.05))  # no partition assigned yet
                    continue
                # the last answer was empty (or answered at once, carrying acknowledgements)
                if self._receive_failed:  # not in a tight loop against a failing broker
                    await asyncio.sleep(min(left, 0.1))
                self._send_receives(max_records, deadline - loop.time())
            self._arrived.clear()
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(left):
                    await self._arrived.wait()

    def released(self, delivered: Delivered) -> None:
        """Key-ordered mode: the broker sends a released record's later records of its key
        (same acquisition) back with it, so they must not be handed out from the buffer.
        Called from any thread: replacing the list is atomic under the GIL."""
        if self.config is None or self.config.mode != "key_ordered":
            return
        key, record = delivered.record.key, delivered.record
        if key is None:
            return
        self._buffer = [
            d
            for d in self._buffer
            if not (
                d.partition == delivered.partition
                and d.acquisition == delivered.acquisition
                and d.record.key == key
                and d.record.offset > record.offset
            )
        ]

    def _from_buffer(self, max_records: int) -> list[Delivered]:
        now = time.monotonic()
        live = [d for d in self._buffer if d.lock_deadline_s > now]
        taken, self._buffer = live[:max_records], live[max_records:]
        return taken

    def _send_receives(self, max_records: int, wait_s: float) -> None:
        self._in_flight += 1

        async def run() -> None:
            try:
                await requests()
            finally:
                self._in_flight -= 1
                self._arrived.set()
                prefetch, self._prefetch = self._prefetch, None
                if prefetch is not None and not self.closed and not self._in_flight:
                    self._send_receives(*prefetch)

        async def requests() -> None:
            acks = self._take_acks()
            try:
                partitions = sorted(set(self.assigned) | set(acks))
                by_leader = await self._by_leader(partitions)
                share = max(1, -(-max_records // max(1, len(by_leader))))
                failures: list[AckFailure] = []
                self._fail_unrouted(by_leader, acks, failures)
                if partitions and not by_leader:  # no leader known: not in a tight loop
                    await asyncio.sleep(LEADERLESS_REFRESH_S)
                # a carrier answers at once; a deadline already past asks for no wait
                wait_ms = 0 if acks else max(0, int(wait_s * 1000))
                await gather_all(
                    *(
                        self._request(
                            url,
                            [p for p in parts if p in self.assigned],
                            [a for p in parts for a in acks.get(p, [])],
                            share,
                            wait_ms,
                            failures,
                        )
                        for url, parts in by_leader.items()
                    )
                )
            finally:
                if acks:
                    self._carried()

        task = asyncio.get_running_loop().create_task(run(), name="queue-receive")
        self._outstanding.add(task)
        task.add_done_callback(self._receive_done)

    def _receive_done(self, task: asyncio.Task[None]) -> None:
        self._outstanding.discard(task)
        self._receive_failed = not task.cancelled() and task.exception() is not None
        if self._receive_failed:
            log.warning("queue %s: receive failed: %s", self.settings.group, task.exception())
        self._arrived.set()

    async def _by_leader(self, partitions: list[int]) -> dict[str, list[int]]:
        """``partitions`` by their leaders' URLs. One whose leader the cache does not know
        (it was being elected at the last refresh) is looked up again, at most every
        ``LEADERLESS_REFRESH_S``: nothing else would refresh it, and this member would
        never read that partition again (seen in the chaos queue run of seed 2424: a
        member kept its assignment and read nothing for 140 s)."""
        out = await self._routed(partitions)
        now = time.monotonic()
        if _unrouted(out, partitions) and now >= self._leaderless_refresh_s:
            self._leaderless_refresh_s = now + LEADERLESS_REFRESH_S
            with contextlib.suppress(ConveyorError):
                await self.metadata.refresh([self.settings.topic])
            out = await self._routed(partitions)
        return out

    async def _routed(self, partitions: list[int]) -> dict[str, list[int]]:
        routes = await self.metadata.routes(self.settings.topic)
        out: dict[str, list[int]] = {}
        if routes is None:
            return out
        for route in routes:
            if route.partition in partitions and route.leader_url:
                out.setdefault(route.leader_url, []).append(route.partition)
        return out

    def _fail_unrouted(
        self,
        by_leader: dict[str, list[int]],
        acks: dict[int, list[AckRange]],
        failures: list[AckFailure],
    ) -> None:
        """Acknowledgements of partitions without a known leader are not sent: failed
        (reported, and returned by ``commit``), never silently dropped."""
        unrouted = _unrouted(by_leader, sorted(acks))
        if unrouted:
            dropped = [a for p in unrouted for a in acks[p]]
            self._fail_acks(dropped, failures, "LEADER_NOT_AVAILABLE", "no leader known")

    async def _request(  # noqa: PLR0917 -- one request's parts
        self,
        url: str,
        partitions: list[int],
        acks: list[AckRange],
        max_records: int,
        max_wait_ms: int,
        failures: list[AckFailure],
    ) -> None:
        if not partitions and not acks:
            return
        settings = self.settings
        request = ReceiveRequest(
            topic=settings.topic,
            partitions=partitions,
            member_id=self.member_id or "",
            max_records=max_records if partitions else 0,
            max_wait_ms=max_wait_ms,
            acknowledgements=acks,
            config_version=self.config_version,
        )
        target = f"{url}/v1/share-groups/{settings.group}/topics/{settings.topic}/receive"
        sent_s = time.monotonic()
        try:
            _, _, body = await self.http.request(
                "POST",
                target,
                body=msgspec.json.encode(request),
                accept=RECEIVE_CONTENT_TYPE,
                timeout_s=max_wait_ms / 1000 + settings.request_timeout_ms / 1000,
            )
        except ConveyorError as exc:
            if exc.code in _LEADER_MOVED or exc.code is ErrorCode.NETWORK_ERROR:
                with contextlib.suppress(ConveyorError):
                    await self.metadata.refresh([settings.topic])
            self._fail_acks(acks, failures, exc.code.name, exc.message)
            raise
        header, chunks = parse_received(body)
        if any(answer.acquired for answer in header.partitions):
            self.pacing.round_trip(time.monotonic() - sent_s)
        for result in header.acks:
            if result.error is not None:
                self._fail_acks(
                    [_ack_of(result, acks)], failures, result.error, result.message or ""
                )
        self._deliver(header, chunks)
        if any(p.error in {c.name for c in _LEADER_MOVED} for p in header.partitions):
            with contextlib.suppress(ConveyorError):
                await self.metadata.refresh([settings.topic])

    def _deliver(self, header: ReceiveResponse, chunks: list[bytes]) -> None:
        lock_s = header.lock_duration_ms / 1000
        deadline = time.monotonic() + lock_s * 0.9  # leave the member time to acknowledge
        delivered: list[Delivered] = []
        for answer, chunk in zip(header.partitions, chunks, strict=True):
            if answer.error is not None or not answer.acquired:
                continue
            ranges = sorted(
                (r.first_offset, r.last_offset, r.acquisition, r.delivery_count)
                for r in answer.acquired
            )
            records = decode_batches(chunk, verify_crc=True, start_offset=ranges[0][0])
            partition = answer.partition
            i, count = 0, len(ranges)
            for record in records:  # both in offset order: a merge walk
                offset = record.offset
                while i < count and ranges[i][1] < offset:
                    i += 1
                if i == count:
                    break
                first, _, acquisition, deliveries = ranges[i]
                if offset >= first:
                    delivered.append(
                        Delivered(record, partition, acquisition, deliveries, deadline)
                    )
        self._buffer += delivered
        self._arrived.set()

    # ---- closing -------------------------------------------------------------------------

    async def close(self) -> None:
        """Acknowledge what is pending, give back buffered records, leave, stop."""
        if self.closed:
            return
        self.closed = True
        for task in list(self._outstanding):
            with contextlib.suppress(asyncio.CancelledError, ConveyorError):
                await task
        key_ordered = self.config is not None and self.config.mode == "key_ordered"
        heads: set[tuple[int, int, bytes]] = set()
        for delivered in sorted(self._buffer, key=lambda d: (d.partition, d.record.offset)):
            # never handed out: back at once. In key-ordered mode the broker sends a key's
            # later records back with its first one (same lock): release only that one.
            key = delivered.record.key
            if key_ordered and key is not None:
                head = (delivered.partition, delivered.acquisition, key)
                if head in heads:
                    continue
                heads.add(head)
            self.pending.add(
                delivered.partition, delivered.record.offset, delivered.acquisition, "release", 0
            )
        self._buffer = []
        for task in self._tasks:
            task.cancel()
        try:
            await self.commit()
            if self.member_id is not None:
                await self._beat(leave=True)
        except ConveyorError as exc:
            log.warning("queue %s: closing: %s", self.settings.group, exc)
        finally:
            await self.http.close()

    def token(self, delivered: Delivered) -> str:
        return lock_token(
            self.settings.topic, delivered.partition, delivered.record.offset, delivered.acquisition
        )


def _unrouted(by_leader: dict[str, list[int]], partitions: list[int]) -> list[int]:
    routed = {p for parts in by_leader.values() for p in parts}
    return [p for p in partitions if p not in routed]


def _ack_of(result: AckResult, sent: list[AckRange]) -> AckRange:
    for ack in sent:
        if (ack.partition, ack.first_offset, ack.last_offset) == (
            result.partition,
            result.first_offset,
            result.last_offset,
        ):
            return ack
    return AckRange(
        partition=result.partition, first_offset=result.first_offset, last_offset=result.last_offset
    )


def check_reason(reason: str) -> str:
    if not isinstance(reason, str):
        raise InvalidRequestError("a reason is text")
    return reason[:1000]
