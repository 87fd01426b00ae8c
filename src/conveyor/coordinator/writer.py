"""Group commit of the coordinator's transitions: the one place the state changes.

Callers submit decisions (``state -> Result``). One task takes every decision queued so
far, in order, runs each on the state the previous one left (a decision that raises
changes nothing and only its caller sees the error), writes the durable records of the
whole batch in one store write, and only then makes the new state current and answers the
callers. So memory never runs ahead of the store, and with etcd, where one write costs a
consensus round and a few fsyncs, many changes (offset commits above all) share it: commit
throughput grows with the number of callers waiting instead of being one round each
(docs/benchmarks.md). With SQLite it is the same rule with one fsync per batch.

Readers use :attr:`state`: an immutable snapshot, never one with records not yet durable.

A failed write fails every caller of its batch with the store's error and leaves the
state as it was; ``on_write_failed`` tells the owner, which (with etcd, where a lost answer
leaves the outcome unknown) stops being active and reloads. Lock order: none; everything
runs on the event loop, the store does its own I/O.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Final, TypeVar

from conveyor.coordinator.metastore import MetadataStore
from conveyor.coordinator.model import ClusterState, Record
from conveyor.coordinator.state import Result
from conveyor.protocol.errors import ConveyorError, ErrorCode, RetriableError
from conveyor.transport.waits import settle_all

log = logging.getLogger(__name__)
T = TypeVar("T")

BATCH_TRANSITIONS_MAX: Final = 256  # bounds one store write (etcd: well under 1 MiB)
BATCH_RECORDS_MAX: Final = 20_000


@dataclass(slots=True)
class _Pending:
    decide: Callable[[ClusterState], Result[Any]]
    future: asyncio.Future[Any]


class TransitionWriter:
    def __init__(
        self,
        check_active: Callable[[], None],
        on_applied: Callable[[ClusterState | None, list[Result[Any]]], None],
        on_write_failed: Callable[[ConveyorError], None],
    ) -> None:
        self._check_active = check_active  # raises NOT_COORDINATOR once the lease is gone
        # (state before the batch, results in order): metrics and decision logs
        self._on_applied = on_applied
        self._on_write_failed = on_write_failed
        self._store: MetadataStore | None = None
        self.state: ClusterState | None = None
        self._pending: list[_Pending] = []
        self._task: asyncio.Task[None] | None = None
        self._closed_error: ConveyorError | None = RetriableError(
            "the coordinator is loading its state", code=ErrorCode.NOT_READY
        )

    def open(self, store: MetadataStore, state: ClusterState) -> None:
        self._store, self.state, self._closed_error = store, state, None

    def submit(self, decide: Callable[[ClusterState], Result[T]]) -> asyncio.Future[T]:
        """Queue ``decide``; the future of its reply, resolved once its records are durable
        and applied. A plain future, not a coroutine: the caller shields it without a task
        per transition (one commit's CPU counts, docs/benchmarks.md)."""
        if self._closed_error is not None:
            raise self._closed_error
        future: asyncio.Future[T] = asyncio.get_running_loop().create_future()
        self._pending.append(_Pending(decide, future))
        if self._task is None:
            self._task = asyncio.create_task(self._run(), name="coordinator-writer")
        return future

    async def drain(self) -> None:
        """Stop taking decisions; wait for the queued ones to be written."""
        self._closed_error = RetriableError("the coordinator is stopping", code=ErrorCode.NOT_READY)
        if self._task is not None:
            await asyncio.shield(self._task)

    async def abort(self, error: ConveyorError) -> None:
        """Stop now (leadership lost): queued and in-flight callers get ``error``; the
        state is dropped. A write in flight may or may not land: whoever is active next
        reloads from the store."""
        self._closed_error = error
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            await settle_all(task)
        for pending in self._pending:
            if not pending.future.done():
                pending.future.set_exception(error)
        self._pending.clear()
        self.state = None
        self._store = None

    async def _run(self) -> None:
        try:
            while self._pending:
                batch = self._take_batch()
                try:
                    await self._write_batch(batch)
                except asyncio.CancelledError:
                    for pending in batch:
                        if not pending.future.done():
                            pending.future.set_exception(
                                self._closed_error or RetriableError("the coordinator stopped")
                            )
                    raise
        finally:
            if asyncio.current_task() is self._task:
                self._task = None

    def _take_batch(self) -> list[_Pending]:
        batch = self._pending[:BATCH_TRANSITIONS_MAX]
        del self._pending[:BATCH_TRANSITIONS_MAX]
        return batch

    async def _write_batch(self, batch: list[_Pending]) -> None:
        state = self.state
        store = self._store
        if state is None or store is None:
            raise RuntimeError("writer running without a state")
        decided: list[tuple[_Pending, Result[Any]]] = []
        records: list[Record] = []
        for index, pending in enumerate(batch):
            if len(records) >= BATCH_RECORDS_MAX:  # the rest goes first in the next batch
                self._pending[:0] = batch[index:]
                break
            try:
                self._check_active()
                result = pending.decide(state)
            except Exception as exc:  # a typed error: nothing changed; a bug: its caller sees it
                pending.future.set_exception(exc)
                continue
            state = result.state
            records.extend(result.durable_records)
            decided.append((pending, result))
        if records:
            try:
                await store.write(records, state)
            except ConveyorError as exc:
                for pending, _ in decided:
                    pending.future.set_exception(exc)
                self._on_write_failed(exc)
                return
        previous, self.state = self.state, state
        self._on_applied(previous, [result for _, result in decided])
        for pending, result in decided:
            if not pending.future.done():
                pending.future.set_result(result.reply)
