"""Topics: the list (filter, sort, size, messages/s), create, detail, delete."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Final
from urllib.parse import quote

from aiohttp import web

from conveyor.console import forms
from conveyor.console.core import PREFIX, Ctx, now_ms
from conveyor.console.overview import settle
from conveyor.console.rates import RateTable
from conveyor.protocol.errors import ConveyorError, ErrorCode
from conveyor.protocol.messages import (
    ClusterStatus,
    GroupList,
    HostedPartition,
    HostedPartitions,
    TopicConfig,
    TopicSummary,
)
from conveyor.transport.waits import gather_all

SORTS: Final = ("name", "partitions", "replication_factor", "size", "rate")
GROUPS_SHOWN_MAX: Final = 50
EDITABLE: Final = forms.EDITABLE_CONFIGS


@dataclass(frozen=True, slots=True)
class TopicRow:
    summary: TopicSummary
    size_bytes: int | None
    rate: float | None


def sort_rows(rows: list[TopicRow], key: str, descending: bool) -> list[TopicRow]:
    """Sorted by ``key``; unknown sizes and rates last whatever the direction."""

    def value(row: TopicRow) -> tuple[bool, Any]:
        if key == "size":
            return (row.size_bytes is None, row.size_bytes or 0)
        if key == "rate":
            return (row.rate is None, row.rate or 0.0)
        if key == "partitions":
            return (False, row.summary.partitions)
        if key == "replication_factor":
            return (False, row.summary.replication_factor)
        return (False, row.summary.name)

    known = [r for r in rows if not value(r)[0]]
    unknown = [r for r in rows if value(r)[0]]
    known.sort(key=lambda r: value(r)[1], reverse=descending)
    return known + unknown


async def hosted_everywhere(
    ctx: Ctx, cluster: ClusterStatus | ConveyorError
) -> list[HostedPartition] | None:
    """Every replica the live brokers host (None when the cluster cannot be described)."""
    if isinstance(cluster, ConveyorError):
        return None
    answers = await gather_all(*(settle(ctx.api.hosted(b.url)) for b in cluster.brokers if b.alive))
    return [p for a in answers if isinstance(a, HostedPartitions) for p in a.partitions]


class Topics:
    def __init__(self, rates: RateTable) -> None:
        self.rates = rates

    async def rows(self, ctx: Ctx) -> list[TopicRow]:
        topics, cluster = await gather_all(ctx.api.topics(), settle(ctx.api.cluster()))
        hosted = await hosted_everywhere(ctx, cluster)
        sizes: dict[str, int] = {}
        ends: dict[str, int] = {}
        for p in hosted or []:
            if p.role == "leader":
                sizes[p.topic] = sizes.get(p.topic, 0) + p.size_bytes
                ends[p.topic] = ends.get(p.topic, 0) + p.log_end_offset
        now = now_ms()
        rows = []
        for t in topics.topics:
            rate = None
            if t.name in ends:
                rate = self.rates.rate(f"topic:{t.name}", ends[t.name], now)
            size = sizes.get(t.name) if hosted is not None else None
            rows.append(TopicRow(t, size, rate))
        return rows

    async def listing(self, ctx: Ctx, status: int = 200, **extra: Any) -> web.StreamResponse:
        query = ctx.request.query
        needle = query.get("q", "")[:249]
        sort = query.get("sort", "name")
        sort = sort if sort in SORTS else "name"
        descending = query.get("dir") == "desc"
        rows = await self.rows(ctx)
        if needle:
            lowered = needle.lower()
            rows = [r for r in rows if lowered in r.summary.name.lower()]
        rows = sort_rows(rows, sort, descending)
        template = "_topics_table.html" if ctx.htmx else "topics.html"
        return ctx.render(
            template,
            status,
            rows=rows,
            q=needle,
            sort=sort,
            descending=descending,
            page="topics",
            defaults=TopicConfig(),
            form=extra.pop("form", {}),
            **extra,
        )

    async def create(self, ctx: Ctx) -> web.StreamResponse:
        form = await ctx.form()
        try:
            request = forms.create_topic(form)
            created = await ctx.api.create_topic(request)
        except ConveyorError as exc:
            if exc.code in (ErrorCode.UNAUTHENTICATED, ErrorCode.FORBIDDEN):
                raise
            return await self.listing(ctx, exc.code.http_status, form=form, form_error=exc.message)
        return ctx.redirect(
            f"{PREFIX}/topics/{created.name}",
            f"Created topic {created.name} ({len(created.partitions)} partitions).",
        )

    async def detail(self, ctx: Ctx, status: int = 200, **extra: Any) -> web.StreamResponse:
        name = ctx.request.match_info["topic"]
        topic, cluster, groups = await gather_all(
            ctx.api.topic(name), settle(ctx.api.cluster()), settle(ctx.api.groups())
        )
        hosted = await hosted_everywhere(ctx, cluster)
        sizes: dict[int, int] = {
            p.partition: p.size_bytes
            for p in hosted or []
            if p.topic == name and p.role == "leader"
        }
        readers = await self.readers(ctx, name, groups)
        template = "_topic_live.html" if ctx.htmx else "topic.html"
        return ctx.render(
            template,
            status,
            topic=topic,
            sizes=sizes,
            readers=readers,
            groups_error=groups.message if isinstance(groups, ConveyorError) else None,
            configs=[(n, forms.config_text(getattr(topic.config, n))) for n, _ in EDITABLE],
            config_form=extra.pop("config_form", None),
            config_error=extra.pop("config_error", None),
            partitions_form=extra.pop("partitions_form", None),
            partitions_error=extra.pop("partitions_error", None),
            page="topics",
        )

    async def alter_config(self, ctx: Ctx) -> web.StreamResponse:
        """Set or reset the settings the form changed (admin on the cluster, as the CLI's
        ``topic alter-config``); a refusal is shown on the form, which keeps its values."""
        name = ctx.request.match_info["topic"]
        form = await ctx.form()
        try:
            request = forms.alter_config(form)
            await ctx.api.alter_topic_config(name, request)
        except ConveyorError as exc:
            if exc.code in (ErrorCode.UNAUTHENTICATED, ErrorCode.FORBIDDEN):
                raise
            return await self.detail(
                ctx, exc.code.http_status, config_form=form, config_error=exc.message
            )
        changed = ", ".join([*sorted(request.set), *(f"{n} (default)" for n in request.reset)])
        return ctx.redirect(f"{PREFIX}/topics/{quote(name)}", f"Changed {changed} of {name}.")

    async def add_partitions(self, ctx: Ctx) -> web.StreamResponse:
        """Grow the topic (admin on the cluster, as ``topic add-partitions``)."""
        name = ctx.request.match_info["topic"]
        form = await ctx.form()
        try:
            current = len((await ctx.api.topic(name)).partitions)
            grown = await ctx.api.add_partitions(name, forms.add_partitions(form, current))
        except ConveyorError as exc:
            if exc.code in (ErrorCode.UNAUTHENTICATED, ErrorCode.FORBIDDEN):
                raise
            return await self.detail(
                ctx, exc.code.http_status, partitions_form=form, partitions_error=exc.message
            )
        return ctx.redirect(
            f"{PREFIX}/topics/{quote(name)}",
            f"Topic {name} now has {len(grown.partitions)} partitions.",
        )

    async def readers(
        self, ctx: Ctx, topic: str, groups: GroupList | ConveyorError
    ) -> list[dict[str, Any]]:
        """The groups reading ``topic`` (members or committed offsets) with their lag on it."""
        if isinstance(groups, ConveyorError):
            return []
        names = [g.group for g in groups.groups if topic in g.topics][:GROUPS_SHOWN_MAX]
        described = await gather_all(*(settle(ctx.api.group(n)) for n in names))
        out: list[dict[str, Any]] = []
        for name, d in zip(names, described, strict=True):
            if isinstance(d, ConveyorError):
                out.append({"group": name, "state": "?", "lag": None, "error": d.message})
                continue
            lag = sum(p.lag or 0 for p in d.partitions if p.topic == topic)
            out.append({"group": name, "state": d.state, "lag": lag, "error": None})
        return out

    async def delete(self, ctx: Ctx) -> web.StreamResponse:
        name = ctx.request.match_info["topic"]
        form = await ctx.form()
        if form.get("confirm", "") != name:
            raise ConveyorError(
                f"type the topic's name ({name}) to confirm the deletion",
                code=ErrorCode.INVALID_REQUEST,
            )
        await ctx.api.delete_topic(name)
        return ctx.redirect(f"{PREFIX}/topics", f"Deleted topic {name}.")
