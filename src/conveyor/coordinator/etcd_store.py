"""The coordinator's metadata in etcd: a log of record batches plus snapshots, fenced by
the writer's epoch. The I/O shell of ``records_codec.py`` (the bytes) and ``model.apply``
(replay); it decides nothing about the cluster.

Keys under ``PREFIX`` (e.g. ``/conveyor/prod``)::

    PREFIX/meta                         {"cluster_id": uuid, "format": 1}, written once
    PREFIX/leader                       the election key (leadership.py), on the active's lease
    PREFIX/log/<seq, 16 digits>         one entry: the durable records of >= 1 transitions
    PREFIX/snapshot                     {"seq": S, "chunks": n}: the state after entry S
    PREFIX/snapshots/<S>/<chunk, 6 d.>  that state as records, in chunks of <= 512 KiB

Why a log and not one key per broker, topic or partition: a transition may change
thousands of partitions (creating a big topic, a broker's death), and etcd limits a
transaction to 128 operations and 1.5 MiB by default; a log entry is one put, compressed,
whatever the transition. It is also the shape ``model.apply`` replays (Kafka's KRaft
metadata log works the same way). Snapshots keep recovery short: once the log written
since the last snapshot is larger than that snapshot (and 1 MiB), the state is written
again and the log before it deleted, in one transaction with the new pointer, so the cost
per write stays constant.

**Fencing.** Every write is one etcd transaction whose first condition is
``create_revision(PREFIX/leader) == epoch``: the writer's epoch is the create revision of
the election key it won. If its lease expired and the key was deleted (and perhaps made
again by another coordinator, with a higher revision), the condition fails, nothing is
written, and the write raises :class:`StoreFencedError` naming the new active coordinator. The
second condition, ``create_revision(PREFIX/log/<seq>) == 0``, makes each log position
writable once: a write whose answer was lost and that lands late can never overwrite or
follow a newer one.
"""

from __future__ import annotations

import asyncio
import json
import logging
import uuid
from collections.abc import Sequence
from typing import Any, Final

from conveyor.coordinator.metastore import StoreFencedError
from conveyor.coordinator.model import (
    ClusterState,
    Record,
    apply,
    check_invariants,
    snapshot_records,
)
from conveyor.coordinator.records_codec import decode_records, encode_records, split_entries
from conveyor.protocol.errors import ErrorCode, FatalError, StorageError
from conveyor.transport.etcd import (
    EtcdClient,
    EtcdRequestError,
    EtcdUnavailableError,
    KeyValue,
    TxnResponse,
    b64,
    compare,
    op_get,
    op_put,
    prefix_end,
)

log = logging.getLogger(__name__)

FORMAT: Final = 1
ENTRY_BYTES_MAX: Final = 1024 * 1024  # etcd refuses requests over 1.5 MiB by default
SNAPSHOT_CHUNK_BYTES: Final = 512 * 1024
SNAPSHOT_BYTES_MIN: Final = 1024 * 1024  # below this, replaying the log is cheap anyway
LOG_PAGE: Final = 256  # entries per range request while loading
# A write retried while etcd elects a leader (about 1 s with default settings): shorter than
# a 2 s lease's validity, so a coordinator whose writes are stuck still steps down in time
WRITE_RETRY_MS: Final = 1500
WRITE_RETRY_PAUSE_MS: Final = 100


class EtcdLayout:
    """Key names under one prefix (one Conveyor cluster per prefix)."""

    def __init__(self, prefix: str) -> None:
        if not prefix.startswith("/") or prefix.rstrip("/") == "":
            raise ValueError(f"etcd prefix {prefix!r} must start with / and name something")
        self.prefix = prefix.rstrip("/")
        self.meta = f"{self.prefix}/meta"
        self.leader = f"{self.prefix}/leader"
        self.log = f"{self.prefix}/log/"
        self.snapshot = f"{self.prefix}/snapshot"
        self.snapshots = f"{self.prefix}/snapshots/"
        self.security = f"{self.prefix}/security"  # users, tokens, ACLs (security_etcd.py)

    def log_key(self, seq: int) -> str:
        return f"{self.log}{seq:016d}"

    def chunk_key(self, seq: int, chunk: int) -> str:
        return f"{self.snapshots}{seq:016d}/{chunk:06d}"


