"""Consumer groups: the list, a group's members and lag (with a sparkline), resetting an
empty group's offsets (preview first, then exactly what was previewed), deleting one."""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Final

from aiohttp import web

from conveyor.console import forms
from conveyor.console.browse import format_cursor, parse_cursor
from conveyor.console.core import PREFIX, Ctx, now_ms
from conveyor.protocol.errors import ConveyorError, ErrorCode, InvalidRequestError
from conveyor.protocol.messages import GroupDescription, PartitionOffset, ResetOffsetsRequest
from conveyor.transport.waits import gather_all

if TYPE_CHECKING:  # the client package is imported where a reset needs it
    from conveyor.client.group import ResetTarget

SORTS: Final = ("group", "state", "members", "lag")
LAG_SAMPLES_MAX: Final = 60
LAG_SAMPLE_GAP_MS: Final = 1_000
GROUPS_TRACKED_MAX: Final = 10_000


class LagHistory:
    """The last ``LAG_SAMPLES_MAX`` lags seen of each group, for the sparkline (sampled
    when a page shows the group, at most once a second). Pure: ``now_ms`` passed in."""

    def __init__(self) -> None:
        self._samples: dict[str, deque[tuple[int, int]]] = {}

    def add(self, group: str, lag: int, now_ms: int) -> list[int]:
        samples = self._samples.get(group)
        if samples is None:
            if len(self._samples) >= GROUPS_TRACKED_MAX:
                self._samples.clear()
            samples = self._samples[group] = deque(maxlen=LAG_SAMPLES_MAX)
        if not samples or now_ms - samples[-1][0] >= LAG_SAMPLE_GAP_MS:
            samples.append((now_ms, lag))
        return [lag for _, lag in samples]


@dataclass(frozen=True, slots=True)
class Preview:
    topic: str
    target: str
    rows: list[dict[str, Any]]  # partition, committed, new offset, change

    @property
    def cursor(self) -> str:
        return format_cursor({r["partition"]: r["offset"] for r in self.rows})


def describe_target(to: ResetTarget) -> str:
    if isinstance(to, str):
        return to
    if isinstance(to, int):
        return f"offset {to}"
    from conveyor.console.format import when

    return f"time {when(to.timestamp_ms)}"


class Groups:
    def __init__(self) -> None:
        self.history = LagHistory()

    async def listing(self, ctx: Ctx) -> web.StreamResponse:
        query = ctx.request.query
        needle = query.get("q", "")[:249].lower()
        sort = query.get("sort", "group")
        sort = sort if sort in SORTS else "group"
        descending = query.get("dir") == "desc"
        groups = (await ctx.api.groups()).groups
        if needle:
            groups = [g for g in groups if needle in g.group.lower()]
        groups.sort(key=lambda g: getattr(g, sort), reverse=descending)
        template = "_groups_table.html" if ctx.htmx else "groups.html"
        return ctx.render(
            template,
            groups=groups,
            q=query.get("q", "")[:249],
            sort=sort,
            descending=descending,
            page="groups",
        )

    async def detail(self, ctx: Ctx, status: int = 200, **values: Any) -> web.StreamResponse:
        name = ctx.request.match_info["group"]
        group = await ctx.api.group(name)
        lags = self.history.add(name, group.lag, now_ms())
        template = "_group_live.html" if ctx.htmx else "group.html"
        values.setdefault("preview", None)
        values.setdefault("form", {})
        values.setdefault("form_error", None)
        return ctx.render(
            template,
            status,
            group=group,
            lags=lags,
            topics=sorted({p.topic for p in group.partitions}),
            page="groups",
            **values,
        )

    async def preview(
        self, ctx: Ctx, group: GroupDescription, topic: str, to: ResetTarget
    ) -> Preview:
        metadata = await ctx.api.metadata(topic)
        described = next((t for t in metadata.topics if t.name == topic), None)
        if described is None:
            raise InvalidRequestError(f"unknown topic {topic!r}", code=ErrorCode.UNKNOWN_TOPIC)
        timestamp = to.timestamp_ms if not isinstance(to, (str, int)) else None
        partitions = [p for p in described.partitions]
        for p in partitions:
            if not p.leader_url and not isinstance(to, int):
                raise ConveyorError(
                    f"{topic}[{p.partition}] has no leader", code=ErrorCode.LEADER_NOT_AVAILABLE
                )
        if isinstance(to, int):
            targets = [to for _ in partitions]
        else:
            answers = await gather_all(
                *(
                    ctx.api.offsets(p.leader_url or "", topic, p.partition, timestamp)
                    for p in partitions
                )
            )
            from conveyor.client.group import reset_offset  # as in forms.reset_target

            targets = [reset_offset(to, a) for a in answers]
        committed = {r.partition: r.committed_offset for r in group.partitions if r.topic == topic}
        rows = []
        for p, offset in zip(partitions, targets, strict=True):
            before = committed.get(p.partition)
            rows.append(
                {
                    "partition": p.partition,
                    "committed": before,
                    "offset": offset,
                    "change": None if before is None else offset - before,
                }
            )
        return Preview(topic, describe_target(to), rows)

    async def reset(self, ctx: Ctx) -> web.StreamResponse:
        name = ctx.request.match_info["group"]
        form = await ctx.form()
        group = await ctx.api.group(name)
        try:
            if group.state != "empty":
                raise ConveyorError(
                    f"group {name} has {len(group.members)} active members: stop them first",
                    code=ErrorCode.GROUP_NOT_EMPTY,
                )
            topic, to = forms.reset_target(form)
            if form.get("mode") != "apply":
                preview = await self.preview(ctx, group, topic, to)
                return await self.detail(ctx, preview=preview, form=form)
            described = await ctx.api.metadata(topic)
            partitions = [p.partition for t in described.topics for p in t.partitions]
            offsets = parse_cursor(form.get("offsets", ""), partitions)
            if offsets is None:
                raise InvalidRequestError("preview the reset first")
            request = ResetOffsetsRequest(
                offsets=[
                    PartitionOffset(topic=topic, partition=p, offset=o) for p, o in offsets.items()
                ]
            )
            await ctx.api.reset_offsets(name, request)
        except ConveyorError as exc:
            if exc.code in (ErrorCode.UNAUTHENTICATED, ErrorCode.FORBIDDEN):
                raise
            return await self.detail(ctx, exc.code.http_status, form=form, form_error=exc.message)
        return ctx.redirect(
            f"{PREFIX}/groups/{name}",
            f"Reset group {name} on {topic} to {describe_target(to)}.",
        )

    async def delete(self, ctx: Ctx) -> web.StreamResponse:
        name = ctx.request.match_info["group"]
        form = await ctx.form()
        if form.get("confirm", "") != name:
            raise ConveyorError(
                f"type the group's name ({name}) to confirm the deletion",
                code=ErrorCode.INVALID_REQUEST,
            )
        await ctx.api.delete_group(name)
        return ctx.redirect(f"{PREFIX}/groups", f"Deleted group {name}.")
