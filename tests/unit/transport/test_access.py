"""Request ids and the access log on a real aiohttp application served by
``listener.serve`` (a uvloop thread), with a route that logs on the request's behalf."""

from __future__ import annotations

import asyncio
import io
import json
import logging
import threading
import urllib.error
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager

import pytest
from aiohttp import web

from conveyor.transport.access import ACCESS_LOG_KEY, REQUEST_ID_HEADER
from conveyor.transport.limits import ConnectionLimits
from conveyor.transport.listener import serve
from conveyor.transport.logs import setup_logging
from conveyor.transport.runner import new_event_loop
from conveyor.transport.server import Route, build_app
from tests.waiting import wait_for


async def _hello(request: web.Request) -> web.Response:
    logging.getLogger("conveyor.test").info("handling %s", request.path)
    return web.Response(text="hello")


@contextmanager
def served(access_log: bool) -> Iterator[tuple[int, io.StringIO]]:
    stream = io.StringIO()
    root = logging.getLogger()
    saved = root.handlers[:], root.level
    setup_logging("broker", "INFO", "json", broker_id=3, stream=stream)
    app = build_app("broker", [Route("GET", "/hello", _hello, "says hello")])
    app[ACCESS_LOG_KEY] = access_log
    loop, stop, port = new_event_loop(), asyncio.Event(), []

    async def main() -> None:
        listening: asyncio.Future[int] = loop.create_future()
        listening.add_done_callback(lambda f: port.append(f.result()))
        await serve(app, host="127.0.0.1", port=0, ssl_context=None, limits=ConnectionLimits(),
                    shutdown_timeout_s=1, stop=stop, listening=listening)  # fmt: skip

    thread = threading.Thread(target=lambda: loop.run_until_complete(main()), daemon=True)
    thread.start()
    try:
        wait_for(lambda: bool(port), 10, "the listener to start")
        yield port[0], stream
    finally:
        loop.call_soon_threadsafe(stop.set)
        thread.join(10)
        loop.close()
        root.handlers[:], _ = saved
        root.setLevel(saved[1])


def get(port: int, path: str, request_id: str | None = None) -> tuple[int, str]:
    request = urllib.request.Request(f"http://127.0.0.1:{port}{path}")
    if request_id is not None:
        request.add_header(REQUEST_ID_HEADER, request_id)
    try:
        with urllib.request.urlopen(request, timeout=5) as response:
            return response.status, response.headers[REQUEST_ID_HEADER]
    except urllib.error.HTTPError as error:
        return error.code, error.headers[REQUEST_ID_HEADER]


def lines(stream: io.StringIO) -> list[dict[str, object]]:
    return [json.loads(line) for line in stream.getvalue().splitlines()]


def test_request_ids_are_echoed_and_carried_by_the_requests_log_lines() -> None:
    with served(access_log=False) as (port, stream):
        assert get(port, "/hello", "client-id-1") == (200, "client-id-1")
        status, made_up = get(port, "/hello", "not a sane id\u00e9")
        assert status == 200 and made_up != "not a sane id" and len(made_up) == 16
        assert get(port, "/missing")[0] == 404
    handled = [line for line in lines(stream) if line["logger"] == "conveyor.test"]
    assert [line["request_id"] for line in handled] == ["client-id-1", made_up]
    assert all(line["broker"] == 3 and line["service"] == "broker" for line in handled)
    assert not [line for line in lines(stream) if line["logger"] == "conveyor.access"]


@pytest.mark.parametrize("path", ["/hello?token=secret-in-query", "/missing"])
def test_the_access_log_has_one_line_per_request(path: str) -> None:
    with served(access_log=True) as (port, stream):
        status, request_id = get(port, path, "abc")
        wait_for(
            lambda: any(line["logger"] == "conveyor.access" for line in lines(stream)),
            5,
            "the access line",
        )
    (access,) = [line for line in lines(stream) if line["logger"] == "conveyor.access"]
    assert "secret-in-query" not in stream.getvalue()
    assert access["method"] == "GET" and access["path"] == path.partition("?")[0]
    assert access["status"] == status and access["request_id"] == request_id == "abc"
    assert access["principal"] == "-" and access["remote"] == "127.0.0.1"
    assert isinstance(access["bytes"], int) and access["bytes"] > 0
    assert isinstance(access["duration_ms"], float) and access["duration_ms"] >= 0
