"""Damaged files on disk: truncated or bit-flipped .log, .index and .timeindex files, in the
active segment and in older ones, at seeded random positions.

After each damage the log is reopened and must: open without raising; keep every batch before
the damage point readable and identical (index files are a cache, so damage there loses
nothing at all); never serve a batch whose CRC is wrong or whose records are not the ones
written at those offsets (a damaged batch raises CorruptDataError when read); stay writable.
A failure names its iteration seed, which replays it alone.
"""

from __future__ import annotations

import random
import shutil
from dataclasses import dataclass
from pathlib import Path

import pytest

from conveyor.protocol.batch import parse_header
from conveyor.protocol.errors import CorruptDataError, OffsetOutOfRangeError
from conveyor.protocol.records import decode_batches, encode_batch
from conveyor.storage import LogConfig, PartitionLog

CONFIG = LogConfig(segment_bytes_max=2048, index_interval_bytes=128)
ITERATIONS = 400
SEED = 7_000_000
NO_LOSS = 2**62  # the damage point of a damaged index file: nothing may be lost


@dataclass(frozen=True)
class Written:
    base_offset: int
    last_offset: int
    values: tuple[bytes, ...]
    segment: int  # base offset of the segment holding it
    position: int  # where it starts in that segment's .log
    size_bytes: int


def write_log(directory: Path, rng: random.Random) -> list[Written]:
    log = PartitionLog.open(directory, CONFIG)
    for _ in range(80):
        count = rng.randint(1, 6)
        offset = log.log_end_offset
        values = [
            f"{offset + i}:".encode() + rng.randbytes(rng.randint(5, 60)) for i in range(count)
        ]
        log.append(encode_batch([(None, v) for v in values], timestamp_ms=1000 + offset))
    log.close()
    written, by_offset = [], {}
    for path in sorted(directory.glob("*.log")):
        data, position = path.read_bytes(), 0
        while position < len(data):
            header = parse_header(data, position)
            records = decode_batches(data[position : position + header.size_bytes])
            by_offset[header.base_offset] = (header, tuple(r.value or b"" for r in records))
            written.append(
                Written(
                    header.base_offset,
                    header.last_offset,
                    by_offset[header.base_offset][1],
                    int(path.stem),
                    position,
                    header.size_bytes,
                )
            )
            position += header.size_bytes
    assert len({w.segment for w in written}) >= 5
    return written


@pytest.fixture(scope="module")
def pristine(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, list[Written]]:
    directory = tmp_path_factory.mktemp("pristine") / "log"
    return directory, write_log(directory, random.Random(SEED))


def damage(directory: Path, written: list[Written], rng: random.Random) -> tuple[str, int]:
    """Damage one file at random; returns (what was done, the damage point offset)."""
    segments = sorted({w.segment for w in written})
    segment = rng.choice(segments[-2:] if rng.random() < 0.4 else segments)  # favour the tail
    kind = rng.choices(["log", "index", "timeindex", "txnindex"], weights=[6, 2, 2, 1])[0]
    path = directory / f"{segment:020d}.{kind}"
    data = bytearray(path.read_bytes())
    if not data:
        return f"{path.name} is empty: nothing to damage", NO_LOSS
    if rng.random() < 0.3:
        first = rng.randrange(len(data))
        path.write_bytes(data[:first])
        what = f"truncated {path.name} to {first} of {len(data)} bytes"
    else:
        width = rng.choice([1, 1, 1, 4, 64])
        start = rng.randrange(len(data))
        positions = sorted({min(len(data) - 1, start + rng.randrange(width)) for _ in range(3)})
        for position in positions:
            data[position] ^= rng.randint(1, 255)
        path.write_bytes(data)
        first = positions[0]
        what = f"flipped bytes {positions} of {path.name} ({len(data)} bytes)"
    if kind != "log":
        return what, NO_LOSS
    hit = [w for w in written if w.segment == segment and w.position + w.size_bytes > first]
    return what, hit[0].base_offset if hit else NO_LOSS


