"""Several coordinators, one active: the election on etcd. The I/O shell of ``lease.py``.

Every coordinator runs :meth:`Leadership.run`:

1. **Campaign.** Grant a lease, then one transaction: if ``PREFIX/leader`` does not exist,
   create it on that lease with this coordinator's URL. The winner's **epoch** is the key's
   create revision (etcd revisions only grow, so a later winner always has a higher epoch).
2. **Standby.** A loser revokes its lease, remembers the holder's URL (it answers
   ``NOT_COORDINATOR`` naming it) and watches the key until it is deleted (the holder's
   lease expired or was revoked), then campaigns again.
3. **Active.** Open the store fenced by the epoch, load, activate the service (which
   asks :func:`lease.may_act` before every decision), keep the lease alive every third of
   its TTL (on a thread of its own: a busy service loop must not delay renewals). It
   steps down (the service drops its state, the lease is revoked so a standby
   need not wait for it to expire) when: its own clock says the lease may have expired
   (``lease.py``), etcd says the lease is gone, a store write is fenced, or a write's
   outcome is unknown (etcd unreachable: it reloads from etcd when it wins again).

Log lines ``coordinator active at epoch E`` and ``coordinator no longer active (epoch
E)``, and decisions carrying ``epoch=E``, are what the failure tests and the chaos
checker read to prove that no two coordinators acted at once (``chaos/ha.py``).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import threading
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, Final

from conveyor.coordinator import lease as rules
from conveyor.coordinator.etcd_store import EtcdLayout, EtcdMetadataStore, leader_url
from conveyor.coordinator.metastore import StoreFencedError
from conveyor.coordinator.service import CoordinatorService
from conveyor.protocol.errors import ConveyorError
from conveyor.protocol.messages import CoordinatorStatus
from conveyor.transport.etcd import (
    EtcdClient,
    EtcdRequestError,
    EtcdSettings,
    EtcdUnavailableError,
    compare,
    op_get,
    op_put,
)

log = logging.getLogger(__name__)

RETRY_MS: Final = 250  # after etcd failed us: campaign again this soon
WATCH_RECHECK_S: Final = 5.0  # a watch that saw nothing is restarted from a fresh read
KEEPALIVE_POLL_MS: Final = 50  # the renewal thread notices that leading stopped this soon


def monotonic_ms() -> int:
    return time.monotonic_ns() // 1_000_000


@dataclass(frozen=True, slots=True)
class HaSettings:
    etcd: EtcdSettings
    prefix: str  # one Conveyor cluster per etcd key prefix
    advertised_url: str  # what standbys tell clients: this coordinator's URL
    lease: rules.LeaseSettings
    name: str = ""  # for logs: defaults to the URL


class Leadership:
    def __init__(
        self,
        service: CoordinatorService,
        client: EtcdClient,
        settings: HaSettings,
        clock_ms: Callable[[], int] = monotonic_ms,
    ) -> None:
        self.service = service
        self.client = client
        self.settings = settings
        self.layout = EtcdLayout(settings.prefix)
        self._clock_ms = clock_ms
        self._lease: rules.Lease | None = None
        self._lost = asyncio.Event()  # set by a failed store write (on the service's loop)
        self._lost_reason = ""
        self._seen_revision = 0  # the election key's last known revision, for the watch
        self._active_epoch = 0  # the active coordinator's epoch as last seen (0: none)
        # run once the state is loaded, before serving (the security snapshot, with etcd)
        self.on_activated: list[Callable[[], Awaitable[None]]] = []

    @property
    def value(self) -> bytes:
        name = self.settings.name or self.settings.advertised_url
        return json.dumps({"url": self.settings.advertised_url, "name": name}).encode()

    def status(self) -> CoordinatorStatus:
        service = self.service
        active = service.active and service.standby is False
        return CoordinatorStatus(
            role="active" if active else "standby",
            epoch=service.epoch if active else self._active_epoch,
            url=self.settings.advertised_url,
            active_url=service.active_url,
            store="etcd",
        )

    def may_act(self) -> bool:
        return rules.may_act(self._lease, self._clock_ms())

    async def run(self) -> None:
        """Campaign, lead, stand by, forever (until cancelled)."""
        self.service.standby = True
        while True:
            try:
                won = await self._campaign()
                if won is None:
                    await self._wait_for_vacancy()
                else:
                    await self._lead(*won)
            except (EtcdUnavailableError, EtcdRequestError) as exc:
                log.warning("coordinator election: etcd failed, retrying: %s", exc)
                await asyncio.sleep(RETRY_MS / 1000)

    # ---- campaign and standby ------------------------------------------------------------

    async def _campaign(self) -> tuple[rules.Lease, int] | None:
        settings = self.settings.lease
        sent_ms = self._clock_ms()
        grant = await self.client.lease_grant(settings.ttl_s)
        lease = rules.granted(settings, grant.lease_id, sent_ms)
        try:
            response = await self.client.txn(
                [compare(self.layout.leader, "CREATE", 0)],
                [op_put(self.layout.leader, self.value, grant.lease_id)],
                [op_get(self.layout.leader)],
            )
        except BaseException:
            await self._revoke(grant.lease_id)
            raise
        if response.succeeded:
            return lease, response.header.revision
        await self._revoke(grant.lease_id)
        found = response.responses[0].response_range if response.responses else None
        holder = found.kvs[0] if found is not None and found.kvs else None
        self._seen_revision = response.header.revision
        self._active_epoch = holder.create_revision if holder is not None else 0
        url = leader_url(holder)
        if url != self.service.active_url:
            log.info(
                "coordinator standby: the active coordinator is %s (epoch %s)",
                url,
                holder.create_revision if holder else "?",
            )
        self.service.active_url = url
        return None

    async def _wait_for_vacancy(self) -> None:
        """Until the election key is deleted (or a while passes: then re-read it)."""
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(WATCH_RECHECK_S):
                async for result in self.client.watch(self.layout.leader, self._seen_revision + 1):
                    for event in result.events:
                        if event.type == "DELETE":
                            log.info("coordinator standby: the election key is free")
                            self.service.active_url = None
                            self._active_epoch = 0
                            return
                        self.service.active_url = leader_url(event.kv)
                        self._active_epoch = event.kv.create_revision

    # ---- active --------------------------------------------------------------------------

    async def _lead(self, lease: rules.Lease, epoch: int) -> None:
        self._lease = lease
        self._lost.clear()
        reason = "stopped"
        # logged before anything is decided: the moment this epoch may start acting
        log.info(
            "coordinator active at epoch %d (lease %x, valid for %d ms by its own clock)",
            epoch,
            lease.lease_id,
            lease.valid_until_ms - self._clock_ms(),
            extra={"ha_event": "active", "epoch": epoch},
        )
        # renewals start now (loading a big state must not let the lease lapse), on a
        # thread of their own: see _renew_until_lost
        stop = threading.Event()
        keeper = asyncio.ensure_future(asyncio.to_thread(self._renew_on_own_loop, stop))
        try:
            store = await EtcdMetadataStore.open(self.client, self.layout, epoch)
            self.service.active_url = self.settings.advertised_url
            for hook in self.on_activated:
                await hook()
            await self.service.activate(
                store, epoch, lease_valid=self.may_act, on_store_failure=self._store_failed
            )
            reason = await self._until_lost(keeper)
        except StoreFencedError as exc:
            reason = f"fenced: {exc.message}"
            self.service.active_url = exc.details.get("active_url")
        except (EtcdUnavailableError, EtcdRequestError) as exc:
            reason = f"etcd failed: {exc.message}"
        finally:
            stop.set()  # the renewal thread ends within KEEPALIVE_POLL_MS
            with contextlib.suppress(asyncio.CancelledError):
                await asyncio.shield(keeper)
            held, self._lease = self._lease, None
            if self.service.active:
                await self.service.deactivate(reason)
            else:
                log.warning(
                    "coordinator could not become active at epoch %d: %s",
                    epoch,
                    reason,
                    extra={"ha_event": "inactive", "epoch": epoch},
                )
            if self.service.active_url == self.settings.advertised_url:
                self.service.active_url = None
            if held is not None:
                await self._revoke(held.lease_id)

    async def _until_lost(self, keeper: asyncio.Future[str]) -> str:
        """Why this coordinator stops leading: its lease (``keeper``) or a store write."""
        lost = asyncio.ensure_future(self._lost.wait())
        watched: set[asyncio.Future[Any]] = {keeper, lost}
        try:
            await asyncio.wait(watched, return_when=asyncio.FIRST_COMPLETED)
        finally:
            lost.cancel()
        return keeper.result() if keeper.done() else self._lost_reason

    def _renew_on_own_loop(self, stop: threading.Event) -> str:
        return asyncio.run(self._renew_until_lost(stop))

    async def _renew_until_lost(self, stop: threading.Event) -> str:
        """Renew the lease until it is lost (the reason) or ``stop`` is set.

        Runs on a thread and an event loop of its own, with its own etcd connections: on
        the service's loop a renewal waited behind every request already received, and a
        coordinator under a commit flood on a starved host missed its renewals and stepped
        down for nothing (scripts/bench_ha.py, docs/benchmarks.md). The GIL hands this
        thread a turn within the switch interval (5 ms) however busy the service is. The
        lease it renews is one reference both threads read (``may_act``) and only this
        one replaces while leading."""
        settings = self.settings.lease
        client = EtcdClient(self.settings.etcd)
        last_sent_ms = self._clock_ms()
        try:
            while not stop.is_set():
                lease = self._lease
                now_ms = self._clock_ms()
                if lease is None or not rules.may_act(lease, now_ms):
                    return "its lease may have expired (own clock): stepping down"
                renew_ms = rules.next_renewal_ms(settings, last_sent_ms)
                if now_ms < renew_ms:
                    wait_ms = min(renew_ms, lease.valid_until_ms) - now_ms
                    await asyncio.sleep(min(wait_ms, KEEPALIVE_POLL_MS) / 1000)
                    continue
                last_sent_ms = now_ms
                try:
                    ttl_s = await client.lease_keepalive(
                        lease.lease_id,
                        timeout_ms=rules.keepalive_timeout_ms(settings, lease, last_sent_ms),
                    )
                except (EtcdUnavailableError, EtcdRequestError) as exc:
                    log.warning("coordinator lease keep-alive failed: %s", exc)
                    continue
                self._lease = rules.renewed(settings, lease, last_sent_ms, ttl_s)
                if self._lease is None:
                    return "etcd says its lease is gone"
            return "stopped"
        finally:
            await client.close()

    def _store_failed(self, error: ConveyorError) -> None:
        if isinstance(error, StoreFencedError):
            self._lost_reason = f"fenced: {error.message}"
        else:
            self._lost_reason = f"a store write failed (its outcome may be unknown): {error}"
        self._lost.set()

    async def _revoke(self, lease_id: int) -> None:
        try:
            await self.client.lease_revoke(lease_id, timeout_ms=1000)
        except (EtcdUnavailableError, EtcdRequestError) as exc:
            log.info("could not revoke lease %x (it will expire): %s", lease_id, exc)
