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
logical block. An append at ``position`` therefore rewrites the partial block before it
(the same bytes, read back first: a torn write leaves them as they were), writes the new
bytes from an aligned staging buffer, pads the last block with zeros and cuts the file
back to its true size. A crash before the cut leaves zeros after the last batch, which
recovery drops as it drops any torn tail. Durability is unchanged: the data is on the
device, but only the log's fsync (flush policy) makes it and the new file size durable.
Where the filesystem refuses ``O_DIRECT`` (``EINVAL``), the segment writes through the
page cache as before.
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
        """Write ``data`` at ``position`` of the file (``fd`` open for reading and writing,
        ``direct_fd`` with ``O_DIRECT``); the file ends after it. OSError as pwrite's."""
        start = position - position % ALIGN_BYTES
        head = position - start
        end = head + len(data)
        padded = -(-end // ALIGN_BYTES) * ALIGN_BYTES
        with self._lock:
            staging = self._buffer(padded)
            with memoryview(staging) as view:
                if head:
                    before = os.pread(fd, head, start)
                    if len(before) != head:
                        raise OSError(errno.EIO, f"short read of the block at {start}")
                    view[:head] = before
                view[head:end] = data
                view[end:padded] = bytes(padded - end)
                written = os.pwrite(direct_fd, view[:padded], start)
        if written != padded:
            # Short: a full disk returns what fit; the caller cuts the file back.
            raise OSError(errno.ENOSPC, f"short direct write: {written} of {padded} bytes")
        if padded != end:
            os.ftruncate(fd, position + len(data))

    def _buffer(self, size: int) -> mmap.mmap:
        staging = self._staging
        if staging is None or len(staging) < size:
            if staging is not None:
                staging.close()
            # Anonymous mappings are page-aligned, as O_DIRECT wants.
            staging = mmap.mmap(-1, max(size, 8 * DIRECT_BYTES_MIN + ALIGN_BYTES))
            self._staging = staging
        return staging


WRITER: Final = DirectWriter()