def check_recovered(directory: Path, written: list[Written], damage_offset: int) -> None:
    log = PartitionLog.open(directory, CONFIG)  # recovery never raises
    try:
        end = written[-1].last_offset + 1
        assert log.log_start_offset == 0
        assert min(damage_offset, end) <= log.log_end_offset <= end
        by_offset = {w.base_offset + i: v for w in written for i, v in enumerate(w.values)}
        for w in written:  # before the damage: every batch, found through every lookup path
            if w.base_offset >= damage_offset:
                break
            for offset in (w.base_offset, w.last_offset):
                got = decode_batches(log.read(offset, 1), verify_crc=True)
                assert [r.value for r in got] == list(w.values), f"batch {w.base_offset}"
        offset = 0
        while offset < log.log_end_offset:  # the whole log: only true records, CRC-valid
            try:
                chunk = log.read(offset, 4096)
            except CorruptDataError:
                assert offset >= damage_offset, f"offset {offset} lost before the damage point"
                later = [w.base_offset for w in written if w.base_offset > offset]
                if not later or later[0] >= log.log_end_offset:
                    break
                offset = later[0]
                continue
            got = decode_batches(chunk, verify_crc=True)
            assert got, f"no whole batch at {offset}"
            if got[0].offset > offset:  # a gap is allowed only after the damage point
                assert offset >= damage_offset
            for record in got:
                assert record.value == by_offset[record.offset], f"record {record.offset}"
            offset = got[-1].offset + 1
        assert log.aborted_in(0, log.log_end_offset) == []  # no transaction was written
        result = log.append(encode_batch([(None, b"after")]))  # still writable
        assert result.base_offset == log.log_end_offset - 1
        if damage_offset == NO_LOSS:
            assert log.log_end_offset == end + 1
            assert [r.value for r in decode_batches(log.read(end, 100))] == [b"after"]
    finally:
        log.close()


def test_recovery_from_random_damage(pristine: tuple[Path, list[Written]], tmp_path: Path) -> None:
    source, written = pristine
    for iteration in range(ITERATIONS):
        seed = SEED + iteration
        directory = tmp_path / "log"
        shutil.copytree(source, directory)
        what, damage_offset = damage(directory, written, random.Random(seed))
        try:
            check_recovered(directory, written, damage_offset)
        except (AssertionError, CorruptDataError, OffsetOutOfRangeError) as exc:
            raise AssertionError(f"seed {seed}: {what}; damage point {damage_offset}") from exc
        shutil.rmtree(directory)


def test_a_damaged_batch_in_an_old_segment_is_reported_not_served(
    pristine: tuple[Path, list[Written]], tmp_path: Path
) -> None:
    source, written = pristine
    directory = tmp_path / "log"
    shutil.copytree(source, directory)
    segments = sorted({w.segment for w in written})
    victims = [w for w in written if w.segment == segments[1]]
    victim = victims[len(victims) // 2]
    path = directory / f"{victim.segment:020d}.log"
    data = bytearray(path.read_bytes())
    data[victim.position + victim.size_bytes - 2] ^= 0x10  # inside the last record's value
    path.write_bytes(data)
    log = PartitionLog.open(directory, CONFIG)
    try:
        assert log.log_end_offset == written[-1].last_offset + 1  # nothing dropped on open
        for offset in (victim.base_offset, victim.last_offset):
            with pytest.raises(CorruptDataError):
                log.read(offset, 1 << 20)
        before = decode_batches(log.read(victim.base_offset - 1, 1 << 20))
        assert before[-1].offset == victim.base_offset - 1  # a read stops before the damage
        after = decode_batches(log.read(victim.last_offset + 1, 1))
        assert [r.value for r in after] == list(written[written.index(victim) + 1].values)
    finally:
        log.close()
