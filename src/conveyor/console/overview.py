"""The overview page: cluster, brokers, coordinator, counts, rates and firing alerts."""

from __future__ import annotations

from collections.abc import Awaitable
from dataclasses import dataclass
from typing import Any, TypeVar

from aiohttp import web

from conveyor._version import __version__
from conveyor.console.core import Ctx, now_ms
from conveyor.console.rates import RateTable
from conveyor.protocol.errors import ConveyorError
from conveyor.protocol.messages import BrokerInfo, ClusterStatus, CoordinatorStatus
from conveyor.transport.waits import gather_all

T = TypeVar("T")


async def settle(awaitable: Awaitable[T]) -> T | ConveyorError:
    """The result, or the typed error (one broker down must not blank the page)."""
    try:
        return await awaitable
    except ConveyorError as exc:
        return exc


@dataclass(frozen=True, slots=True)
class BrokerRow:
    info: BrokerInfo
    version: str | None
    disk_bytes: int | None
    led: int
    followed: int
    in_rate: float | None
    out_rate: float | None
    problem: str | None


async def _none() -> None:
    return None


def coordinator_rows(
    own_url: str, status: CoordinatorStatus | ConveyorError
) -> list[dict[str, str | None]]:
    """The coordinator serving the console, with its role, and the active one when that
    is another (high availability: a standby's console calls the active one's API)."""
    if isinstance(status, ConveyorError):
        return [{"url": own_url, "role": "unknown", "version": None, "note": status.message}]
    own = {"url": status.url or own_url, "role": status.role, "version": __version__}
    rows: list[dict[str, str | None]] = [{**own, "note": "serving this console"}]
    if status.role == "standby":
        if status.active_url:
            rows.append({"url": status.active_url, "role": "active", "version": None,
                         "note": "answering this console's calls"})  # fmt: skip
        else:
            rows[0]["note"] = "serving this console; no coordinator is active (an election)"
    return rows


class Overview:
    def __init__(self, rates: RateTable) -> None:
        self.rates = rates

    async def page(self, ctx: Ctx) -> web.StreamResponse:
        values = await self.gather(ctx)
        return ctx.render("_overview.html" if ctx.htmx else "overview.html", **values)

    async def gather(self, ctx: Ctx) -> dict[str, Any]:
        api = ctx.api
        prometheus = ctx.console.settings.prometheus_url
        cluster, status, alerts = await gather_all(
            settle(api.cluster()),
            settle(api.coordinator_status()),
            settle(api.firing_alerts(prometheus)) if prometheus else _none(),
        )
        brokers: list[BrokerRow] = []
        if isinstance(cluster, ClusterStatus):
            brokers = list(await gather_all(*(self.broker(ctx, b) for b in cluster.brokers)))
        known = [b for b in brokers if b.in_rate is not None]
        return {
            "cluster": cluster,
            "brokers": brokers,
            "coordinators": coordinator_rows(ctx.console.settings.api_url, status),
            "produce_rate": sum(b.in_rate or 0 for b in known) if known else None,
            "consume_rate": sum(b.out_rate or 0 for b in known) if known else None,
            "alerts": alerts,
            "prometheus": prometheus,
            "page": "overview",
        }

    async def broker(self, ctx: Ctx, info: BrokerInfo) -> BrokerRow:
        led = info.leader_count
        followed = max(0, info.replica_count - info.leader_count)
        if not info.alive:
            return BrokerRow(info, None, None, led, followed, None, None, "not alive")
        health, hosted, traffic = await gather_all(
            settle(ctx.api.broker_health(info.url)),
            settle(ctx.api.hosted(info.url)),
            settle(ctx.api.broker_traffic(info.url)),
        )
        problems = [
            str(x.message) for x in (health, hosted, traffic) if isinstance(x, ConveyorError)
        ]
        version = None if isinstance(health, ConveyorError) else health.version
        disk = None
        if not isinstance(hosted, ConveyorError):
            disk = sum(p.size_bytes for p in hosted.partitions)
        in_rate = out_rate = None
        if not isinstance(traffic, ConveyorError):
            now = now_ms()
            in_rate = self.rates.rate(f"broker-in:{info.broker_id}", traffic[0], now)
            out_rate = self.rates.rate(f"broker-out:{info.broker_id}", traffic[1], now)
        problem = "; ".join(problems)[:300] or None
        return BrokerRow(info, version, disk, led, followed, in_rate, out_rate, problem)
