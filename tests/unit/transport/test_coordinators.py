"""Finding the active coordinator (transport/coordinators.py and the HTTP clients' failover):
the URL list parser (table and fuzz), the set's bookkeeping, and real HTTP servers
playing an active coordinator, a standby and a dead one."""

from __future__ import annotations

import asyncio
import socket
import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest
from aiohttp import web
from hypothesis import given
from hypothesis import strategies as st

from conveyor.broker.rules import coordinator_epoch_after
from conveyor.protocol.errors import ConveyorError, ErrorCode
from conveyor.protocol.messages import CoordinatorStatus
from conveyor.transport.client import AsyncHTTP, SyncHTTP
from conveyor.transport.coordinators import CoordinatorSet, parse_coordinator_urls, takeover_by
from conveyor.transport.server import error_response, json_response


def test_a_list_of_urls_parses_in_order_without_duplicates() -> None:
    text = " http://a:1/, https://b:2,http://a:1 ,,http://c "
    assert parse_coordinator_urls(text) == ("http://a:1", "https://b:2", "http://c")


@pytest.mark.parametrize("text", ["", " , ", "a:1", "ftp://a:1", "http://a:1/path", "http://"])
def test_bad_lists_are_refused_with_the_reason(text: str) -> None:
    with pytest.raises(ValueError, match="coordinator URL"):
        parse_coordinator_urls(text)


@given(st.text(max_size=200))
def test_the_parser_only_returns_urls_or_raises_value_error(text: str) -> None:
    try:
        urls = parse_coordinator_urls(text)
    except ValueError:
        return
    assert urls and all(u.startswith(("http://", "https://")) and "," not in u for u in urls)


def test_the_set_routes_only_requests_to_its_coordinators() -> None:
    coordinators = CoordinatorSet.parse("http://a:1,http://b:2")
    assert coordinators.origin_of("http://a:1/v1/topics") == "http://a:1"
    assert coordinators.origin_of("http://b:2") == "http://b:2"
    assert coordinators.origin_of("http://a:10/v1/topics") is None  # another port
    assert coordinators.origin_of("http://broker:9/v1/partitions") is None
    coordinators.failed("http://a:1")
    assert coordinators.target("http://a:1/v1/topics", "http://a:1") == "http://b:2/v1/topics"
    coordinators.failed("http://a:1")  # not the active one any more: nothing changes
    assert coordinators.active == "http://b:2"
    assert coordinators.redirected("http://c:3")
    assert not coordinators.redirected(None) and not coordinators.redirected("nonsense")
    assert coordinators.active == "http://c:3"


def _status(role: str, epoch: int) -> CoordinatorStatus:
    return CoordinatorStatus(role=role, epoch=epoch)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("silent", "others", "expected"),
    [
        (None, {"b": _status("active", 8), "c": None}, "b"),  # paused active or standby
        (_status("active", 7), {"b": _status("active", 8)}, "b"),  # lost its lease
        (_status("active", 8), {"b": _status("active", 7)}, None),  # b is stale: wait
        (_status("standby", 8), {"b": _status("active", 8)}, "b"),
        (None, {"b": _status("standby", 8), "c": None}, None),  # an election: wait
        (None, {"b": _status("active", 7), "c": _status("active", 9)}, "c"),  # the latest
        (None, {}, None),
    ],
)
def test_a_silent_coordinator_is_left_only_for_one_that_took_over(
    silent: CoordinatorStatus | None, others: dict[str, CoordinatorStatus | None], expected: str
) -> None:
    assert takeover_by(silent, others) == expected


def test_broker_epoch_rule() -> None:
    assert coordinator_epoch_after(0, 7) == 7
    assert coordinator_epoch_after(7, 9) == 9
    assert coordinator_epoch_after(9, 9) == 9
    assert coordinator_epoch_after(9, 7) is None  # deposed: refused
    assert coordinator_epoch_after(9, 0) == 9  # a single coordinator: accepted, not recorded


