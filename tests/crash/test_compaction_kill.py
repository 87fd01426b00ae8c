"""SIGKILL a process that writes keyed records while its log cleaner runs flat out: after
every kill the reopened log is readable end to end (CRC-valid batches, offsets that only
grow, each record at the offset it was written at) and no key lost its latest
acknowledged value (a key whose latest write was a tombstone may be gone: tombstones
expire at once here). The child (``compactor.py``) acknowledges a batch once durable.

The kill moments are counted in the child's progress, not in wall-clock time: on a loaded
machine the niced cleaning worker may need seconds to start, so a timer could kill every
child before its first pass. Every other round waits until the cleaner has swapped
segments in (the child says so) and then lets a random number of further appends go by,
so kills land during later passes and swaps as well as before the first one.
"""

from __future__ import annotations

import random
from pathlib import Path

from conveyor.protocol.batch import parse_header
from conveyor.protocol.records import decode_batches
from conveyor.storage import PartitionLog
from tests.crash.compactor import CONFIG
from tests.crash.test_kill import Child

COMPACTOR = Path(__file__).with_name("compactor.py")
KILLS = 8
SEED = 20261128

Latest = dict[str, tuple[int, bool]]  # key -> (version, is a tombstone)


def read_back(directory: Path) -> tuple[Latest, int, int]:
    """Each key's last record in the reopened log, the records read, the log end."""
    log = PartitionLog.open(directory, CONFIG)
    try:
        found: Latest = {}
        offset, previous, count = log.log_start_offset, -1, 0
        while offset < log.log_end_offset:
            chunk = log.read(offset, 64 * 1024)
            assert chunk, f"nothing read at {offset} below {log.log_end_offset}"
            for record in decode_batches(chunk, verify_crc=True, start_offset=offset):
                headers = dict(record.headers)
                assert record.offset > previous, "offsets must only grow"
                assert headers["o"] == str(record.offset).encode(), "a record moved"
                assert record.key is not None, "a keyless record in a compacted log"
                key = record.key.decode()
                if record.value is not None:
                    assert record.value.startswith(f"{record.offset}:{key}".encode())
                found[key] = (int(headers["v"] or b""), record.value is None)
                previous = record.offset
                count += 1
            position = 0
            while position < len(chunk):
                header = parse_header(chunk, position)
                position += header.size_bytes
                offset = header.next_offset
        return found, count, log.log_end_offset
    finally:
        log.close()


def test_sigkill_during_compaction_keeps_every_latest_acknowledged_value(
    tmp_path: Path,
) -> None:
    rng = random.Random(SEED)
    directory = tmp_path / "log"
    acked: Latest = {}
    end, version, removed = 0, 0, False
    for kill in range(KILLS):
        child = Child(directory, SEED + kill, COMPACTOR, str(version))
        lines: list[str] = []
        try:
            ready = child.next_line().split()
            assert ready == ["ready", str(end)], "data lost between a clean close and open"
            appends, cleaned = rng.randint(20, 150), kill % 2 == 1
            while appends > 0 or not cleaned:
                line = child.next_line()
                lines.append(line)
                if line.startswith("cleaned"):
                    cleaned = True
                    appends = max(appends, rng.randint(0, 30))  # then a random moment
                else:
                    appends -= 1
        finally:
            lines += child.kill()
        for line in lines:
            if line.startswith("cleaned"):
                continue
            for item in line.split()[1:]:
                key, number, kind = item.split(":")
                acked[key] = (int(number), kind == "t")
        found, count, end = read_back(directory)
        removed = removed or count < end
        for key, (acked_version, tombstone) in acked.items():
            if key in found:
                assert found[key][0] >= acked_version, (key, found[key], acked_version)
            else:
                assert tombstone, f"{key} lost its latest value (version {acked_version})"
        # what survived the kill unacknowledged is now as good as acknowledged
        for key, (found_version, tombstone) in found.items():
            if found_version > acked.get(key, (-1, False))[0]:
                acked[key] = (found_version, tombstone)
        version = 1 + max(v for v, _ in acked.values())
    assert removed, "the cleaner should have removed records"
    assert len(list(directory.glob("*.log"))) > 1
