"""The message browser (with its JSON download) and the produce form."""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any, Final

from aiohttp import web

from conveyor.console import forms
from conveyor.console.browse import (
    PAGE_SIZE_DEFAULT,
    PAGE_SIZE_MAX,
    Direction,
    Filters,
    Page,
    PartitionRange,
    PartitionReader,
    Prefetch,
    budget_per_partition,
    first_fetch,
    format_cursor,
    parse_cursor,
    read_page,
)
from conveyor.console.core import Ctx
from conveyor.console.overview import settle
from conveyor.protocol.errors import ConveyorError, ErrorCode, InvalidRequestError
from conveyor.protocol.messages import (
    FetchResponse,
    JsonProduceRequest,
    PartitionInfo,
    PartitionOffsets,
    TopicDescription,
)
from conveyor.transport.waits import gather_all

STARTS: Final = ("end", "beginning", "offset", "time")


@dataclass(frozen=True, slots=True)
class BrowseQuery:
    partition: int | None  # None: all
    start: str
    offset: int | None
    time: str
    filters: Filters
    limit: int
    cursor: str
    direction: Direction

    def params(self, **change: Any) -> dict[str, str]:
        """The query string of this view (``change`` applied), for links."""
        out = {
            "partition": "all" if self.partition is None else str(self.partition),
            "start": self.start,
            "offset": "" if self.offset is None else str(self.offset),
            "time": self.time,
            "key": self.filters.key,
            "value": self.filters.value,
            "limit": str(self.limit),
        }
        out.update({k: str(v) for k, v in change.items()})
        return {k: v for k, v in out.items() if v != ""}


def browse_query(query: forms.Form) -> BrowseQuery:
    raw_partition = query.get("partition", "all")
    partition = None if raw_partition in ("", "all") else forms.integer(query, "partition", 0)
    start = query.get("start", "end")
    if start not in STARTS:
        raise InvalidRequestError(f"start must be one of {', '.join(STARTS)}")
    offset = forms.integer(query, "offset", 0)
    if start == "offset" and offset is None:
        raise InvalidRequestError("give the offset to start at")
    time_text = forms.text(query, "time", 64)
    if start == "time":
        forms.moment_ms(time_text)
    direction = query.get("dir", "forward")
    limit = forms.integer(query, "limit", 1, PAGE_SIZE_MAX, default=PAGE_SIZE_DEFAULT)
    assert limit is not None
    return BrowseQuery(
        partition=partition,
        start=start,
        offset=offset,
        time=time_text,
        filters=Filters(forms.text(query, "key", 1000), forms.text(query, "value", 1000)),
        limit=limit,
        cursor=forms.text(query, "cursor", 200_000),
        direction="backward" if direction == "backward" else "forward",
    )


