"""Waiting for partitions to change: the long-polls' one way to wait (Kafka Fetch, the
HTTP fetch, ShareFetch).

A partition's wake-up (``CoreDriver.wakeup``) is a one-shot future shared by every waiter
on that partition, resolved at its next ``Wake`` (new data visible, a role change) and
replaced by a fresh one. Take it before looking at the partition, so a change between
the look and the wait is not missed. Wait with :func:`wait_any` only: it never cancels
what it waits on (a waiter that cancelled the shared future would wake every other one
for nothing), and it waits on many partitions without a task each.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Iterable
from typing import Any

Waitable = asyncio.Future[None] | asyncio.Event


async def wait_any(waits: Iterable[Waitable], timeout_s: float) -> None:
    """Until one of ``waits`` is done (a future) or set (an event), or ``timeout_s`` passed;
    with nothing to wait on, the whole ``timeout_s``."""
    futures: list[asyncio.Future[None]] = []
    events: list[asyncio.Event] = []
    for wait in waits:
        if isinstance(wait, asyncio.Event):
            events.append(wait)
        else:
            futures.append(wait)
    if timeout_s <= 0 or any(f.done() for f in futures) or any(e.is_set() for e in events):
        return
    if not futures and not events:
        await asyncio.sleep(timeout_s)
        return
    # An event has no callback: a task each (ShareFetch's handle changes).
    tasks = [asyncio.ensure_future(e.wait()) for e in events]
    # Not asyncio.wait_for / timeout(): they would cancel a shared future on timeout.
    waiting: list[asyncio.Future[Any]] = [*futures, *tasks]
    try:
        await asyncio.wait(waiting, timeout=timeout_s, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
