"""The share-state store: the leader of a ``__share_state`` partition keeps the records of
the share-partitions hashed to it, and fences deposed writers (KIP-932's share
coordinator, without a separate process).

A share-partition's state is written by the leader of its *data* partition, stamped with
that leader's epoch. Two operations, both answered only once their records are
acknowledged by the in-sync replicas of the ``__share_state`` partition (acks=all):

* ``write(key, epoch, entries)``: refused with STALE_EPOCH when a newer leader of the data
  partition has read the state (``epoch`` below the key's fence), else appended.
* ``read(key, epoch)``: appends a fence record for ``epoch`` first, then answers the
  key's latest snapshot and the deltas after it. A write of the previous leader either
  landed before the fence (and is in the answer) or is refused after it: no acknowledged
  operation is lost and none is applied twice.

The store's memory per key is its fence epoch and the offsets of its records since the
latest snapshot (rebuilt from the local log when this broker starts leading the
partition). Records are keyed ``share_key + b"\\x00" + slot`` with a bounded set of
slots (``s``, ``f``, ``d0``..``d63``) so compaction keeps exactly what a read needs: the
writer snapshots at least every ``DELTA_SLOTS`` deltas.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Final, Protocol

import msgspec

from conveyor.protocol.batch import parse_header, peek_length
from conveyor.protocol.errors import ErrorCode, FatalError, RetriableError
from conveyor.protocol.records import decode_batches, encode_batch
from conveyor.protocol.share import (
    StateEntry,
    StateFence,
    StateReadRequest,
    StateReadResponse,
    StateSnapshot,
    StateWriteRequest,
    decode_state,
    encode_state,
)

log = logging.getLogger(__name__)

DELTA_SLOTS: Final = 64
SNAPSHOT_SLOT: Final = b"s"
FENCE_SLOT: Final = b"f"
_READ_CHUNK_BYTES: Final = 1024 * 1024


def delta_slot(seq: int) -> bytes:
    return b"d%d" % (seq % DELTA_SLOTS)


class StateLogView(Protocol):
    @property
    def log_start_offset(self) -> int: ...

    @property
    def log_end_offset(self) -> int: ...

    def read(self, offset: int, max_bytes: int, *, upper_offset: int | None = None) -> bytes: ...


class StatePartition(Protocol):
    """What the store needs of the local leader replica of a ``__share_state`` partition
    (``BrokerService.leader_partition``'s answer has it)."""

    @property
    def leader_epoch(self) -> int: ...

    @property
    def log(self) -> StateLogView: ...


@dataclass(slots=True)
class _Loaded:
    """What the store knows of one partition it leads, at ``leader_epoch``: each key's
    fence epoch and the offsets of its records since its latest snapshot, from the log
    below ``scanned_to`` (and fences raised by requests since)."""

    leader_epoch: int
    scanned_to: int = 0
    fences: dict[bytes, int] = field(default_factory=dict)
    records: dict[bytes, list[int]] = field(default_factory=dict)


def split_key(record_key: bytes) -> tuple[bytes, bytes]:
    prefix, _, slot = record_key.rpartition(b"\x00")
    return prefix, slot


class StateStore:
    """Narrow dependencies: ``leader(partition)`` gives the local leader replica of a
    ``__share_state`` partition or raises NOT_LEADER; ``append(partition, batch)`` is the
    broker's acks=all produce to it (NOT_ENOUGH_REPLICAS below min ISR), answering the
    batch's last offset."""

    def __init__(
        self,
        leader: Callable[[int], Awaitable[StatePartition]],
        append: Callable[[int, bytes], Awaitable[int]],
    ) -> None:
        self._leader = leader
        self._append_batch = append
        self._loaded: dict[int, _Loaded] = {}

    def _load(self, number: int, partition: StatePartition) -> _Loaded:
        known = self._loaded.get(number)
        if known is not None and known.leader_epoch == partition.leader_epoch:
            return known
        loaded = _Loaded(partition.leader_epoch, scanned_to=partition.log.log_start_offset)
        self._scan(loaded, partition, partition.log.log_end_offset)
        self._loaded[number] = loaded
        log.info(
            "%s-%d: share state loaded at leader epoch %d: %d share-partitions",
            "__share_state",
            number,
            partition.leader_epoch,
            len(loaded.fences),
        )
        return loaded

    def _scan(self, loaded: _Loaded, partition: StatePartition, end: int) -> None:
        """Index the log from ``scanned_to`` to ``end``."""
        offset = max(loaded.scanned_to, partition.log.log_start_offset)
        while offset < end:
            chunk = partition.log.read(offset, _READ_CHUNK_BYTES)
            if not chunk:
                break
            for record in decode_batches(chunk, verify_crc=False, start_offset=offset):
                self._index(loaded, record.key, record.value, record.offset)
            offset = max(offset + 1, _chunk_end(chunk))
        loaded.scanned_to = max(loaded.scanned_to, offset)

    @staticmethod
    def _index(loaded: _Loaded, key: bytes | None, value: bytes | None, offset: int) -> None:
        if key is None:
            return
        prefix, slot = split_key(key)
        if value is None:  # a tombstone: the share-partition was deleted
            loaded.records.pop(prefix, None)
            loaded.fences.pop(prefix, None)
            return
        try:
            record = decode_state(value)
        except (msgspec.DecodeError, msgspec.ValidationError) as exc:
            raise FatalError(
                f"__share_state record at {offset} is not a state record: {exc}",
                code=ErrorCode.CORRUPT_DATA,
            ) from exc
        loaded.fences[prefix] = max(loaded.fences.get(prefix, -1), record.epoch)
        if isinstance(record, StateSnapshot):
            loaded.records[prefix] = [offset]
        elif slot != FENCE_SLOT:
            loaded.records.setdefault(prefix, []).append(offset)

    @staticmethod
    def _fence(loaded: _Loaded, key: bytes, epoch: int) -> None:
        fence = loaded.fences.get(key, -1)
        if epoch < fence:
            raise RetriableError(
                f"share state {key!r}: writer epoch {epoch} is fenced by epoch {fence} "
                "(a newer leader of the partition took over)",
                code=ErrorCode.STALE_EPOCH,
                leader_epoch=fence,
            )
        loaded.fences[key] = epoch

    async def _write(self, number: int, key: bytes, epoch: int, entries: list[StateEntry]) -> int:
        """Check the fence and append with no suspension point in between (the broker's
        produce does not yield before its append when this broker leads), so a writer
        that passed the fence is in the log before any fence record that follows."""
        partition = await self._leader(number)
        self._fence(self._load(number, partition), key, epoch)
        batch = encode_batch([(key + b"\x00" + e.slot, e.value) for e in entries])
        return await self._append_batch(number, batch)

    async def write(self, request: StateWriteRequest) -> None:
        await self._write(request.partition, request.key, request.epoch, request.entries)

    async def read(self, request: StateReadRequest) -> StateReadResponse:
        fence = StateEntry(FENCE_SLOT, encode_state(StateFence(epoch=request.epoch)))
        last = await self._write(request.partition, request.key, request.epoch, [fence])
        # Acknowledged: so is everything before it in the log, which the index now covers.
        partition = await self._leader(request.partition)
        loaded = self._load(request.partition, partition)
        self._scan(loaded, partition, last + 1)
        offsets = list(loaded.records.get(request.key, []))
        return StateReadResponse(values=self._values(partition, request.key, offsets))

    @staticmethod
    def _values(partition: StatePartition, key: bytes, offsets: list[int]) -> list[bytes]:
        values: list[bytes] = []
        wanted = set(offsets)
        position = offsets[0] if offsets else 0
        while wanted:
            chunk = partition.log.read(position, _READ_CHUNK_BYTES)
            if not chunk:
                raise FatalError(
                    f"share state {key!r}: records at {sorted(wanted)[:5]} are missing",
                    code=ErrorCode.CORRUPT_DATA,
                )
            for record in decode_batches(chunk, verify_crc=False, start_offset=position):
                if record.offset in wanted:
                    wanted.discard(record.offset)
                    if record.value is not None:
                        values.append(record.value)
            position = max(position + 1, _chunk_end(chunk))
            if wanted and min(wanted) > position:
                position = min(wanted)
        return values

    def forget(self, number: int) -> None:
        """This broker stopped leading the partition."""
        self._loaded.pop(number, None)


def _chunk_end(chunk: bytes) -> int:
    """The offset after the last whole batch of ``chunk``."""
    position, end = 0, 0
    while len(chunk) - position >= 12:
        _, size = peek_length(chunk, position)
        if position + size > len(chunk):
            break
        end = parse_header(chunk, position).last_offset + 1
        position += size
    return end
