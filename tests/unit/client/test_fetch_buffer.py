from __future__ import annotations

import pytest

from conveyor.client.fetch_buffer import FetchBuffer
from conveyor.client.types import Message, TopicPartition
from conveyor.protocol.record_columns import RecordColumns

A = TopicPartition("t", 0)
B = TopicPartition("t", 1)


def messages(tp: TopicPartition, start: int, count: int) -> list[Message]:
    return [
        Message(tp.topic, tp.partition, o, None, b"v", (), 0) for o in range(start, start + count)
    ]


def columns_of(messages: list[Message]) -> RecordColumns:
    """Messages of one partition as the columns a fetch adds."""
    columns = RecordColumns()
    columns.offsets = [message.offset for message in messages]
    columns.timestamps_ms = [message.timestamp_ms for message in messages]
    columns.keys = [message.key for message in messages]
    columns.values = [message.value for message in messages]
    columns.headers = [message.headers for message in messages]
    return columns


def buffer_with(*tps: TopicPartition, start: int = 0) -> FetchBuffer:
    buffer = FetchBuffer(buffer_max_bytes=1000, fetch_max_bytes=100)
    assert buffer.assign(tps) == sorted(tps)
    for tp in tps:
        buffer.seek(tp, start)
    return buffer


def add(buffer: FetchBuffer, tp: TopicPartition, start: int, count: int, **kw: int) -> bool:
    target = buffer.fetch_target(tp)
    assert target is not None
    assert buffer.try_reserve(100)
    return buffer.add(
        tp,
        kw.get("generation", target[1]),
        columns_of(messages(tp, start, count)),
        next_offset=start + count,
        size_bytes=kw.get("size", 50),
        reserved_bytes=100,
        high_watermark=kw.get("hw", start + count),
    )


def test_take_respects_max_records_and_advances_positions() -> None:
    buffer = buffer_with(A)
    add(buffer, A, 0, 5)
    first = buffer.take(3)
    assert [m.offset for m in first] == [0, 1, 2]
    assert buffer.position(A) == 3
    assert [m.offset for m in buffer.take(10)] == [3, 4]
    assert buffer.position(A) == 5
    assert buffer.uncommitted() == {A: 5}
    buffer.mark_committed({A: 5})
    assert buffer.uncommitted() == {}


def test_partitions_take_turns() -> None:
    buffer = buffer_with(A, B)
    add(buffer, A, 0, 2)
    add(buffer, B, 0, 2)
    add(buffer, A, 2, 2)
    taken = buffer.take(2), buffer.take(2), buffer.take(2)
    assert [{m.partition for m in batch} for batch in taken] == [{0}, {1}, {0}]


def test_seek_drops_prefetched_data_and_stale_fetches() -> None:
    buffer = buffer_with(A)
    stale_generation = buffer.fetch_target(A)
    assert stale_generation is not None
    add(buffer, A, 0, 5)
    buffer.seek(A, 2)
    assert buffer.take(10) == []
    # a fetch sent before the seek comes back: dropped
    assert not add(buffer, A, 0, 5, generation=stale_generation[1])
    assert add(buffer, A, 2, 3)
    assert [m.offset for m in buffer.take(10)] == [2, 3, 4]


def test_reservations_bound_the_buffer_and_signal_space() -> None:
    buffer = FetchBuffer(buffer_max_bytes=300, fetch_max_bytes=100)
    freed: list[int] = []
    buffer.on_space = lambda: freed.append(1)
    buffer.assign([A])
    buffer.seek(A, 0)
    assert buffer.try_reserve(100) and buffer.try_reserve(100) and buffer.try_reserve(100)
    assert not buffer.try_reserve(100)
    buffer.release(100)
    assert freed == [1]
    assert buffer.try_reserve(100)


def test_buffered_bytes_count_until_taken() -> None:
    buffer = buffer_with(A)
    add(buffer, A, 0, 3, size=80)
    assert buffer.buffered_bytes == 80
    buffer.take(10)
    assert buffer.buffered_bytes == 0


def test_caught_up_needs_a_fetch_at_the_high_watermark() -> None:
    buffer = buffer_with(A)
    assert not buffer.caught_up()  # never fetched
    add(buffer, A, 0, 3, hw=3)
    assert not buffer.caught_up()  # data waiting
    buffer.take(10)
    assert buffer.caught_up()
    buffer.update_high_watermark(A, 10)
    assert not buffer.caught_up()


def test_an_empty_long_poll_marks_fetched_without_moving() -> None:
    buffer = buffer_with(A, start=7)
    assert buffer.try_reserve(100)
    buffer.add(
        A, 1, RecordColumns(), next_offset=7, size_bytes=0, reserved_bytes=100, high_watermark=7
    )
    assert buffer.caught_up() and buffer.position(A) == 7


def test_skipped_offsets_move_the_position() -> None:
    buffer = buffer_with(A)
    assert buffer.try_reserve(100)
    buffer.add(
        A, 1, RecordColumns(), next_offset=4, size_bytes=70, reserved_bytes=100, high_watermark=4
    )
    assert buffer.position(A) == 4 and buffer.fetch_target(A) == (4, 1)


def test_errors_surface_once_from_take() -> None:
    buffer = buffer_with(A)
    buffer.fail(RuntimeError("corrupt"))
    with pytest.raises(RuntimeError):
        buffer.take(1)
    assert buffer.take(1) == []


def test_unassigning_drops_state() -> None:
    buffer = buffer_with(A, B)
    add(buffer, A, 0, 2)
    assert buffer.assign([B]) == []
    assert buffer.assignment() == [B]
    assert buffer.take(10) == [] and buffer.buffered_bytes == 0
