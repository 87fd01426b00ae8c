"""What a benchmark ran on: printed beside its figures so that they can be compared."""

from __future__ import annotations

import os
import platform
import resource
import sys
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

_MOUNTS_FILE = Path("/proc/self/mounts")


@dataclass(frozen=True, slots=True)
class Machine:
    cpu_count: int
    memory_bytes: int  # 0 when the platform does not say
    python_version: str
    platform: str
    filesystem: str  # type of the filesystem holding the benchmark's files, "unknown" off Linux

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def describe_machine(data_directory: Path) -> Machine:
    return Machine(
        cpu_count=os.cpu_count() or 1,
        memory_bytes=_memory_bytes(),
        python_version=platform.python_version(),
        platform=platform.platform(terse=True),
        filesystem=filesystem_type(data_directory),
    )


def peak_rss_bytes() -> int:
    """The largest resident set this process has had so far (``ru_maxrss``)."""
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    # Linux reports KiB, macOS bytes.
    return int(peak) if sys.platform == "darwin" else int(peak) * 1024


def filesystem_type(path: Path) -> str:
    """The type of the mount holding ``path`` (ext4, xfs, tmpfs...), from /proc/self/mounts."""
    try:
        lines = _MOUNTS_FILE.read_text().splitlines()
    except OSError:
        return "unknown"
    target = str(path.resolve())
    best, best_type = "", "unknown"
    for line in lines:
        fields = line.split()
        if len(fields) < 3:
            continue
        mount_point = fields[1].replace("\\040", " ")
        inside = target == mount_point or target.startswith(mount_point.rstrip("/") + "/")
        if inside and len(mount_point) >= len(best):
            best, best_type = mount_point, fields[2]
    return best_type


def _memory_bytes() -> int:
    try:
        return os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError, AttributeError):
        return 0
