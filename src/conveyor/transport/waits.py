"""Waiting with a deadline in asyncio, without ``asyncio.wait_for``.

Python 3.11's ``wait_for`` can lose a cancellation that arrives together with the awaited
result (gh-86296, fixed in 3.12): the cancelled task carries on. A client's background
task (a fetcher's supervisor waiting on its refresh event, a sender waiting for work) then
outlives ``close()``, which waits its whole timeout and stops the loop with the task's TLS
connections open (uvloop: EBUSY at ``loop.close()``). ``asyncio.timeout`` does not lose
it; ruff bans ``asyncio.wait_for`` in the package (pyproject.toml) so it stays that way.

``asyncio.gather`` has the sibling problem: when one awaitable fails, gather raises at once
and leaves the others running, owned by nobody. A client's per-partition requests (list
offsets of every partition, acknowledge on every leader) then outlive the call and its
client's ``close()``: seen as a consumer's loop closed with their TLS connections open.
:func:`gather_all` cancels and awaits them before raising.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable
from typing import Any, TypeVar, overload

T = TypeVar("T")
T1 = TypeVar("T1")
T2 = TypeVar("T2")
T3 = TypeVar("T3")


async def wait_event(event: asyncio.Event, timeout_s: float | None) -> bool:
    """Wait until ``event`` is set or ``timeout_s`` passed (None: no bound); True if set."""
    try:
        async with asyncio.timeout(timeout_s):
            await event.wait()
    except TimeoutError:
        return False
    return True


async def within(awaitable: Awaitable[T], timeout_s: float | None) -> T:
    """``await awaitable``, raising TimeoutError after ``timeout_s`` (None: no bound)."""
    async with asyncio.timeout(timeout_s):
        return await awaitable


@overload
async def gather_all(a: Awaitable[T1], b: Awaitable[T2], /) -> tuple[T1, T2]: ...
@overload
async def gather_all(
    a: Awaitable[T1], b: Awaitable[T2], c: Awaitable[T3], /
) -> tuple[T1, T2, T3]: ...
@overload
async def gather_all(*awaitables: Awaitable[T]) -> tuple[T, ...]: ...
async def gather_all(*awaitables: Awaitable[Any]) -> Any:
    """All results in order, as ``asyncio.gather`` (typed per position for two or three
    awaitables, so results of different types unpack); on the first failure (or when the caller is
    cancelled) the others are cancelled and awaited before the error is raised, so none
    outlives the call."""
    tasks = [asyncio.ensure_future(a) for a in awaitables]
    try:
        results = await asyncio.gather(*tasks)
    except BaseException:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        raise
    return tuple(results)


async def settle_all(*awaitables: Awaitable[T]) -> list[T | BaseException]:
    """Every outcome in order, a failure as its exception: waits for all, so none is
    left running (``asyncio.gather(..., return_exceptions=True)``)."""
    return list(await asyncio.gather(*awaitables, return_exceptions=True))