class Messages:
    async def _leaders(self, ctx: Ctx, name: str) -> TopicDescription:
        metadata = await ctx.api.metadata(name)
        found = next((t for t in metadata.topics if t.name == name), None)
        if found is None:
            raise InvalidRequestError(f"unknown topic {name!r}", code=ErrorCode.UNKNOWN_TOPIC)
        return found

    async def read(
        self, ctx: Ctx, name: str, q: BrowseQuery
    ) -> tuple[TopicDescription, Page | None, dict[int, str]]:
        topic = await self._leaders(ctx, name)
        chosen = [p for p in topic.partitions if q.partition is None or p.partition == q.partition]
        if not chosen:
            raise InvalidRequestError(
                f"topic {name} has no partition {q.partition}", code=ErrorCode.UNKNOWN_PARTITION
            )
        problems: dict[int, str] = {}
        urls = {p.partition: p.leader_url for p in chosen if p.leader_url}
        for info in chosen:
            if not info.leader_url:
                problems[info.partition] = "no leader"

        async def fetch(partition: int, offset: int, max_bytes: int) -> FetchResponse:
            return await ctx.api.fetch(urls[partition], name, partition, offset, max_bytes)

        prefetch = Prefetch(fetch)
        reader = PartitionReader(name, prefetch.fetch, q.filters, q.limit)
        scan_max = ctx.console.settings.scan_messages_max
        try:
            self._guess(q, [p for p in chosen if p.partition in urls], reader, scan_max, prefetch)
            ranges, starts = await self._ranges(ctx, name, q, urls, problems)
            if not ranges:
                return topic, None, problems
            direction: Direction = "backward" if q.start == "end" else "forward"
            if q.cursor:
                cursor = parse_cursor(q.cursor, sorted(ranges))
                if cursor is None:
                    raise InvalidRequestError("the page cursor does not fit this topic: start over")
                starts, direction = cursor, q.direction
            page = await read_page(reader, ranges, starts, direction, scan_max)
        finally:
            prefetch.close()
        for partition, error in page.errors.items():
            problems[partition] = error
        return topic, page, problems

    async def _ranges(
        self,
        ctx: Ctx,
        name: str,
        q: BrowseQuery,
        urls: dict[int, str],
        problems: dict[int, str],
    ) -> tuple[dict[int, PartitionRange], dict[int, int]]:
        """Each partition's offsets from its leader, and where the page starts in it."""
        timestamp = forms.moment_ms(q.time) if q.start == "time" and not q.cursor else None
        answers = await gather_all(
            *(settle(ctx.api.offsets(url, name, p, timestamp)) for p, url in urls.items())
        )
        ranges: dict[int, PartitionRange] = {}
        starts: dict[int, int] = {}
        for p, answer in zip(urls, answers, strict=True):
            if isinstance(answer, ConveyorError):
                if answer.code in (ErrorCode.FORBIDDEN, ErrorCode.UNAUTHENTICATED):
                    raise answer
                problems[p] = f"{answer.code.name}: {answer.message}"
                continue
            ranges[p] = PartitionRange(p, answer.log_start_offset, answer.high_watermark)
            starts[p] = self._start(q, answer)
        return ranges, starts

    @staticmethod
    def _guess(
        q: BrowseQuery,
        partitions: list[PartitionInfo],
        reader: PartitionReader,
        scan_max: int,
        prefetch: Prefetch,
    ) -> None:
        """Start each partition's first fetch on the offsets the coordinator last heard
        from its leader (``Prefetch``), where the page's start does not need the leader's
        answer first (a time does)."""
        if q.start == "time" and not q.cursor:
            return
        cursor = parse_cursor(q.cursor, [p.partition for p in partitions]) if q.cursor else None
        direction: Direction = (
            q.direction if q.cursor else ("backward" if q.start == "end" else "forward")
        )
        budget = budget_per_partition(scan_max, len(partitions), reader.limit)
        for info in partitions:
            if info.high_watermark is None:
                continue
            hint = PartitionRange(info.partition, info.log_start_offset or 0, info.high_watermark)
            if cursor is not None:
                position = cursor[info.partition]
            elif q.start == "offset" and q.offset is not None:
                position = q.offset
            else:
                position = hint.log_start_offset if q.start == "beginning" else hint.high_watermark
            offset = first_fetch(hint, position, direction, reader.limit, budget)
            if offset is not None:
                prefetch.start(info.partition, offset, reader.fetch_bytes)

    @staticmethod
    def _start(q: BrowseQuery, offsets: PartitionOffsets) -> int:
        if q.start == "beginning":
            return offsets.log_start_offset
        if q.start == "offset" and q.offset is not None:
            return q.offset
        if q.start == "time" and offsets.offset_for_timestamp is not None:
            return offsets.offset_for_timestamp
        return offsets.high_watermark  # end, or a time after the last message

    async def browse(self, ctx: Ctx) -> web.StreamResponse:
        name = ctx.request.match_info["topic"]
        try:
            q = browse_query(ctx.request.query)
        except ConveyorError as exc:
            q = browse_query({})
            topic = await self._leaders(ctx, name)
            return ctx.render(
                "messages.html",
                400,
                topic=topic,
                q=q,
                page_=None,
                problems={},
                form_error=exc.message,
                page="topics",
                cursor=format_cursor,
            )
        topic, page, problems = await self.read(ctx, name, q)
        return ctx.render(
            "messages.html",
            topic=topic,
            q=q,
            page_=page,
            problems=problems,
            form_error=None,
            page="topics",
            cursor=format_cursor,
        )

    async def download(self, ctx: Ctx) -> web.StreamResponse:
        name = ctx.request.match_info["topic"]
        q = browse_query(ctx.request.query)
        _, page, problems = await self.read(ctx, name, q)
        body = {
            "topic": name,
            "query": q.params(cursor=q.cursor, dir=q.direction),
            "scanned": page.scanned if page else 0,
            "scan_max": page.scan_max if page else 0,
            "problems": {str(k): v for k, v in problems.items()},
            "messages": [m.as_json() for m in page.messages] if page else [],
        }
        response = web.Response(
            text=json.dumps(body, indent=2, ensure_ascii=False),
            content_type="application/json",
            headers={"Content-Disposition": f'attachment; filename="{name}-messages.json"'},
        )
        return ctx.console.finish(ctx, response)

    async def produce_form(self, ctx: Ctx, status: int = 200, **values: Any) -> web.StreamResponse:
        name = ctx.request.match_info["topic"]
        topic = await self._leaders(ctx, name)
        values.setdefault("form", {})
        values.setdefault("result", None)
        values.setdefault("form_error", None)
        return ctx.render("produce.html", status, topic=topic, page="topics", **values)

    async def produce(self, ctx: Ctx) -> web.StreamResponse:
        name = ctx.request.match_info["topic"]
        form = await ctx.form()
        try:
            parsed = forms.produce(form)
            metadata = await ctx.api.metadata(name)
            brokers = [b for b in metadata.brokers if b.alive]
            if not brokers:
                raise ConveyorError("no live broker", code=ErrorCode.LEADER_NOT_AVAILABLE)
            answer = await ctx.api.produce(
                brokers[0].url, name, JsonProduceRequest(records=[parsed.record])
            )
            result = answer.results[0]
            if result.error is not None:
                raise ConveyorError(
                    f"{result.error.code}: {result.error.message}",
                    code=ErrorCode[result.error.code]
                    if result.error.code in ErrorCode.__members__
                    else ErrorCode.INTERNAL_ERROR,
                )
        except ConveyorError as exc:
            if exc.code in (ErrorCode.UNAUTHENTICATED, ErrorCode.FORBIDDEN):
                raise
            return await self.produce_form(
                ctx, exc.code.http_status, form=form, form_error=exc.message
            )
        return await self.produce_form(
            ctx,
            form=form,
            result={
                "partition": result.partition,
                "offset": result.offset,
                "routing": parsed.routing,
            },
        )