def leader_url(kv: KeyValue | None) -> str | None:
    """The active coordinator's URL from the election key's value (JSON ``{"url": ...}``)."""
    if kv is None or not kv.value:
        return None
    try:
        url = json.loads(kv.value_bytes).get("url")
    except (ValueError, AttributeError):
        return None
    return url if isinstance(url, str) else None


class EtcdMetadataStore:
    """One coordinator's writer to the log under ``layout``, fenced by ``epoch``."""

    def __init__(
        self,
        client: EtcdClient,
        layout: EtcdLayout,
        epoch: int,
        cluster_id: str,
        *,
        snapshot_bytes_min: int = SNAPSHOT_BYTES_MIN,
    ) -> None:
        self._client = client
        self.layout = layout
        self.epoch = epoch
        self._cluster_id = cluster_id
        self._snapshot_bytes_min = snapshot_bytes_min
        self._seq = 0  # the last log entry written or loaded
        self._log_bytes = 0  # log written since the last snapshot
        self._snapshot_bytes = 0
        self._loaded = False

    @classmethod
    async def open(
        cls,
        client: EtcdClient,
        layout: EtcdLayout,
        epoch: int,
        *,
        cluster_id: str | None = None,
        snapshot_bytes_min: int = SNAPSHOT_BYTES_MIN,
    ) -> EtcdMetadataStore:
        """The store for the holder of ``epoch``; makes ``PREFIX/meta`` on first use (with
        ``cluster_id``, or a new one). A ``cluster_id`` that differs from the stored one
        is refused: that prefix belongs to another cluster."""
        wanted = cluster_id or str(uuid.uuid4())
        meta = json.dumps({"cluster_id": wanted, "format": FORMAT}).encode()
        response = await client.txn(
            [compare(layout.leader, "CREATE", epoch), compare(layout.meta, "CREATE", 0)],
            [op_put(layout.meta, meta)],
            [op_get(layout.leader), op_get(layout.meta)],
        )
        if response.succeeded:
            log.info("created coordinator metadata at %s: cluster_id=%s", layout.prefix, wanted)
            stored = wanted
        else:
            _check_fence(response, epoch, layout)
            stored = _decode_meta(_kv(response, 1), layout)
            if cluster_id is not None and stored != cluster_id:
                raise StorageError(
                    f"etcd prefix {layout.prefix} holds cluster {stored}, not {cluster_id}"
                )
        return cls(client, layout, epoch, stored, snapshot_bytes_min=snapshot_bytes_min)

    @property
    def cluster_id(self) -> str:
        return self._cluster_id

    @property
    def location(self) -> str:
        return f"etcd {self._client.endpoint} prefix {self.layout.prefix}"

    async def close(self) -> None:
        """Nothing of its own to release: the client belongs to the caller."""

    # ---- recovery ------------------------------------------------------------------------

    async def load(self) -> ClusterState:
        """The snapshot, then every log entry after it, replayed; invariants checked. All
        reads at the revision of the first, so they see one consistent state."""
        first = await self._client.get(self.layout.snapshot)
        revision = first.header.revision
        records: list[Record] = []
        seq = 0
        if first.kvs:
            pointer = _json(first.kvs[0], self.layout.snapshot)
            seq, chunks = int(pointer["seq"]), int(pointer["chunks"])
            self._snapshot_bytes = 0
            for kv in await self._range(self.layout.chunk_key(seq, 0), seq, revision):
                self._snapshot_bytes += len(kv.value_bytes)
                records += decode_records(kv.value_bytes)
                chunks -= 1
            if chunks != 0:
                raise StorageError(
                    f"snapshot {seq} under {self.layout.prefix} is missing chunks",
                    code=ErrorCode.CORRUPT_DATA,
                )
        self._log_bytes = 0
        for kv in await self._range(self.layout.log_key(seq + 1), None, revision):
            entry_seq = int(kv.key_text.rsplit("/", 1)[1])
            if entry_seq != seq + 1:
                raise StorageError(
                    f"log under {self.layout.prefix} jumps from {seq} to {entry_seq}",
                    code=ErrorCode.CORRUPT_DATA,
                )
            seq = entry_seq
            self._log_bytes += len(kv.value_bytes)
            records += decode_records(kv.value_bytes)
        self._seq = seq
        self._loaded = True
        state = apply(ClusterState(cluster_id=self._cluster_id), records)
        check_invariants(state)
        return state

    async def _range(self, start: str, snapshot_seq: int | None, revision: int) -> list[KeyValue]:
        """Every key from ``start`` to the end of its section (the log, or one snapshot's
        chunks), in pages."""
        if snapshot_seq is None:
            end = prefix_end(self.layout.log)
        else:
            end = prefix_end(f"{self.layout.snapshots}{snapshot_seq:016d}/")
        found: list[KeyValue] = []
        while True:
            page = await self._client.range(start, end, limit=LOG_PAGE, revision=revision)
            found += page.kvs
            if not page.more or not page.kvs:
                return found
            start = page.kvs[-1].key_text + "\0"

    # ---- writes --------------------------------------------------------------------------

    async def write(self, records: Sequence[Record], state: ClusterState) -> None:
        """One log entry with ``records``, fenced; then a snapshot when the log has grown
        past the last one (a failed snapshot is retried after a later write)."""
        if not self._loaded:
            raise FatalError("etcd store written before load", code=ErrorCode.INTERNAL_ERROR)
        entry = encode_records(records)
        if len(entry) > ENTRY_BYTES_MAX:
            raise StorageError(
                f"one coordinator change encodes to {len(entry)} bytes, more than the "
                f"{ENTRY_BYTES_MAX} an etcd log entry may hold"
            )
        seq = self._seq + 1
        await self._append(seq, entry)
        self._seq = seq
        self._log_bytes += len(entry)
        if self._log_bytes > max(self._snapshot_bytes_min, self._snapshot_bytes):
            try:
                await self.write_snapshot(state)
            except (EtcdUnavailableError, EtcdRequestError) as exc:
                log.warning("snapshot at log entry %d failed, retrying later: %s", seq, exc)

    async def _append(self, seq: int, entry: bytes) -> None:
        """Put ``entry`` at log slot ``seq``, retrying while etcd is unavailable (a leader
        election takes about a second) for up to ``WRITE_RETRY_MS`` after the first failure
        (the own-clock lease check still stops the coordinator in time): the slot can be
        written once, so a retry of an attempt that did land finds its own entry there and
        counts as done. Past the deadline the error is raised (the outcome is unknown; the
        coordinator steps down and reloads)."""
        key = self.layout.log_key(seq)
        loop = asyncio.get_running_loop()
        deadline: float | None = None  # counted from the first failure
        while True:
            try:
                response = await self._fenced_txn([compare(key, "CREATE", 0)], [op_put(key, entry)])
            except EtcdUnavailableError as exc:
                deadline = deadline or loop.time() + WRITE_RETRY_MS / 1000
                if loop.time() >= deadline:
                    raise
                log.warning("log entry %d: etcd unavailable, retrying: %s", seq, exc)
                await asyncio.sleep(WRITE_RETRY_PAUSE_MS / 1000)
                continue
            if response.succeeded:
                return
            found = await self._client.get(key)
            if found.kvs and found.kvs[0].value_bytes == entry:
                log.info("log entry %d: an earlier attempt had landed", seq)
                return
            raise FatalError(
                f"log entry {seq} under {self.layout.prefix} holds another entry: another "
                f"writer at epoch {self.epoch}",
                code=ErrorCode.INTERNAL_ERROR,
            )

    async def write_snapshot(self, state: ClusterState) -> None:
        """Write ``state`` (the state after log entry ``seq``) as the new snapshot, then,
        in one transaction, point at it and delete the log it covers and older snapshots."""
        seq = self._seq
        chunks = split_entries(snapshot_records(state), SNAPSHOT_CHUNK_BYTES)
        for index, chunk in enumerate(chunks):
            await self._fenced_txn([], [op_put(self.layout.chunk_key(seq, index), chunk)])
        pointer = json.dumps({"seq": seq, "chunks": len(chunks)}).encode()
        older_snapshots_end = f"{self.layout.snapshots}{seq:016d}/"
        await self._fenced_txn(
            [],
            [
                op_put(self.layout.snapshot, pointer),
                _delete_range(self.layout.log, self.layout.log_key(seq + 1)),
                _delete_range(self.layout.snapshots, older_snapshots_end),
            ],
        )
        self._snapshot_bytes = sum(len(c) for c in chunks)
        self._log_bytes = 0
        log.info(
            "snapshot of coordinator metadata at log entry %d: %d bytes in %d chunks",
            seq,
            self._snapshot_bytes,
            len(chunks),
        )

    async def _fenced_txn(
        self, compares: list[dict[str, Any]], success: list[dict[str, Any]]
    ) -> TxnResponse:
        """``success`` if this store's epoch still holds the election key (and
        ``compares`` hold); StoreFencedError when another epoch does. A response with
        ``succeeded`` False here means one of ``compares`` failed."""
        fence = compare(self.layout.leader, "CREATE", self.epoch)
        response = await self._client.txn([fence, *compares], success, [op_get(self.layout.leader)])
        if not response.succeeded:
            _check_fence(response, self.epoch, self.layout)
        return response


