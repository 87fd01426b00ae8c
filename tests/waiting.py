"""The one way tests wait: poll a condition until it holds or a deadline passes.

Never a bare sleep (a flaky test is a bug): every wait names what it waits for, so a
timeout says what did not happen."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable


def wait_for(
    condition: Callable[[], object],
    timeout_s: float,
    what: str = "a condition",
    interval_s: float = 0.05,
) -> float:
    """Poll ``condition`` until it is true; returns the seconds it took. TimeoutError naming
    ``what`` after ``timeout_s``."""
    started = time.monotonic()
    deadline = started + timeout_s
    while not condition():
        if time.monotonic() > deadline:
            raise TimeoutError(f"timed out after {timeout_s}s waiting for {what}")
        time.sleep(interval_s)
    return time.monotonic() - started


async def wait_for_async(
    condition: Callable[[], object],
    timeout_s: float,
    what: str = "a condition",
    interval_s: float = 0.01,
) -> float:
    """:func:`wait_for` for a test running on an event loop (the loop keeps running)."""
    started = time.monotonic()
    deadline = started + timeout_s
    while not condition():
        if time.monotonic() > deadline:
            raise TimeoutError(f"timed out after {timeout_s}s waiting for {what}")
        await asyncio.sleep(interval_s)
    return time.monotonic() - started
