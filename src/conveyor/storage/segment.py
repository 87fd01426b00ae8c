"""One segment: a ``.log`` file of concatenated record batches plus its two sparse indexes
and its aborted-transaction index (``abortindex.py``, loaded lazily by ``txnrecovery.py``).

The segment never decodes records. It reads batch headers to find boundaries, checks each
batch's CRC before serving it and during recovery, and writes bytes as it received them
(only ``base_offset`` and ``partition_leader_epoch`` are stamped, by the caller).
"""

from __future__ import annotations

import errno
import functools
import logging
import os
import struct
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Final

from conveyor.protocol.batch import (
    CRC_START,
    HEADER_SIZE,
    LOG_OVERHEAD,
    MAGIC,
    BatchHeader,
    crc32c,
    parse_header,
    peek_length,
    records_count_ok,
)
from conveyor.protocol.errors import CorruptDataError, DiskFullError, StorageError
from conveyor.storage import direct as direct_io
from conveyor.storage.abortindex import AbortedIndex
from conveyor.storage.index import OffsetIndex, TimeIndex

# posix_fadvise exists on Linux, not on macOS: there a catching-up reader waits for the disk.
_WILLNEED: Final = getattr(os, "POSIX_FADV_WILLNEED", None)


@functools.cache
def _adviser() -> ThreadPoolExecutor:
    """The one thread that gives read-ahead advice (``LogSegment.read_ahead``), in order."""
    return ThreadPoolExecutor(1, thread_name_prefix="conveyor-read-ahead")


def _advise(fd: int, position: int, length: int) -> None:
    try:
        os.posix_fadvise(fd, position, length, _WILLNEED)  # type: ignore[arg-type]
    except OSError as exc:  # advice only: the reads themselves report real errors
        log.debug("read-ahead refused: %s", exc)
    finally:
        os.close(fd)


# base_offset, batch_length, leader epoch, magic, crc, attributes, last_offset_delta: the
# first 27 bytes of a batch header (protocol/batch.py), what a read checks
_READ_FIELDS: Final = struct.Struct(">qiibIhi")

log = logging.getLogger(__name__)


def write_error(exc: OSError, what: str) -> StorageError:
    """A failed write as an append's: DISK_FULL for a full disk or quota (an operating
    error, retried once there is space), else STORAGE_ERROR; ``what``: what was written."""
    if exc.errno in (errno.ENOSPC, errno.EDQUOT):
        return DiskFullError(f"no space to {what}")
    return StorageError(f"{what} failed: {exc}")


_SCAN_CHUNK_BYTES = 1 << 20
# The active segment's file is extended this far ahead of its data (``fallocate``), so an
# append does not change the file's size and its fsync commits no size change: a lone
# small append's fsync took ~200 us here, ~120 us inside space already allocated
# (docs/storage-format.md, "Preallocation"; docs/benchmarks.md, "W3 latency").
PREALLOCATE_BYTES: Final = 1 << 20
# A stored batch longer than this is treated as corruption whatever the current config says.
STORED_BATCH_BYTES_HARD_MAX = 1 << 30


def segment_name(base_offset: int) -> str:
    return f"{base_offset:020d}"


@dataclass(frozen=True, slots=True)
class RecoveryResult:
    valid_bytes: int
    dropped_bytes: int
    batches: int
    reason: str  # why the scan stopped early; "" when the whole file was valid
    # zeros cut after the last batch (a preallocated tail), not counted as dropped
    preallocated_bytes: int = 0


