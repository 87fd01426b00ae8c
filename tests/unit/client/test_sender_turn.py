"""A partition's write turn (``client/sender.py``): FIFO, ``try_take`` never waits, and a
turn handed to a task cancelled before it ran passes on to the next."""

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
            await turn.take()
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
        first = asyncio.create_task(turn.take())
        second = asyncio.create_task(turn.take())
        await asyncio.sleep(0)
        turn.release()  # handed to first...
        first.cancel()  # ...which is cancelled before it runs
        await asyncio.gather(first, return_exceptions=True)
        await asyncio.wait_for(second, 5)  # the turn went on to second
        turn.release()
        return turn.try_take()

    assert asyncio.run(scenario())
