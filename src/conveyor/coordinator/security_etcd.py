"""Users, tokens and ACL rules in etcd, for several coordinators (issue 20).

The SQLite :class:`~conveyor.coordinator.security.SecurityStore` keeps doing the work (its
validation, hashing and snapshot building are the one implementation) on an in-memory
copy of its tables; after each change the whole snapshot (small: security changes are
rare) is written to ``PREFIX/security`` in one etcd transaction fenced by the active
coordinator's epoch. A coordinator that becomes active loads it into the copy before it
serves, so users, tokens and rules survive a takeover, and the snapshot version keeps
growing across coordinators (brokers fetch newer versions only).

A change whose etcd write fails is undone in the copy (reloaded from the last snapshot
written) and reported to the caller; a standby never gets here (``NOT_COORDINATOR``).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from typing import Any, Final

import msgspec

from conveyor.coordinator.etcd_store import EtcdLayout
from conveyor.coordinator.security import SecurityStore
from conveyor.protocol.errors import ErrorCode, RetriableError
from conveyor.protocol.security import SecuritySnapshot
from conveyor.transport.etcd import EtcdClient, compare, op_put

log = logging.getLogger(__name__)

PERSIST_TIMEOUT_S: Final = 5.0


class EtcdSecurityStore(SecurityStore):
    """Called from worker threads (as the SQLite store is); etcd I/O runs on ``loop``."""

    def __init__(
        self,
        enabled: bool,
        client: EtcdClient,
        layout: EtcdLayout,
        epoch: Callable[[], int],
    ) -> None:
        super().__init__(None, enabled)
        self._client = client
        self._key = layout.security
        self._leader = layout.leader
        self._epoch = epoch  # the active epoch, 0 while standing by
        self._loop: asyncio.AbstractEventLoop | None = None  # the app's, once it runs
        self._written = self.snapshot

    async def reload(self) -> None:
        """Take the snapshot stored in etcd (on becoming active)."""
        found = await self._client.get(self._key)
        if not found.kvs:
            return
        stored = msgspec.json.decode(found.kvs[0].value_bytes, type=SecuritySnapshot)
        await asyncio.to_thread(self._replace, stored)
        log.info("security snapshot version %d loaded from etcd", stored.version)

    def _replace(self, stored: SecuritySnapshot) -> None:
        self.replace_all(stored)
        self._written = self.snapshot

    def _change(self, statement: str, args: tuple[object, ...]) -> int:
        changed = super()._change(statement, args)
        if not changed:
            return changed
        try:
            if self._loop is None:
                raise RetriableError("the coordinator is starting", code=ErrorCode.NOT_READY)
            future = asyncio.run_coroutine_threadsafe(self._persist(self.snapshot), self._loop)
            future.result(PERSIST_TIMEOUT_S)
        except BaseException:
            self._replace(self._written)  # the copy goes back to what etcd holds
            raise
        self._written = self.snapshot
        return changed

    async def _persist(self, snapshot: SecuritySnapshot) -> None:
        epoch = self._epoch()
        if not epoch:
            raise RetriableError("not the active coordinator", code=ErrorCode.NOT_COORDINATOR)
        written = await self._client.txn(
            [compare(self._leader, "CREATE", epoch)],
            [op_put(self._key, msgspec.json.encode(snapshot))],
        )
        if not written.succeeded:
            raise RetriableError(
                f"security change refused: epoch {epoch} is no longer active",
                code=ErrorCode.NOT_COORDINATOR,
            )


def etcd_security_store(app: Any, enabled: bool) -> EtcdSecurityStore:
    """The security store of a coordinator app on etcd (``build_coordinator_app`` with
    ``ha``): reloaded from etcd whenever this coordinator becomes active, written with
    its epoch."""
    from conveyor.coordinator.http import LEADERSHIP_KEY, SERVICE_KEY

    leadership, service = app[LEADERSHIP_KEY], app[SERVICE_KEY]
    store = EtcdSecurityStore(
        enabled,
        leadership.client,
        leadership.layout,
        lambda: service.epoch if service.active else 0,
    )
    leadership.on_activated.append(store.reload)

    async def bind(_: Any) -> None:
        store._loop = asyncio.get_running_loop()

    app.on_startup.append(bind)
    return store
