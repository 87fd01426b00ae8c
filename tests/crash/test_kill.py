"""SIGKILL an appending process at random moments: every acknowledged batch survives.

The child (``appender.py``) acknowledges a batch only after ``log.durable()`` resolved. After
each kill the test reopens the same directory (so the log grows across kills), finds every
acknowledged batch byte for byte, and reads the whole log from start to end: every batch
decodes with a valid CRC, offsets are contiguous, and no partial batch is readable.
"""

from __future__ import annotations

import queue
import random
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import IO

from conveyor.protocol.records import decode_batches
from conveyor.storage import LogConfig, PartitionLog
from tests.crash.appender import INDEX_INTERVAL_BYTES, SEGMENT_BYTES_MAX, values_digest

APPENDER = Path(__file__).with_name("appender.py")
KILLS = 24
SEED = 20240611
# The longest an appender may stay silent: a hung child, not a slow one. A deadline for a
# whole incarnation (up to 150 appends and a compaction) ran out while the child was
# still writing on a loaded 2-core machine (make test's two sessions beside other work).
DEADLINE_S = 30.0


class Child:
    """The appender process and its stdout lines, read by a thread into a queue."""

    def __init__(
        self, directory: Path, seed: int, script: Path = APPENDER, *extra_args: str
    ) -> None:
        self.process = subprocess.Popen(
            [sys.executable, str(script), str(directory), str(seed), *extra_args],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        self.lines: queue.Queue[str | None] = queue.Queue()
        assert self.process.stdout is not None
        self._reader = threading.Thread(target=self._read, args=(self.process.stdout,))
        self._reader.start()

    def _read(self, stream: IO[str]) -> None:
        for line in stream:
            if line.endswith("\n"):  # a line cut by the kill was never acknowledged
                self.lines.put(line.rstrip("\n"))
        self.lines.put(None)

    def next_line(self) -> str:
        """The child's next line; fails when it writes nothing for ``DEADLINE_S``."""
        try:
            line = self.lines.get(timeout=DEADLINE_S)
        except queue.Empty:
            raise AssertionError(
                f"no output from the appender in {DEADLINE_S} s: {self._stderr()}"
            ) from None
        if line is None:
            raise AssertionError(f"the appender exited early: {self._stderr()}")
        return line

    def kill(self) -> list[str]:
        """SIGKILL, then every line the child wrote before it died."""
        self.process.send_signal(signal.SIGKILL)
        self.process.wait(DEADLINE_S)
        self._reader.join(DEADLINE_S)
        rest = []
        while (line := self.lines.get_nowait()) is not None:
            rest.append(line)
        assert self.process.returncode == -signal.SIGKILL
        stderr = self._stderr()
        assert "Traceback" not in stderr, stderr
        return rest

    def _stderr(self) -> str:
        if self.process.poll() is None:
            return "(still running)"
        assert self.process.stderr is not None
        text = self.process.stderr.read()
        self.process.stderr.close()
        if self.process.stdout is not None:
            self.process.stdout.close()
        return text


Ack = tuple[int, int, str]


def parse_ack(line: str) -> Ack:
    base, last, digest = line.split()
    return int(base), int(last), digest


def check_log(directory: Path, acked: list[Ack]) -> int:
    """Reopen after a kill and check everything; returns the log end offset."""
    config = LogConfig(
        segment_bytes_max=SEGMENT_BYTES_MAX, index_interval_bytes=INDEX_INTERVAL_BYTES
    )
    log = PartitionLog.open(directory, config)
    try:
        end = log.log_end_offset
        assert log.log_start_offset == 0
        assert end > max(last for _, last, _ in acked)
        values: list[bytes] = []
        offset = 0
        while offset < end:  # the whole log: CRC-valid, contiguous, each value at its offset
            chunk = log.read(offset, 64 * 1024)
            batch = decode_batches(chunk, verify_crc=True)
            assert batch, f"read at {offset} returned no whole batch"
            offsets = [r.offset for r in batch]
            assert offsets == list(range(offset, offset + len(batch)))
            for record in batch:
                assert record.value is not None
                assert record.value.startswith(f"{record.offset}:".encode())
                values.append(record.value)
            offset += len(batch)
        assert len(values) == end
        for base, last, digest in acked:  # every acknowledged append, byte for byte
            assert values_digest(values[base : last + 1]) == digest, (base, last)
            first = decode_batches(log.read(base, 1), verify_crc=True)
            assert first[0].offset == base
        return end
    finally:
        log.close()


def test_sigkill_never_loses_an_acknowledged_batch(tmp_path: Path) -> None:
    rng = random.Random(SEED)
    directory = tmp_path / "log"
    acked: list[Ack] = []
    end = 0
    for kill in range(KILLS):
        child = Child(directory, SEED + kill)
        try:
            ready = child.next_line().split()
            assert ready == ["ready", str(end)], "data lost between a clean close and open"
            for _ in range(rng.randint(1, 40)):  # wait for some acks, then kill at random
                acked.append(parse_ack(child.next_line()))
            time.sleep(rng.uniform(0, 0.02))  # a random kill moment, not synchronisation
        finally:
            acked += [parse_ack(line) for line in child.kill()]
        previous_last = -1
        for base, last, _ in acked:
            assert base > previous_last, "acknowledged appends must not overlap"
            previous_last = last
        end = check_log(directory, acked)
    assert len(acked) >= KILLS
    assert len(sorted(directory.glob("*.log"))) > 1, "the test should cross segment rolls"
