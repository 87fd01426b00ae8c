"""Appends that bypass the page cache (``O_DIRECT``): a follower's large replicated appends.

Why: a follower catching up writes gigabytes it will not read back soon. Through the page
cache, each write copies into freshly allocated cache pages, and on the VMs this project
runs on (Firecracker, with the balloon reporting free memory back to the host) the first
touch of such a page is expensive: writing 1 GiB into the page cache cost 8.2-8.5 s of
kernel CPU after the cache was dropped (0.25 s when the pages had just been freed and
were reused), while the same GiB written with ``O_DIRECT`` from an aligned buffer cost
0.05 s of CPU and 0.96 s of wall time including the fsync (docs/benchmarks.md,
"Replication"). A profile of the follower during a 1 GiB catch-up put 63 % of its CPU in
that copy (``copy_folio_from_iter_atomic``).

``O_DIRECT`` needs the file position, the length and the memory aligned to the device's
logical block. An append therefore writes its bytes up to the next block boundary
through the page cache, the whole blocks after them with ``O_DIRECT`` from an aligned
staging buffer, and the partial block at its end through the page cache again (the
direct range never overlaps a cached page, so the kernel has nothing to write back or
drop first). An earlier version rewrote the partial block before the append and padded
the last one, then cut the file back: each ``ftruncate`` had to read its block from the
device again (4.7 ms per 8 MiB append, ``strace -w``). A crash midway leaves a torn tail,
which recovery cuts as any other. Durability is unchanged: only the log's fsync (flush
policy) makes the data and the new file size durable. Where the filesystem refuses
``O_DIRECT`` (``EINVAL``), the segment writes through the page cache as before.
"""

from __future__ import annotations

import errno
import mmap
import os
import threading
from typing import Final

ALIGN_BYTES: Final = 4096  # a multiple of every logical block size in use (512, 4096)
# Smaller appends (a follower that keeps up) stay in the page cache: the copy is cheap
# for them, the data is read soon (a consumer after a failover), and a direct write waits
# for the device.
DIRECT_BYTES_MIN: Final = 1024 * 1024
# The staging buffer never grows beyond this (larger appends go through the page cache).
STAGING_BYTES_MAX: Final = 64 * 1024 * 1024 + ALIGN_BYTES

O_DIRECT: Final = getattr(os, "O_DIRECT", 0)


def open_direct(path: os.PathLike[str] | str) -> int | None:
    """A write-only ``O_DIRECT`` descriptor of ``path``; None where unsupported."""
    if not O_DIRECT:
        return None
    try:
        return os.open(path, os.O_WRONLY | O_DIRECT)
    except OSError as exc:
        if exc.errno in (errno.EINVAL, errno.EOPNOTSUPP):
            return None
        raise


class DirectWriter:
    """One aligned staging buffer, shared by every log of the process (a lock)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._staging: mmap.mmap | None = None

    def write(self, direct_fd: int, fd: int, position: int, data: memoryview) -> None:
        """Write ``data`` at ``position``, the end of the file (``fd`` buffered,
        ``direct_fd`` with ``O_DIRECT``). OSError as pwrite's; on a short write (a full
        disk returns what fit) ENOSPC, and the caller cuts the file back."""
        first = min(len(data), -position % ALIGN_BYTES)  # up to the next block boundary
        middle = (len(data) - first) // ALIGN_BYTES * ALIGN_BYTES
        _pwrite(fd, data[:first], position)
        if middle:
            with self._lock:
                staging = self._buffer(middle)
                with memoryview(staging) as view:
                    view[:middle] = data[first : first + middle]
                    _pwrite(direct_fd, view[:middle], position + first)
        _pwrite(fd, data[first + middle :], position + first + middle)

    def _buffer(self, size: int) -> mmap.mmap:
        staging = self._staging
        if staging is None or len(staging) < size:
            if staging is not None:
                staging.close()
            # Anonymous mappings are page-aligned, as O_DIRECT wants.
            staging = mmap.mmap(-1, max(size, 8 * DIRECT_BYTES_MIN + ALIGN_BYTES))
            self._staging = staging
        return staging


def _pwrite(fd: int, data: memoryview, position: int) -> None:
    if data:
        written = os.pwrite(fd, data, position)
        if written != len(data):
            raise OSError(errno.ENOSPC, f"short write: {written} of {len(data)} bytes")


WRITER: Final = DirectWriter()