class LogSegment:
    def __init__(
        self,
        directory: Path,
        base_offset: int,
        index_interval_bytes: int,
        *,
        suffix: str = "",
    ) -> None:
        """``suffix`` after each file name: a cleaned segment being written (``.cleaned``,
        see ``swap.py``), whose indexes stay in memory until it is swapped in."""
        self.base_offset = base_offset
        name = segment_name(base_offset)
        self.log_path = directory / f"{name}.log{suffix}"
        self.index = OffsetIndex(directory / f"{name}.index{suffix}", base_offset)
        self.time_index = TimeIndex(directory / f"{name}.timeindex{suffix}", base_offset)
        self.aborted = AbortedIndex(directory / f"{name}.txnindex{suffix}", base_offset)
        self.index_interval_bytes = index_interval_bytes
        self.fd = os.open(self.log_path, os.O_RDWR | os.O_CREAT, 0o644)
        # O_DIRECT descriptor for large replicated appends (``direct.py``): opened on the
        # first, None until then, -1 where the filesystem refuses it.
        self._direct_fd: int | None = None
        # The data's end. The file may be longer while this is the active segment (its
        # preallocated tail of zeros, up to ``_allocated``; cut when sealed or closed).
        self.size_bytes = os.fstat(self.fd).st_size
        self._allocated = self.size_bytes
        self._preallocate_bytes = 0  # 0: never extend ahead (a segment not appended to)
        self.next_offset = base_offset
        self.max_timestamp_ms = -1
        self.created_ms = 0
        self._bytes_since_index = 0
        # Offsets may jump between batches (a compacted log, see ``GAPS_FILE`` in log.py);
        # otherwise each batch must start where the previous one ended, which catches a
        # damaged base_offset (it is outside the CRC).
        self.gaps_allowed = False

    # ---- writing -------------------------------------------------------------------------

    def append(
        self, buffers: list[bytes | memoryview], headers: list[BatchHeader], *, direct: bool = False
    ) -> int:
        """Write already-stamped batches at the end in one system call; returns the position.

        ``headers`` describe the batches as written (their final base offsets). On a short or
        failed write the file is cut back, so no partial batch is ever left behind.
        ``direct``: past the page cache when the filesystem allows (``direct.py``).
        """
        position = self.size_bytes
        expected = sum(h.size_bytes for h in headers)
        if position + expected > self._allocated and self._preallocate_bytes:
            self._preallocate(position, expected)
        try:
            if direct and len(buffers) == 1 and self._write_direct(buffers[0], position):
                written = expected
            else:
                written = os.pwritev(self.fd, buffers, position)
            if written != expected:
                # A short write (the disk filling up returns what fit before ENOSPC):
                # write the rest, which then fails with the real reason.
                rest = memoryview(b"".join(buffers))[written:]
                while rest:
                    more = os.pwrite(self.fd, rest, position + written)
                    if more <= 0:
                        raise OSError(errno.EIO, f"short write: {written} of {expected} bytes")
                    written += more
                    rest = rest[more:]
        except OSError as exc:
            self._cut_back(position)
            raise write_error(exc, f"append to {self.log_path}") from exc
        batch_position = position
        for header in headers:
            self._track(header, batch_position)
            batch_position += header.size_bytes
        self.size_bytes = batch_position
        return position

    def _write_direct(self, data: bytes | memoryview, position: int) -> bool:
        """False where O_DIRECT is refused (the caller writes through the page cache)."""
        if self._direct_fd is None:
            opened = direct_io.open_direct(self.log_path)
            self._direct_fd = -1 if opened is None else opened
        if self._direct_fd < 0 or len(data) + direct_io.ALIGN_BYTES > direct_io.STAGING_BYTES_MAX:
            return False
        try:
            direct_io.WRITER.write(self._direct_fd, self.fd, position, memoryview(data))
        except OSError as exc:
            if exc.errno != errno.EINVAL:
                raise
            # An alignment this filesystem does not take: the page cache from now on.
            log.warning("%s: O_DIRECT write refused (%s); writing buffered", self.log_path, exc)
            self._close_direct()
            self._direct_fd = -1
            return False
        return True

    def _close_direct(self) -> None:
        if self._direct_fd is not None and self._direct_fd >= 0:
            os.close(self._direct_fd)
        self._direct_fd = None

    def _preallocate(self, position: int, needed: int) -> None:
        """Extend the file past ``position`` by at least ``needed`` bytes of zeros. Only
        an optimization: where it fails (a full disk, a file system without fallocate) the
        append writes as it would have without it, and reports its own error."""
        length = max(needed, self._preallocate_bytes)
        try:
            os.posix_fallocate(self.fd, position, length)
        except OSError as exc:
            log.debug("%s: no preallocation (%s)", self.log_path, exc)
            return
        self._allocated = position + length

    def trim(self) -> bool:
        """Cut the preallocated tail: the file ends at its data again. True when cut (the
        caller's next sync of the segment makes that durable)."""
        if self._allocated <= self.size_bytes or self.fd < 0:
            return False
        os.ftruncate(self.fd, self.size_bytes)
        self._allocated = self.size_bytes
        return True

    def _cut_back(self, position: int) -> None:
        self._allocated = position
        try:
            os.ftruncate(self.fd, position)
        except OSError:
            log.exception(
                "could not cut %s back to %d after a failed write", self.log_path, position
            )

    def _track(self, header: BatchHeader, position: int) -> None:
        """Bookkeeping for one batch now on disk: indexes, next offset, max timestamp."""
        self.max_timestamp_ms = max(self.max_timestamp_ms, header.max_timestamp)
        if self._bytes_since_index >= self.index_interval_bytes and position > 0:
            self.index.append(header.base_offset, position)
            self.time_index.maybe_append(self.max_timestamp_ms, header.base_offset)
            self._bytes_since_index = 0
        self._bytes_since_index += header.size_bytes
        self.next_offset = header.next_offset

    def open_for_append(self, preallocate_bytes: int = 0) -> None:
        """This is the active segment: its indexes open for appends, and its file extended
        ``preallocate_bytes`` at a time ahead of its data (0: not at all)."""
        self.index.open_for_append()
        self.time_index.open_for_append()
        self._preallocate_bytes = preallocate_bytes

    def seal(self) -> None:
        """The segment stops being active: record its final max timestamp in the time index;
        no more preallocation (the caller cuts the tail: ``trim``)."""
        if self.max_timestamp_ms >= 0 and self.next_offset > self.base_offset:
            last_base = self.last_batch_base_offset()
            self.time_index.maybe_append(self.max_timestamp_ms, last_base)
        self.index.close()
        self.time_index.close()
        self._close_direct()
        self._preallocate_bytes = 0

    def fsync(self) -> None:
        # fdatasync: the data and what reading it needs (the size, allocated extents), not
        # the modification time (as PostgreSQL syncs its preallocated WAL segments).
        os.fdatasync(self.fd)
        self.aborted.fsync()

    # ---- reading -------------------------------------------------------------------------

    def pread(self, position: int, size: int) -> bytes:
        """Up to ``size`` bytes of the ``.log`` at ``position`` (a marker's key, say)."""
        return os.pread(self.fd, size, position)

    def iter_headers(
        self, position: int, end: int, chunk_bytes: int = _SCAN_CHUNK_BYTES
    ) -> Iterator[tuple[int, BatchHeader]]:
        """(position, header) of each batch from ``position`` (a batch boundary) to ``end``,
        reading ``chunk_bytes`` at a time (at least a header)."""
        buf = b""
        chunk_start = position
        chunk_bytes = max(chunk_bytes, HEADER_SIZE)
        while position < end:
            relative = position - chunk_start
            if relative + HEADER_SIZE > len(buf):
                buf = os.pread(self.fd, min(chunk_bytes, end - position), position)
                chunk_start, relative = position, 0
                if len(buf) < HEADER_SIZE:
                    raise CorruptDataError(
                        f"{self.log_path}: torn batch header at position {position}",
                        position=position,
                    )
            header = parse_header(buf, relative)
            if header.magic != MAGIC or header.batch_length < HEADER_SIZE - LOG_OVERHEAD:
                raise CorruptDataError(
                    f"{self.log_path}: invalid batch header at position {position}",
                    position=position,
                )
            yield position, header
            position += header.size_bytes

    def locate(self, offset: int) -> tuple[int, BatchHeader] | None:
        """(position, header) of the batch holding ``offset``; None when past the end.

        The walk starts at the index entry at or below ``offset`` and checks that the batch
        there carries the entry's offset, that offsets follow on from batch to batch and
        stay below the segment's next offset. base_offset is outside the CRC and a read
        decides "not there yet" before checking the CRC, so a damaged header would otherwise
        send the read to the wrong batch or make the middle of the log look like its end.
        An index entry that disagrees with the log is dropped (the index is a cache) and the
        lookup retried from the entry before it."""
        indexed_offset, position = self.index.lookup(offset)
        while position > 0 and not self._batch_starts_at(position, indexed_offset):
            log.warning(
                "%s: index entry (offset %d, position %d) does not match the log; dropping it",
                self.index.path,
                indexed_offset,
                position,
            )
            self.index.drop(indexed_offset)
            indexed_offset, position = self.index.lookup(offset)
        expected = indexed_offset
        # Reads of about one index interval: the walk ends within one (plus the batch
        # there), and with large batches only their headers are read, not 1 MiB a step.
        chunk_bytes = self.index_interval_bytes + HEADER_SIZE
        for batch_position, header in self.iter_headers(position, self.size_bytes, chunk_bytes):
            # Offsets only grow; gaps between batches are normal in a compacted segment.
            if not self._follows(header.base_offset, expected) or (
                header.next_offset > self.next_offset
            ):
                raise CorruptDataError(
                    f"{self.log_path}: batch at position {batch_position} holds offsets "
                    f"{header.base_offset}..{header.last_offset}, expected {expected} "
                    f"or later and below {self.next_offset}",
                    offset=expected,
                    position=batch_position,
                )
            if header.last_offset >= offset:
                return batch_position, header
            expected = header.next_offset
        if expected != self.next_offset:
            raise CorruptDataError(
                f"{self.log_path}: batches end at offset {expected}, the segment at "
                f"{self.next_offset}",
                offset=expected,
            )
        return None

    def _follows(self, base_offset: int, expected: int) -> bool:
        """Whether a batch at ``base_offset`` may come where ``expected`` is next."""
        return base_offset >= expected if self.gaps_allowed else base_offset == expected

    def _batch_starts_at(self, position: int, offset: int) -> bool:
        prefix = os.pread(self.fd, LOG_OVERHEAD, position)
        return len(prefix) == LOG_OVERHEAD and peek_length(prefix)[0] == offset

    def read(self, offset: int, max_bytes: int, upper_offset: int) -> bytes:
        """Whole, CRC-checked batches from the one holding ``offset``, at most ``max_bytes``
        but always at least one batch, only batches that end below ``upper_offset``."""
        found = self.locate(offset)
        if found is None:
            return b""
        position, first = found
        if first.last_offset >= upper_offset:
            return b""
        end = self.size_bytes
        want = min(max(max_bytes, first.size_bytes), end - position)
        data = os.pread(self.fd, want, position)
        view = memoryview(data)
        cut, expected, length = 0, first.base_offset, len(data)
        next_offset, gaps = self.next_offset, self.gaps_allowed
        # The per-batch loop of every fetch: only the fields checked, one unpack each
        # (no BatchHeader), the CRC in one C call over the batch's bytes.
        while cut + HEADER_SIZE <= length:
            base, batch_length, _, magic, crc, _, delta = _READ_FIELDS.unpack_from(data, cut)
            size = LOG_OVERHEAD + batch_length
            end_offset = base + delta + 1
            if (
                magic != MAGIC
                or batch_length < HEADER_SIZE - LOG_OVERHEAD
                or cut + size > length
                or end_offset > upper_offset
                or not (base >= expected if gaps else base == expected)  # outside the CRC
                or end_offset > next_offset
            ):
                break
            if crc32c(view[cut + CRC_START : cut + size]) != crc:
                if cut == 0:
                    raise CorruptDataError(
                        f"{self.log_path}: batch at offset {base} "
                        f"(position {position}) failed its CRC check",
                        offset=base,
                        position=position,
                    )
                break
            cut += size
            expected = end_offset
        if cut == 0:
            raise CorruptDataError(
                f"{self.log_path}: unreadable batch at position {position}", position=position
            )
        return data if cut == len(data) else data[:cut]

    def batch_range(self, offset: int, max_bytes: int) -> tuple[int, int] | None:
        """(position, size_bytes) of whole batches from the one holding ``offset`` to at
        most ``max_bytes`` (always at least that one batch), for sending straight from the
        file (``os.sendfile``): nothing is read but the 12-byte length prefix of each batch
        after the first, and no CRC is checked here (the receiver checks every batch, as
        Kafka's followers do). None when ``offset`` is past the end."""
        found = self.locate(offset)
        if found is None:
            return None
        position, first = found
        end = position + first.size_bytes
        limit = min(position + max(max_bytes, first.size_bytes), self.size_bytes)
        while end + LOG_OVERHEAD <= limit:
            _, size = peek_length(os.pread(self.fd, LOG_OVERHEAD, end))
            if size < HEADER_SIZE or end + size > limit:
                break
            end += size
        return position, end - position

    def read_ahead(self, position: int, length: int) -> None:
        """Ask the kernel to start reading ``length`` bytes from ``position`` (at most to
        the file's end) into the page cache: a reader that was cut short there (a
        follower catching up) finds its next window read while it handles this one,
        instead of waiting for the disk at its next fetch (a 1 GiB catch-up from a cold
        cache: copy -30 %, follower CPU -47 %, docs/benchmarks.md). The advice is given
        on a thread of its own: on a cold window the call itself takes ~1.4 ms (the
        kernel allocates the pages and queues the reads), too long for a caller's event
        loop; it gets a duplicate descriptor, so a segment closed meanwhile is no matter."""
        length = min(length, self.size_bytes - position)
        if length <= 0 or _WILLNEED is None:
            return
        fd = os.dup(self.fd)
        try:
            _adviser().submit(_advise, fd, position, length)
        except RuntimeError:  # the interpreter is shutting down: no advice needed
            os.close(fd)

    def find_offset_by_timestamp(self, timestamp_ms: int, min_offset: int = 0) -> int | None:
        """Base offset of the first batch whose max timestamp is >= ``timestamp_ms`` among
        those holding an offset >= ``min_offset`` (the log start)."""
        if self.max_timestamp_ms < timestamp_ms:
            return None
        found = self.locate(self.time_index.lookup(timestamp_ms))
        if found is None:
            return None
        for _, header in self.iter_headers(found[0], self.size_bytes):
            if header.max_timestamp >= timestamp_ms and header.next_offset > min_offset:
                return header.base_offset
        return None

    def last_batch_base_offset(self) -> int:
        last = self.base_offset
        for _, header in self.iter_headers(self.index.last_position(), self.size_bytes):
            last = header.base_offset
        return last

    # ---- recovery and truncation ---------------------------------------------------------

    def load_indexes(self) -> bool:
        """Load index files and derive next offset / max timestamp from the tail.

        Returns False when anything disagrees with the log (the caller then recovers)."""
        if not self.index.load(self.size_bytes) or not self.time_index.load():
            return False
        try:
            position = self.index.last_position()
            expected_first = self.index.lookup(2**62)[0]
            self.max_timestamp_ms = self.time_index.last_timestamp_ms
            self.next_offset = self.base_offset
            end = position
            expected = expected_first
            for batch_position, header in self.iter_headers(position, self.size_bytes):
                # The indexed batch must carry the entry's offset exactly; after it offsets
                # only grow (with gaps in a compacted segment). Otherwise the index is stale
                # or a base_offset is damaged.
                if not self._follows(header.base_offset, expected) or (
                    batch_position == position > 0 and header.base_offset != expected
                ):
                    return False
                expected = header.next_offset
                self.max_timestamp_ms = max(self.max_timestamp_ms, header.max_timestamp)
                self.next_offset = header.next_offset
                end = batch_position + header.size_bytes
            if end != self.size_bytes:
                return False
            if self.size_bytes and not self._tail_crc_ok():
                return False
        except CorruptDataError:
            return False
        self._bytes_since_index = self.size_bytes - self.index.last_position()
        return True

    def _tail_crc_ok(self) -> bool:
        last: tuple[int, BatchHeader] | None = None
        for item in self.iter_headers(self.index.last_position(), self.size_bytes):
            last = item
        if last is None:
            return True
        position, header = last
        data = os.pread(self.fd, header.size_bytes, position)
        return len(data) == header.size_bytes and crc32c(data[CRC_START:]) == header.crc

    def recover(self) -> RecoveryResult:
        """Rescan every batch (structure, contiguity and CRC), rebuild both indexes, and cut
        the file at the first batch that fails: a torn or corrupt tail is dropped."""
        self.index.clear()
        self.time_index.clear()
        self.max_timestamp_ms = -1
        self.next_offset = self.base_offset
        self._bytes_since_index = 0
        file_size = os.fstat(self.fd).st_size
        position, batches, reason = 0, 0, ""
        buf, chunk_start = b"", 0
        while position < file_size:
            relative = position - chunk_start
            if relative + HEADER_SIZE > len(buf):
                buf, chunk_start, relative = (
                    os.pread(self.fd, _SCAN_CHUNK_BYTES, position),
                    position,
                    0,
                )
            if len(buf) - relative < HEADER_SIZE:
                reason = f"torn header at position {position}"
                break
            header = parse_header(buf, relative)
            reason = self._header_problem(header, position, file_size)
            if reason:
                break
            if relative + header.size_bytes > len(buf):
                chunk = max(_SCAN_CHUNK_BYTES, header.size_bytes)
                buf, chunk_start, relative = os.pread(self.fd, chunk, position), position, 0
            view = memoryview(buf)[relative : relative + header.size_bytes]
            if crc32c(view[CRC_START:]) != header.crc:
                reason = f"CRC mismatch in batch at offset {header.base_offset}"
                break
            self._track(header, position)
            position += header.size_bytes
            batches += 1
        # Zeros at the file's end are an active segment's preallocated tail (a crash left
        # it), or writes that never reached the disk: cut, not counted as dropped data.
        data_end = self._nonzero_end(position, file_size)
        if file_size > position:
            os.ftruncate(self.fd, position)
        self.size_bytes = self._allocated = position
        self.index.rewrite()
        self.time_index.rewrite()
        dropped = data_end - position
        return RecoveryResult(
            position, dropped, batches, reason if dropped else "", file_size - data_end
        )

    def _nonzero_end(self, start: int, end: int) -> int:
        """The position after the last byte in [start, end) that is not zero (else start)."""
        last = start
        while start < end:
            chunk = os.pread(self.fd, min(_SCAN_CHUNK_BYTES, end - start), start)
            if not chunk:
                break
            kept = len(chunk.rstrip(b"\0"))
            if kept:
                last = start + kept
            start += len(chunk)
        return last

    def _header_problem(self, header: BatchHeader, position: int, file_size: int) -> str:
        if header.magic != MAGIC:
            return f"bad magic {header.magic} at position {position}"
        if not HEADER_SIZE - LOG_OVERHEAD <= header.batch_length <= STORED_BATCH_BYTES_HARD_MAX:
            return f"impossible batch_length {header.batch_length} at position {position}"
        if position + header.size_bytes > file_size:
            return (
                f"torn batch at position {position}: {file_size - position} of "
                + str(header.size_bytes)
                + " bytes present"
            )
        if not records_count_ok(header, stored=True):
            return f"inconsistent record count at position {position}"
        if not self._follows(header.base_offset, self.next_offset):
            return (
                f"offset {header.base_offset} at position {position}, expected {self.next_offset}"
            )
        return ""

    def truncate_to(self, offset: int) -> None:
        """Remove every batch holding an offset >= ``offset`` (cut at a batch boundary)."""
        found = self.locate(offset)
        if found is None:
            return
        position, header = found
        os.ftruncate(self.fd, position)
        self.size_bytes = self._allocated = position
        self.next_offset = header.base_offset
        if self.aborted.loaded:  # else it is checked against next_offset when loaded
            self.aborted.truncate_to(header.base_offset)
        self.index.truncate_to_position(position)
        self.time_index.truncate_to_offset(header.base_offset)
        self.max_timestamp_ms = self.time_index.last_timestamp_ms
        last_index_position = self.index.last_position()
        for _, kept in self.iter_headers(last_index_position, position):
            self.max_timestamp_ms = max(self.max_timestamp_ms, kept.max_timestamp)
        self._bytes_since_index = position - last_index_position

    # ---- lifetime ------------------------------------------------------------------------

    def close(self) -> None:
        """Close its files; the file ends at its data again. Not synced here: a log's close
        cuts and syncs its active segment first; elsewhere (a failed open) a tail left
        after a crash is zeros, which recovery cuts."""
        try:
            self.trim()
        except OSError as exc:
            log.warning("%s: could not cut its preallocated tail: %s", self.log_path, exc)
        self._release()

    def _release(self) -> None:
        self.index.close()
        self.time_index.close()
        self._close_direct()
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1

    def delete(self) -> None:
        self._release()
        for path in (self.log_path, self.index.path, self.time_index.path):
            path.unlink(missing_ok=True)
        self.aborted.delete()

    def swapped_in(self, log_path: Path) -> None:
        """The cleaned segment's file now has its final name: write its indexes beside
        (the aborted-transaction index as the caller ``set_loaded`` it)."""
        written = (self.index.path, self.time_index.path)  # a recover() may have written
        self.log_path = log_path
        self.index.path = log_path.with_suffix(".index")
        self.time_index.path = log_path.with_suffix(".timeindex")
        self.aborted.path = log_path.with_suffix(".txnindex")
        self.index.rewrite()
        self.time_index.rewrite()
        if self.aborted.loaded:
            self.aborted.rewrite(durable=True)
        for path in written:
            if path not in (self.index.path, self.time_index.path):
                path.unlink(missing_ok=True)
