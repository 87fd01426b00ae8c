"""Waiting for a coordinator's answer without waiting for a coordinator that will never
answer (``coordinators.py``: a paused coordinator's kernel still accepts connections and
requests, so nothing fails until the request's timeout).

The sync client (urllib3) blocks in ``getresponse``; its connections here first wait for
the answer's first byte in periods of :data:`TAKEOVER_PROBE_S` and, between periods, call
the check the client set for the request in :data:`WATCH` (it asks the other
coordinators and raises ``NOT_COORDINATOR`` naming the new active one; urllib3 then
discards the connection). Requests with no check set (brokers, single coordinators) wait
as urllib3 does. The read timeout urllib3 set still bounds the whole wait. The async
client needs no connection class: it waits on the request's task in the same periods.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from contextvars import ContextVar
from typing import Final

import urllib3
from urllib3.connection import HTTPConnection, HTTPSConnection
from urllib3.response import HTTPResponse
from urllib3.util.wait import wait_for_read

from conveyor.transport.coordinators import TAKEOVER_PROBE_S

# The check of the request this thread is sending: returns to keep waiting, raises to
# give the request up. Context-local, so each thread (and each probe) has its own.
WATCH: ContextVar[Callable[[], None] | None] = ContextVar("conveyor_takeover", default=None)


def _await_first_byte(conn: HTTPConnection) -> None:
    check = WATCH.get()
    sock = conn.sock
    if check is None or sock is None:
        return
    budget_s: float | None = conn.timeout  # urllib3 set the read timeout: float or None
    started = time.monotonic()
    while True:
        left_s = None if budget_s is None else budget_s - (time.monotonic() - started)
        if left_s is not None and left_s <= 0:
            raise TimeoutError("timed out")  # urllib3 makes it a ReadTimeoutError
        period_s = TAKEOVER_PROBE_S if left_s is None else min(TAKEOVER_PROBE_S, left_s)
        if getattr(sock, "pending", lambda: 0)() or wait_for_read(sock, timeout=period_s):
            break
        check()
    if budget_s is not None:  # getresponse applies what is left of the read timeout
        conn.timeout = max(budget_s - (time.monotonic() - started), 0.001)


class WatchedHTTPConnection(HTTPConnection):
    def getresponse(self) -> HTTPResponse:  # type: ignore[override]  # as urllib3 does
        _await_first_byte(self)
        return super().getresponse()


class WatchedHTTPSConnection(HTTPSConnection):
    def getresponse(self) -> HTTPResponse:  # type: ignore[override]  # as urllib3 does
        _await_first_byte(self)
        return super().getresponse()


class _Pool(urllib3.HTTPConnectionPool):
    ConnectionCls = WatchedHTTPConnection


class _TLSPool(urllib3.HTTPSConnectionPool):
    ConnectionCls = WatchedHTTPSConnection


POOL_CLASSES: Final[dict[str, type[urllib3.HTTPConnectionPool]]] = {
    "http": _Pool,
    "https": _TLSPool,
}
