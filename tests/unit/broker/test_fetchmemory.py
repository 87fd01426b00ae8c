"""The broker-wide fetch memory budget: pure rules, then the service applying them."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from pathlib import Path

from hypothesis import given
from hypothesis import strategies as st

from conveyor.broker.fetchmemory import FetchMemory
from conveyor.protocol.records import decode_batches, encode_batch
from tests.unit.broker.conftest import FakeNetwork, brokers, heartbeat_answer

Run = Callable[[Callable[[], Awaitable[None]]], None]
KIB = 1024


def test_grant_is_what_was_asked_while_the_budget_has_room() -> None:
    memory = FetchMemory(capacity=1024 * KIB, floor=64 * KIB)
    assert memory.grant(512 * KIB) == 512 * KIB
    memory.hold(900 * KIB)
    assert memory.grant(100 * KIB) == 100 * KIB
    assert memory.cut == 0


def test_grant_shrinks_to_the_room_left_then_to_the_floor() -> None:
    memory = FetchMemory(capacity=1024 * KIB, floor=64 * KIB)
    memory.hold(800 * KIB)
    assert memory.grant(1024 * KIB) == 224 * KIB  # the room left
    memory.hold(224 * KIB)
    assert memory.grant(1024 * KIB) == 64 * KIB  # spent: the floor
    assert memory.grant(10 * KIB) == 10 * KIB  # never more than asked
    memory.hold(5000 * KIB)  # answers past the budget are still counted
    assert memory.grant(1024 * KIB) == 64 * KIB
    assert memory.cut == 0  # asking is not answering: grant counts nothing
    memory.release(6024 * KIB)
    assert memory.held == 0 and memory.grant(1024 * KIB) == 1024 * KIB


def test_an_answer_is_counted_as_cut_once_and_only_when_the_budget_limited_it() -> None:
    memory = FetchMemory(capacity=100 * KIB, floor=64 * KIB)
    memory.hold(100 * KIB)
    for _ in range(5):  # a long poll asks again and again while it waits
        granted = memory.grant(1024 * KIB)
    memory.hold(64 * KIB, wanted=1024 * KIB, granted=granted)  # one answer: one cut
    assert memory.cut == 1
    memory.hold(10 * KIB, wanted=10 * KIB, granted=10 * KIB)  # granted in full: not cut
    assert memory.cut == 1


@given(
    st.integers(1, 1 << 26),
    st.lists(st.tuples(st.integers(1, 1 << 24), st.booleans()), max_size=50),
)
def test_grant_bounds(capacity: int, steps: list[tuple[int, bool]]) -> None:
    memory = FetchMemory(capacity=capacity)
    outstanding: list[int] = []
    for wanted, release in steps:
        granted = memory.grant(wanted)
        assert min(wanted, memory.floor) <= granted <= wanted
        if memory.held + wanted <= capacity:
            assert granted == wanted
        memory.hold(granted)
        outstanding.append(granted)
        if release and outstanding:
            memory.release(outstanding.pop(0))
        assert memory.held == sum(outstanding)


def test_fetches_past_the_budget_are_cut_to_one_batch_until_answers_are_released(
    tmp_path: Path, network: FakeNetwork, run: Run
) -> None:
    big = [(None, bytes([i]) * (100 * KIB)) for i in range(6)]

    async def body() -> None:
        async with brokers(tmp_path, network, fetch_memory_max_bytes=256 * KIB) as (broker,):
            await broker.apply_heartbeat_response(heartbeat_answer(1, "t", [1]))
            for key, value in big:
                await broker.produce("t", 0, encode_batch([(key, value)]), acks="all")
            first = await broker.fetch("t", 0, 0, max_bytes=1024 * KIB)
            assert len(decode_batches(first.batches)) == 2  # 256 KiB of room: 2 whole batches
            assert broker.fetch_memory.held == len(first.batches)
            second = await broker.fetch("t", 0, 2, max_bytes=1024 * KIB)
            assert [r.offset for r in decode_batches(second.batches)] == [2]  # at least one
            broker.fetch_memory.release(len(first.batches))
            broker.fetch_memory.release(len(second.batches))
            third = await broker.fetch("t", 0, 3, max_bytes=1024 * KIB)
            assert [r.offset for r in decode_batches(third.batches)] == [3, 4]
            assert broker.fetch_memory.cut == 3  # each asked for more than the room left

    run(body)
