"""A partition's write turn (``client/sender.py``): FIFO, ``try_take`` never waits, a
turn handed to a task cancelled before it ran passes on to the next, and a release between
lining up and waiting hands the turn to that place."""

from __future__ import annotations

import asyncio

from conveyor.client.sender import _Turn


def test_turns_are_taken_in_order_and_try_take_says_whether_free() -> None:
    async def scenario() -> list[str]:
        turn = _Turn()
        order: list[str] = []
        assert turn.try_take()
        assert not turn.try_take()

        async def waiter(name: str) -> None:
            await turn.take(turn.line_up())
            order.append(name)
            await asyncio.sleep(0)
            turn.release()

        tasks = [asyncio.create_task(waiter(n)) for n in "abc"]
        await asyncio.sleep(0)
        assert not turn.try_take()  # held, and others wait
        turn.release()
        await asyncio.gather(*tasks)
        assert turn.try_take()  # free again once everyone released
        return order

    assert asyncio.run(scenario()) == ["a", "b", "c"]


def test_a_turn_handed_to_a_cancelled_waiter_passes_on() -> None:
    async def scenario() -> bool:
        turn = _Turn()
        assert turn.try_take()
        first = asyncio.create_task(turn.take(turn.line_up()))
        second = asyncio.create_task(turn.take(turn.line_up()))
        await asyncio.sleep(0)
        turn.release()  # handed to first...
        first.cancel()  # ...which is cancelled before it runs
        await asyncio.gather(first, return_exceptions=True)
        await asyncio.wait_for(second, 5)  # the turn went on to second
        turn.release()
        return turn.try_take()

    assert asyncio.run(scenario())


def test_a_release_between_lining_up_and_waiting_hands_the_turn_to_that_place() -> None:
    """What Sender._send does: line up, then ``_left``, which may write the request that
    holds the turn and release it at once (no task in between), then wait. The release
    must reach the place; waiting after a release that found no one in line deadlocked
    the partition (found by test_batch_api's leader-death test)."""

    async def scenario() -> bool:
        turn = _Turn()
        assert turn.try_take()  # the request ahead holds it
        assert not turn.try_take()
        place = turn.line_up()
        turn.release()  # the request ahead written synchronously
        await asyncio.wait_for(turn.take(place), 5)
        assert not turn.try_take()  # now held by this place
        turn.release()
        return turn.try_take()

    assert asyncio.run(scenario())
