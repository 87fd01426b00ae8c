"""SIGKILL a process appending transactions at random moments, then damage its
aborted-transaction indexes (``.txnindex``): the reopened log answers read_committed
exactly as a replay of its surviving batches from offset 0 does, every acknowledged
ABORT included, whether the index files were intact, truncated, flipped or deleted."""

from __future__ import annotations

import random
import shutil
import time
from pathlib import Path

from conveyor.protocol.txn import ABORT, marker_type
from conveyor.storage import LogConfig, PartitionLog
from conveyor.storage.scan import stored_batches
from conveyor.storage.txnindex import TxnIndex
from tests.crash.test_kill import Child
from tests.crash.txn_appender import SEGMENT_BYTES_MAX

APPENDER = Path(__file__).with_name("txn_appender.py")
KILLS = 8
SEED = 20261203
CONFIG = LogConfig(segment_bytes_max=SEGMENT_BYTES_MAX)


def replay(log: PartitionLog) -> tuple[list[tuple[int, int, int]], dict[int, int]]:
    """(aborted transactions, open ones) from every batch of the log, from offset 0."""
    txns = TxnIndex()
    aborted = []
    for header, data in stored_batches(log.read, 0):
        found = txns.observe(header, marker_type(data) if header.is_control else None)
        if found is not None:
            aborted.append((found.producer_id, found.first_offset, found.last_offset))
        if header.next_offset >= log.log_end_offset:
            break
    return aborted, txns.ongoing


def check(directory: Path, acked_aborts: set[int], rng: random.Random) -> int:
    log = PartitionLog.open(directory, CONFIG)
    try:
        end = log.log_end_offset
        for offset in acked_aborts:  # every acknowledged ABORT marker survived
            assert marker_type(log.read(offset, 1)) == ABORT, offset
        aborted, ongoing = replay(log)
        assert log.open_transactions() == ongoing
        for _ in range(30):
            start = rng.randint(0, end)
            upper = rng.randint(start, end + 1)
            expected = [a for a in aborted if a[2] >= start and a[1] < upper]
            got = log.aborted_in(start, upper)
            answer = [(a.producer_id, a.first_offset, a.last_offset) for a in got]
            assert answer == (expected if start < upper else []), (start, upper)
        return end
    finally:
        log.close()


def damage(directory: Path, rng: random.Random) -> str:
    path = rng.choice(sorted(directory.glob("*.txnindex")))
    data = path.read_bytes()
    choice = rng.randrange(3)
    if choice == 0:
        path.write_bytes(data[: rng.randrange(len(data))])
        return f"truncated {path.name}"
    if choice == 1:
        flipped = bytearray(data)
        flipped[rng.randrange(len(data))] ^= 0x10
        path.write_bytes(flipped)
        return f"flipped a bit of {path.name}"
    path.unlink()
    return f"deleted {path.name}"


def test_sigkill_and_damaged_indexes_keep_read_committed_answers(tmp_path: Path) -> None:
    rng = random.Random(SEED)
    directory = tmp_path / "log"
    acked_aborts: set[int] = set()
    end = 0
    for kill in range(KILLS):
        child = Child(directory, SEED + kill, APPENDER)
        lines: list[str] = []
        try:
            assert child.next_line().split() == ["ready", str(end)]
            for _ in range(rng.randint(20, 80)):
                lines.append(child.next_line())
            time.sleep(rng.uniform(0, 0.02))  # a random kill moment, not synchronisation
        finally:
            lines += child.kill()
        acked_aborts |= {int(line.split()[0]) for line in lines if line.split()[1] == "abort"}
        end = check(directory, acked_aborts, rng)
        copy = tmp_path / f"damaged-{kill}"
        shutil.copytree(directory, copy)
        what = damage(copy, rng)
        assert check(copy, acked_aborts, rng) == end, what
        shutil.rmtree(copy)
    assert len(sorted(directory.glob("*.log"))) > 3, "the test should cross segment rolls"
