"""The ``disk-full`` fault's fill (nemesis.fill_disk) on a real tmpfs: the file system is
full afterwards whatever was on it before, the fill itself never fails on the full disk
it makes, and the heal gives the space back. Seed 37 (240 s, all faults) found the fault
recorded as failed (ENOSPC raised again when the buffered filler was closed), so it was
never healed and broker 1's disk stayed full for the rest of the run."""

from __future__ import annotations

import errno
import os
from pathlib import Path

import pytest

from conveyor.chaos.nemesis import fill_disk, mount_tmpfs, unmount


def _room_for_a_new_file(directory: Path) -> bool:
    try:
        (directory / "probe").write_bytes(b"x" * 4096)
    except OSError as exc:
        assert exc.errno == errno.ENOSPC, exc
        return False
    (directory / "probe").unlink()
    return True


@pytest.mark.skipif(os.geteuid() != 0, reason="mounting a tmpfs needs root")
def test_the_fill_fills_the_disk_whatever_is_on_it_and_the_heal_gives_it_back(
    tmp_path: Path,
) -> None:
    directory = tmp_path / "disk"
    if not mount_tmpfs(directory):
        pytest.skip("mount -t tmpfs failed")
    try:
        # data of sizes that leave the last 1 MiB write of the fill short by various amounts
        for used in (0, 1, 4095, 4097, 123_457, (1 << 20) - 1, (1 << 20) + 1, 3_000_001):
            (directory / "data").write_bytes(b"d" * used)
            heal = fill_disk(directory)
            assert not _room_for_a_new_file(directory), used
            heal()
            assert _room_for_a_new_file(directory), used
    finally:
        unmount(directory)
