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
import sys
import threading
import time
import traceback
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
RENEWAL_END_S: Final = 2.0  # after stepping down, wait this long for it before saying so
EXPIRED: Final = "its lease may have expired (own clock): stepping down"


def monotonic_ms() -> int:
    return time.monotonic_ns() // 1_000_000


class _Term:
    """One term as active coordinator: the lease its renewal thread keeps extending (a
    reference the service's loop reads), the event that stops that thread, and the future
    its verdict arrives on. A new term gets a new one, so a thread that outlives its term
    changes nothing but this object."""

    def __init__(self, lease: rules.Lease) -> None:
        self.lease = lease
        self.stop = threading.Event()
        self.ended: asyncio.Future[str] = asyncio.get_running_loop().create_future()


def _settle(future: asyncio.Future[str], reason: str) -> None:
    if not future.done():
        future.set_result(reason)


def _stack_of(thread: threading.Thread) -> str:
    frame = sys._current_frames().get(thread.ident or 0)
    return "".join(traceback.format_stack(frame)) if frame is not None else "(ended)"


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
        self._term: _Term | None = None  # while active
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
        term = self._term
        return term is not None and rules.may_act(term.lease, self._clock_ms())

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
        term = _Term(lease)
        self._term = term
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
        renewal = self._start_renewal(term, epoch)
        try:
            store = await EtcdMetadataStore.open(self.client, self.layout, epoch)
            self.service.active_url = self.settings.advertised_url
            for hook in self.on_activated:
                await hook()
            await self.service.activate(
                store, epoch, lease_valid=self.may_act, on_store_failure=self._store_failed
            )
            reason = await self._until_lost(term)
        except StoreFencedError as exc:
            reason = f"fenced: {exc.message}"
            self.service.active_url = exc.details.get("active_url")
        except (EtcdUnavailableError, EtcdRequestError) as exc:
            reason = f"etcd failed: {exc.message}"
        finally:
            # fenced first, waiting for nothing: from here may_act is false whatever the
            # renewal thread does (it renews this term's lease, no longer the current one)
            term.stop.set()
            self._term = None
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
            await self._await_renewal(renewal, term, epoch)
            await self._revoke(term.lease.lease_id)

    async def _until_lost(self, term: _Term) -> str:
        """Why this coordinator stops leading: its lease by this loop's own clock, the
        renewal thread's verdict (etcd says the lease is gone), or a failed store write.

        The own-clock check runs here, on the service's loop, and needs nothing to
        return: a renewal thread stuck in I/O (a keep-alive or a connection close hung
        while cut from etcd) once kept a coordinator active long after its lease may have
        expired, since only that thread's return made it step down (issue 15)."""
        lost = asyncio.ensure_future(self._lost.wait())
        expired = asyncio.ensure_future(self._until_expired(term))
        watched: set[asyncio.Future[Any]] = {term.ended, lost, expired}
        try:
            done, _ = await asyncio.wait(watched, return_when=asyncio.FIRST_COMPLETED)
        finally:
            lost.cancel()
            expired.cancel()
        if lost in done:
            return self._lost_reason
        if term.ended in done:
            return term.ended.result()
        return EXPIRED

    async def _until_expired(self, term: _Term) -> None:
        while True:
            left_ms = rules.step_down_in_ms(term.lease, self._clock_ms())
            if left_ms == 0:
                return
            await asyncio.sleep(left_ms / 1000)  # renewed meanwhile: it sleeps again

    def _start_renewal(self, term: _Term, epoch: int) -> threading.Thread:
        """A thread of its own (not the loop's default executor, which threads stuck in
        I/O could fill): its answer arrives on ``term.ended``."""
        loop = asyncio.get_running_loop()

        def run() -> None:
            try:
                reason = asyncio.run(self._renew_until_lost(term))
            except BaseException as exc:  # reported to the loop, which steps down
                reason = f"the lease renewal failed: {exc!r}"
            with contextlib.suppress(RuntimeError):  # the loop closed first: nobody waits
                loop.call_soon_threadsafe(_settle, term.ended, reason)

        thread = threading.Thread(target=run, name=f"lease-renewal-{epoch}", daemon=True)
        thread.start()
        return thread

    async def _await_renewal(self, thread: threading.Thread, term: _Term, epoch: int) -> None:
        """Give the renewal thread a moment to end (it notices ``stop`` within
        KEEPALIVE_POLL_MS, or when its request times out); if it does not, say where it
        is stuck, and go on without it: it can change nothing any more."""
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(RENEWAL_END_S):
                await asyncio.shield(term.ended)
        if not term.ended.done():
            log.warning(
                "coordinator epoch %d: the lease renewal thread has not ended %.1f s after "
                "stepping down; its stack:\n%s",
                epoch,
                RENEWAL_END_S,
                _stack_of(thread),
            )

    async def _renew_until_lost(self, term: _Term) -> str:
        """Renew the term's lease until it is lost (the reason) or ``term.stop`` is set.

        Runs on a thread and an event loop of its own, with its own etcd connections: on
        the service's loop a renewal waited behind every request already received, and a
        coordinator under a commit flood on a starved host missed its renewals and stepped
        down for nothing (scripts/bench_ha.py, docs/benchmarks.md). The GIL hands this
        thread a turn within the switch interval (5 ms) however busy the service is. Only
        this thread replaces ``term.lease``; the service's loop reads it (``may_act``) and
        steps down by its own clock without waiting for this thread (``_until_lost``)."""
        settings = self.settings.lease
        client = EtcdClient(self.settings.etcd)
        last_sent_ms = self._clock_ms()
        try:
            while not term.stop.is_set():
                lease = term.lease
                now_ms = self._clock_ms()
                if not rules.may_act(lease, now_ms):
                    return EXPIRED
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
                renewed = rules.renewed(settings, lease, last_sent_ms, ttl_s)
                if renewed is None:
                    return "etcd says its lease is gone"
                term.lease = renewed
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
