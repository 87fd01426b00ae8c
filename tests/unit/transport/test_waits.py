"""conveyor.transport.waits: a task cancelled while its event is being set stops.

Python 3.11's ``asyncio.wait_for`` loses that cancellation (gh-86296): with it in place of
``wait_event`` both orders below return "carried on" (checked on 3.11.7), which is how a
consumer's fetch supervisor outlived close() and left TLS connections open (uvloop EBUSY).
"""

from __future__ import annotations

import asyncio

import pytest

from conveyor.transport.waits import gather_all, wait_event, within


@pytest.mark.parametrize("cancel_first", [True, False])
def test_a_cancellation_arriving_with_the_event_is_not_lost(cancel_first: bool) -> None:
    async def scenario() -> str:
        event = asyncio.Event()

        async def waiter() -> str:
            await wait_event(event, 10)
            return "carried on"

        task = asyncio.create_task(waiter())
        await asyncio.sleep(0)  # the waiter is waiting
        if cancel_first:
            task.cancel()
        event.set()
        if not cancel_first:
            task.cancel()
        try:
            return await task
        except asyncio.CancelledError:
            return "cancelled"

    assert asyncio.run(scenario()) == "cancelled"


def test_wait_event_says_whether_the_event_was_set() -> None:
    async def scenario() -> tuple[bool, bool]:
        event = asyncio.Event()
        timed_out = await wait_event(event, 0.01)
        event.set()
        return timed_out, await wait_event(event, 0.01)

    assert asyncio.run(scenario()) == (False, True)


def test_within_returns_the_result_or_raises_timeout_error() -> None:
    async def scenario() -> int:
        with pytest.raises(TimeoutError):
            await within(asyncio.sleep(10), 0.01)
        return await within(asyncio.sleep(0, result=7), 1)

    assert asyncio.run(scenario()) == 7


def test_a_failure_in_gather_all_stops_the_others_before_it_raises() -> None:
    """asyncio.gather raises the first error and leaves the siblings running (checked:
    with it here, 'slow' is still pending when the error arrives); gather_all does not."""

    async def scenario() -> tuple[bool, bool]:
        slow_started = asyncio.Event()
        slow: list[asyncio.Task[object]] = []

        async def fails() -> int:
            await slow_started.wait()
            raise LookupError("no leader")

        async def waits_forever() -> int:
            slow.append(asyncio.current_task())  # type: ignore[arg-type]
            slow_started.set()
            await asyncio.Event().wait()
            return 1

        with pytest.raises(LookupError, match="no leader"):
            await gather_all(waits_forever(), fails())
        return slow[0].done(), slow[0].cancelled()

    assert asyncio.run(scenario()) == (True, True)


def test_gather_all_returns_results_in_order_and_stops_them_when_cancelled() -> None:
    async def scenario() -> tuple[list[int], bool]:
        async def value(v: int) -> int:
            await asyncio.sleep(0.001 * (3 - v))
            return v

        results = await gather_all(value(1), value(2), value(3))
        inner: list[asyncio.Task[object]] = []
        both_started = asyncio.Event()

        async def forever() -> int:
            inner.append(asyncio.current_task())  # type: ignore[arg-type]
            if len(inner) == 2:
                both_started.set()
            await asyncio.Event().wait()
            return 0

        outer = asyncio.create_task(gather_all(forever(), forever()))
        await both_started.wait()
        outer.cancel()
        with pytest.raises(asyncio.CancelledError):
            await outer
        return list(results), all(t.cancelled() for t in inner)

    assert asyncio.run(scenario()) == ([1, 2, 3], True)