# ---- real HTTP servers -----------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Coordinators:
    """An active coordinator and a standby naming it, on a loop in a thread, plus a port
    nobody listens on."""

    def __init__(self) -> None:
        self.dead = f"http://127.0.0.1:{free_port()}"
        # accepts connections (the kernel does) and never answers: a paused process
        self._silent = socket.create_server(("127.0.0.1", 0))
        self.silent = f"http://127.0.0.1:{self._silent.getsockname()[1]}"
        self.active = f"http://127.0.0.1:{free_port()}"
        self.standby = f"http://127.0.0.1:{free_port()}"
        self.hits: list[str] = []
        self.loop = asyncio.new_event_loop()
        self.runners: list[web.AppRunner] = []

    def app(self, url: str, is_active: bool) -> web.Application:
        async def handler(_: web.Request) -> web.Response:
            self.hits.append(url)
            if is_active:
                return json_response(CoordinatorStatus(role="active", url=url))
            error = ConveyorError("standby", code=ErrorCode.NOT_COORDINATOR, active_url=self.active)
            return error_response(error)

        async def status(_: web.Request) -> web.Response:
            role = "active" if is_active else "standby"
            return json_response(CoordinatorStatus(role=role, epoch=3, active_url=self.active))

        app = web.Application()
        app.router.add_route("*", "/v1/thing", handler)
        app.router.add_get("/v1/coordinator", status)
        return app

    async def start(self) -> None:
        for url, is_active in ((self.active, True), (self.standby, False)):
            runner = web.AppRunner(self.app(url, is_active))
            await runner.setup()
            port = int(url.rsplit(":", 1)[1])
            await web.TCPSite(runner, "127.0.0.1", port).start()
            self.runners.append(runner)

    async def stop(self) -> None:
        for runner in self.runners:
            await runner.cleanup()
        self._silent.close()


@pytest.fixture
def coordinators() -> Iterator[Coordinators]:
    servers = Coordinators()
    thread = threading.Thread(target=servers.loop.run_forever, daemon=True)
    thread.start()
    asyncio.run_coroutine_threadsafe(servers.start(), servers.loop).result(10)
    try:
        yield servers
    finally:
        asyncio.run_coroutine_threadsafe(servers.stop(), servers.loop).result(10)
        servers.loop.call_soon_threadsafe(servers.loop.stop)
        thread.join(10)
        servers.loop.close()


def test_sync_client_skips_a_dead_coordinator_and_follows_a_standby(
    coordinators: Coordinators,
) -> None:
    urls = CoordinatorSet.parse(f"{coordinators.dead},{coordinators.standby},{coordinators.active}")
    http = SyncHTTP(coordinators=urls)
    status = http.call("GET", f"{urls.primary}/v1/thing", CoordinatorStatus)
    assert status.url == coordinators.active
    assert coordinators.hits == [coordinators.standby, coordinators.active]
    http.call("POST", f"{urls.primary}/v1/thing", CoordinatorStatus, body={})
    assert coordinators.hits[-1] == coordinators.active and len(coordinators.hits) == 3
    http.close()


def test_async_client_does_the_same(coordinators: Coordinators) -> None:
    urls = CoordinatorSet.parse(f"{coordinators.standby},{coordinators.dead}")

    async def scenario() -> Any:
        http = AsyncHTTP(coordinators=urls)
        try:
            return await http.call("GET", f"{urls.primary}/v1/thing", CoordinatorStatus)
        finally:
            await http.close()

    assert asyncio.run(scenario()).url == coordinators.active  # the standby named it


def test_with_no_coordinator_answering_the_error_is_retriable(coordinators: Coordinators) -> None:
    urls = CoordinatorSet.parse(coordinators.dead)
    http = SyncHTTP(coordinators=urls)
    with pytest.raises(ConveyorError) as caught:
        http.call("GET", f"{urls.primary}/v1/thing", CoordinatorStatus)
    assert caught.value.code is ErrorCode.NETWORK_ERROR and caught.value.retriable


