"""SIGKILL a process that appends and deletes records up to random offsets: after every kill
the reopened log starts at least where the last acknowledged deletion put it (never
earlier: a deleted record never comes back), reads below the start are out of range, no
segment wholly below the start is left, every acknowledged record at or beyond the start
is there at its offset, and the log reads end to end with valid CRCs.
"""

from __future__ import annotations

import random
import time
from pathlib import Path

import pytest

from conveyor.protocol.batch import parse_header
from conveyor.protocol.errors import OffsetOutOfRangeError
from conveyor.protocol.records import decode_batches
from conveyor.storage import PartitionLog
from tests.crash.test_kill import Child
from tests.crash.trimmer import CONFIG

TRIMMER = Path(__file__).with_name("trimmer.py")
KILLS = 10
SEED = 20261201


def check_log(directory: Path, start_acked: int, acked_end: int) -> tuple[int, int]:
    """Reopen and check; returns (log start, log end)."""
    log = PartitionLog.open(directory, CONFIG)
    try:
        start, end = log.log_start_offset, log.log_end_offset
        assert start >= start_acked, "an acknowledged deletion was undone"
        assert end >= acked_end, "an acknowledged append was lost"
        if start > 0:
            with pytest.raises(OffsetOutOfRangeError):
                log.read(start - 1, 1)
        infos = log.segment_infos()
        assert len(infos) == 1 or infos[1].base_offset > start, "a segment below the start"
        offset, expected = start, start
        while offset < end:
            chunk = log.read(offset, 64 * 1024)
            assert chunk, f"nothing read at {offset} below {end}"
            for record in decode_batches(chunk, verify_crc=True, start_offset=offset):
                assert record.offset == expected, "offsets contiguous from the start"
                assert record.value is not None
                assert record.value.startswith(f"{record.offset}:".encode())
                expected += 1
            position = 0
            while position < len(chunk):
                header = parse_header(chunk, position)
                position += header.size_bytes
                offset = header.next_offset
        assert expected == end
        return start, end
    finally:
        log.close()


def test_sigkill_never_undoes_a_deletion_nor_loses_a_record_beyond_it(tmp_path: Path) -> None:
    rng = random.Random(SEED)
    directory = tmp_path / "log"
    start_acked, acked_end, end = 0, 0, 0
    moves = 0
    for kill in range(KILLS):
        child = Child(directory, SEED + kill, TRIMMER)
        lines: list[str] = []
        try:
            ready = child.next_line().split()
            assert ready[0] == "ready" and int(ready[2]) == end
            for _ in range(rng.randint(10, 80)):
                lines.append(child.next_line())
            time.sleep(rng.uniform(0, 0.02))  # a random kill moment, not synchronisation
        finally:
            lines += child.kill()
        for line in lines:
            kind, *numbers = line.split()
            if kind == "s":
                start_acked = max(start_acked, int(numbers[0]))
                moves += 1
            else:
                acked_end = max(acked_end, int(numbers[1]) + 1)
        _, end = check_log(directory, start_acked, acked_end)
    assert moves >= KILLS, "the test should move the start many times"
