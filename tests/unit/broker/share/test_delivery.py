"""What a receive answers (broker/share/delivery.py): whole stored batches when the member
owns most of their records, one compact batch of just its records otherwise."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from conveyor.broker.share import delivery
from conveyor.broker.share.delivery import DecodedCache, answer_bytes
from conveyor.protocol.errors import InvalidRequestError
from conveyor.protocol.records import BatchBuilder, decode_batches


def stored_log(batch_sizes: list[int]) -> bytes:
    parts, offset = [], 0
    for size in batch_sizes:
        builder = BatchBuilder()
        for i in range(size):
            builder.append(
                f"v{offset + i}".encode(),
                f"k{(offset + i) % 3}".encode(),
                (("h", b"1"),),
                1000 + offset + i,
            )
        parts.append(builder.build(base_offset=offset))
        offset += size
    return b"".join(parts)


def reader(log: bytes):  # type: ignore[no-untyped-def]
    def read(offset: int, max_bytes: int) -> bytes:
        # whole stored batches from the one holding ``offset`` on, at most ``max_bytes``
        # unless the first alone is larger (as PartitionLog.read)
        out, size_bytes = [], 0
        for batch in _split(log):
            header_last = decode_batches(batch)[-1].offset
            if header_last >= offset:
                if out and size_bytes + len(batch) > max_bytes:
                    break
                out.append(batch)
                size_bytes += len(batch)
        return b"".join(out)

    return read


def _split(log: bytes) -> list[bytes]:
    from conveyor.protocol.batch import peek_length

    out, position = [], 0
    while position < len(log):
        _, size = peek_length(log, position)
        out.append(log[position : position + size])
        position += size
    return out


def test_owning_most_of_a_batch_answers_the_stored_bytes() -> None:
    log = stored_log([10, 10])
    answer = answer_bytes(reader(log), [(0, 9)], DecodedCache())
    assert answer == _split(log)[0]


def test_owning_a_few_records_answers_only_them_with_their_offsets() -> None:
    log = stored_log([100])
    answer = answer_bytes(reader(log), [(3, 3), (40, 41), (99, 99)], DecodedCache())
    records = decode_batches(answer)
    assert [r.offset for r in records] == [3, 40, 41, 99]
    assert [r.value for r in records] == [b"v3", b"v40", b"v41", b"v99"]
    assert records[0].key == b"k0" and records[0].headers == (("h", b"1"),)
    assert records[0].timestamp_ms == 1003


@given(st.lists(st.integers(1, 30), min_size=1, max_size=5), st.data())
def test_every_owned_record_is_answered_once(sizes: list[int], data: st.DataObject) -> None:
    total = sum(sizes)
    owned = sorted(data.draw(st.sets(st.integers(0, total - 1), min_size=1)))
    ranges = [(o, o) for o in owned]
    answer = answer_bytes(reader(stored_log(sizes)), ranges, DecodedCache(records_max=20))
    got = [r.offset for r in decode_batches(answer)]
    assert set(owned) <= set(got)
    assert len(got) == len(set(got))


def cached(log: bytes, records_max: int = 50_000) -> DecodedCache:
    """A cache holding every batch of ``log``, as the key-ordered window scan fills it."""
    cache = DecodedCache(records_max=records_max)
    for batch in _split(log):
        records = decode_batches(batch)
        cache.put(records[0].offset, records)
    return cache


def no_log(offset: int, max_bytes: int) -> bytes:
    raise AssertionError("the answer should come from the cache, not the log")


def test_a_sparse_answer_comes_from_the_cache_without_reading_the_log() -> None:
    log = stored_log([40, 40, 40])
    ranges = [(3, 3), (45, 46), (119, 119)]
    answer = answer_bytes(no_log, ranges, cached(log))
    assert answer == answer_bytes(reader(log), ranges, DecodedCache())
    assert [r.offset for r in decode_batches(answer)] == [3, 45, 46, 119]


def test_the_cache_finds_records_of_sparse_batches() -> None:
    builder = BatchBuilder()  # a compacted batch: offsets 10, 12, 15
    for delta in (0, 2, 5):
        builder.append(f"v{delta}".encode(), b"k", offset_delta=delta)
    cache = DecodedCache()
    cache.put(10, decode_batches(builder.build(base_offset=10)))
    assert [cache.find(o) is not None for o in range(9, 17)] == [
        False, True, False, True, False, False, True, False,
    ]  # fmt: skip
    hit = cache.find(12)
    assert hit is not None and hit[0] == 10 and hit[2].value == b"v2"


@given(st.lists(st.integers(1, 30), min_size=1, max_size=6), st.data())
def test_cached_and_read_answers_agree(sizes: list[int], data: st.DataObject) -> None:
    """Whatever the cache holds (some batches evicted), the answer is the same."""
    log = stored_log(sizes)
    owned = sorted(data.draw(st.sets(st.integers(0, sum(sizes) - 1), min_size=1)))
    ranges = [(o, o) for o in owned]
    cache = cached(log, records_max=data.draw(st.integers(1, 200)))
    assert answer_bytes(reader(log), ranges, cache) == answer_bytes(
        reader(log), ranges, DecodedCache()
    )


def test_offset_deltas_must_increase() -> None:
    builder = BatchBuilder()
    builder.append(b"a", offset_delta=5)
    with pytest.raises(InvalidRequestError):
        builder.append(b"b", offset_delta=5)


@given(
    st.lists(st.tuples(st.integers(1, 30), st.integers(0, 3)), min_size=1, max_size=8),
    st.sampled_from([0, 300, 10**9]),  # a new read for every gap, for some, for none
    st.data(),
)
def test_the_covering_batches_are_those_holding_a_range(
    batches: list[tuple[int, int]], restart_gap_bytes: int, data: st.DataObject
) -> None:
    """Batches of ``size`` records after ``gap`` offsets compaction removed; the owned
    offsets may fall in the gaps too (records compacted away after being acquired)."""
    parts, spans, base = [], [], 0
    for size, gap in batches:
        base += gap
        builder = BatchBuilder()
        for i in range(size):
            builder.append(b"v%d" % (base + i), timestamp_ms=1)
        parts.append(builder.build(base_offset=base))
        spans.append((base, base + size - 1))
        base += size
    log = b"".join(parts)
    owned = sorted(data.draw(st.sets(st.integers(0, base - 1), min_size=1)))
    ranges = _as_ranges(owned)
    expected = [
        part
        for part, (start, end) in zip(parts, spans, strict=True)
        if any(first <= end and last >= start for first, last in ranges)
    ]
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(delivery, "CHUNK_BYTES", restart_gap_bytes)
        got = delivery.covering_batches(reader(log), ranges)
    assert [bytes(batch) for _, batch in got] == expected


def _as_ranges(offsets: list[int]) -> list[tuple[int, int]]:
    ranges: list[tuple[int, int]] = []
    for offset in offsets:
        if ranges and ranges[-1][1] == offset - 1:
            ranges[-1] = (ranges[-1][0], offset)
        else:
            ranges.append((offset, offset))
    return ranges
