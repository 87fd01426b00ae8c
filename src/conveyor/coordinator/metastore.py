"""The coordinator's metadata store: where the durable records of its transitions go, and
what it recovers from. Two backends, one contract (``tests/integration/test_metastore.py``
runs the same tests against both):

* :class:`SqliteMetadataStore`: ``DATA_DIR/coordinator.db`` (``store.py``), the embedded
  default. One coordinator, no extra process.
* :class:`~conveyor.coordinator.etcd_store.EtcdMetadataStore`: a log of record batches and
  snapshots under a key prefix in etcd, every write conditioned on the writer's epoch, so
  several coordinators can share it with one active at a time (``leadership.py``).

The contract: ``write(records, state)`` makes the durable ``records`` of one or more
transitions durable, all or nothing, before it returns (``state`` is the state after them,
which a store may snapshot); ``load()`` returns the state every acknowledged write built,
invariants checked. A write that raises changed nothing in SQLite; in etcd its outcome may
be unknown (the answer was lost), and the coordinator then gives up being active and
reloads (``service.py``), so that memory never differs from the store.

Errors: :class:`StoreFencedError` (another coordinator became active: this one must stop),
``RetriableError`` (the store is unreachable for now), ``StorageError`` and ``FatalError``
(damaged or unusable store).
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Protocol, TypeVar

from conveyor.coordinator.model import ClusterState, Record
from conveyor.coordinator.store import CoordinatorStore
from conveyor.protocol.errors import ErrorCode, RetriableError

T = TypeVar("T")


class StoreFencedError(RetriableError):
    """A write was refused because another coordinator holds a newer epoch: this one is
    no longer active. Retriable for the caller (the new active coordinator will answer)."""

    def __init__(self, message: str, *, active_url: str | None = None) -> None:
        details = {"active_url": active_url} if active_url else {}
        super().__init__(message, code=ErrorCode.NOT_COORDINATOR, **details)


class MetadataStore(Protocol):
    @property
    def cluster_id(self) -> str: ...

    @property
    def location(self) -> str:
        """Where the data is, for logs: a path or an etcd prefix."""
        ...

    async def load(self) -> ClusterState: ...

    async def write(self, records: Sequence[Record], state: ClusterState) -> None: ...

    async def close(self) -> None: ...


class SqliteMetadataStore:
    """``store.CoordinatorStore`` on its own worker thread: sqlite connections belong to
    the thread that made them, and the event loop must never wait for an fsync."""

    def __init__(self, store: CoordinatorStore, executor: ThreadPoolExecutor) -> None:
        self._store = store
        self._executor = executor

    @classmethod
    async def open(cls, data_dir: Path) -> SqliteMetadataStore:
        executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="coordinator-db")
        try:
            loop = asyncio.get_running_loop()
            store = await loop.run_in_executor(executor, CoordinatorStore.open, data_dir)
        except BaseException:
            executor.shutdown(wait=False)
            raise
        return cls(store, executor)

    @property
    def cluster_id(self) -> str:
        return self._store.cluster_id

    @property
    def location(self) -> str:
        return str(self._store.path)

    async def _run(self, fn: Callable[..., T], *args: object) -> T:
        return await asyncio.get_running_loop().run_in_executor(self._executor, fn, *args)

    async def load(self) -> ClusterState:
        return await self._run(self._store.load)

    async def write(self, records: Sequence[Record], state: ClusterState) -> None:
        await self._run(self._store.write, records)

    async def close(self) -> None:
        try:
            await self._run(self._store.close)
        finally:
            self._executor.shutdown(wait=True)