def test_sync_client_leaves_a_coordinator_that_accepts_but_never_answers(
    coordinators: Coordinators,
) -> None:
    """Within about a probe period (1 s), not the request timeout (30 s)."""
    urls = CoordinatorSet.parse(
        f"{coordinators.silent},{coordinators.standby},{coordinators.active}"
    )
    http = SyncHTTP(coordinators=urls, timeout_s=30)
    started = time.monotonic()
    status = http.call("POST", f"{urls.primary}/v1/thing", CoordinatorStatus, body={})
    assert status.url == coordinators.active and time.monotonic() - started < 10
    http.close()


def test_async_client_leaves_it_too(coordinators: Coordinators) -> None:
    urls = CoordinatorSet.parse(f"{coordinators.silent},{coordinators.active}")

    async def scenario() -> tuple[CoordinatorStatus, float]:
        http = AsyncHTTP(coordinators=urls, timeout_s=30)
        started = time.monotonic()
        try:
            status = await http.call("GET", f"{urls.primary}/v1/thing", CoordinatorStatus)
            return status, time.monotonic() - started
        finally:
            await http.close()

    status, elapsed_s = asyncio.run(scenario())
    assert status.url == coordinators.active and elapsed_s < 10


@pytest.mark.parametrize("several", [False, True])
def test_with_nobody_else_active_a_silent_coordinator_times_out_as_the_client_says(
    coordinators: Coordinators, several: bool
) -> None:
    """The client's own timeout applies to requests that give none (urllib3 and aiohttp
    took timeout=None as "wait forever"); a silent coordinator with only a standby beside
    it (an election) is not left: the request may have had an effect."""
    text = f"{coordinators.silent},{coordinators.dead}" if several else coordinators.silent
    urls = CoordinatorSet.parse(text)
    http = SyncHTTP(coordinators=urls, timeout_s=1.5)
    started = time.monotonic()
    with pytest.raises(ConveyorError) as caught:
        http.call("GET", f"{urls.primary}/v1/thing", CoordinatorStatus)
    assert caught.value.code is ErrorCode.NETWORK_ERROR and 1.4 < time.monotonic() - started < 8
    http.close()

    async def scenario() -> None:
        client = AsyncHTTP(coordinators=urls, timeout_s=1.5)
        try:
            await client.call("GET", f"{urls.primary}/v1/thing", CoordinatorStatus)
        finally:
            await client.close()

    started = time.monotonic()
    with pytest.raises(ConveyorError) as caught:
        asyncio.run(scenario())
    assert caught.value.code is ErrorCode.NETWORK_ERROR and 1.4 < time.monotonic() - started < 8


def test_an_answer_that_arrives_while_the_others_are_asked_is_the_outcome(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The silent coordinator answers (here: an error of its own) while the probes are in
    flight and another says it took over: that answer is raised, not a made-up
    NOT_COORDINATOR, and asyncio has no unretrieved task exception to report (seen in the
    transactional chaos campaign, issue 21); a success in that window is returned."""
    from conveyor.transport import coordinators as module

    monkeypatch.setattr(module, "TAKEOVER_PROBE_S", 0.05)
    taken_over = CoordinatorStatus(role="active", epoch=9, url="http://b:1")

    async def status(url: str) -> CoordinatorStatus | None:
        await asyncio.sleep(0.2)  # the silent one answers meanwhile
        return taken_over if url == "http://b:1" else None

    async def answer(outcome: Exception | str) -> str:
        await asyncio.sleep(0.1)
        if isinstance(outcome, Exception):
            raise outcome
        return outcome

    async def scenario() -> tuple[str, BaseException | None]:
        pair = CoordinatorSet(["http://a:1", "http://b:1"])
        ok = await module._watched(pair, "http://a:1", answer("done"), status)
        own = ConveyorError("its own answer", code=ErrorCode.INVALID_REQUEST)
        try:
            await module._watched(pair, "http://a:1", answer(own), status)
        except ConveyorError as e:
            return ok, e
        return ok, None

    unretrieved: list[dict[str, Any]] = []
    loop = asyncio.new_event_loop()
    loop.set_exception_handler(lambda _loop, context: unretrieved.append(context))
    try:
        ok, raised = loop.run_until_complete(scenario())
    finally:
        loop.close()
    assert ok == "done"
    assert raised is not None and raised.code == ErrorCode.INVALID_REQUEST
    assert not unretrieved