def _delete_range(start: str, end: str) -> dict[str, Any]:
    """Delete every key in [start, end)."""
    return {"request_delete_range": {"key": b64(start), "range_end": b64(end)}}


def _kv(response: TxnResponse, index: int) -> KeyValue | None:
    found = response.responses[index].response_range if index < len(response.responses) else None
    return found.kvs[0] if found is not None and found.kvs else None


def _check_fence(response: TxnResponse, epoch: int, layout: EtcdLayout) -> None:
    """Raise StoreFencedError unless the election key (first failure op) is still ``epoch``'s."""
    leader = _kv(response, 0)
    if leader is None or leader.create_revision != epoch:
        holder = "nobody" if leader is None else f"epoch {leader.create_revision}"
        raise StoreFencedError(
            f"write under {layout.prefix} refused: epoch {epoch} is no longer active "
            f"(the election key is held by {holder})",
            active_url=leader_url(leader),
        )


def _json(kv: KeyValue, key: str) -> dict[str, Any]:
    try:
        value = json.loads(kv.value_bytes)
    except ValueError as exc:
        raise StorageError(f"{key} is not JSON: {exc}", code=ErrorCode.CORRUPT_DATA) from exc
    if not isinstance(value, dict):
        raise StorageError(f"{key} is not a JSON object", code=ErrorCode.CORRUPT_DATA)
    return value


def _decode_meta(kv: KeyValue | None, layout: EtcdLayout) -> str:
    if kv is None:
        raise StorageError(f"{layout.meta} is missing", code=ErrorCode.CORRUPT_DATA)
    meta = _json(kv, layout.meta)
    if int(meta.get("format", 0)) > FORMAT:
        raise StorageError(
            f"{layout.prefix} has metadata format {meta.get('format')}; this coordinator "
            f"knows {FORMAT}: run a newer coordinator"
        )
    return str(meta["cluster_id"])
