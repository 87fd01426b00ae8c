"""``send_many``'s outcome: one future for a whole list of records (docs/client.md,
"Batch APIs").

The records of one call go into the producer's ordinary batches (``Accumulator.
append_many``), a run of them per batch touched (``append_runs.py``); no future and no
object is made per record. The call's :class:`SendManyFuture` is done when every batch
holding one of its records is acknowledged or has failed for good.

Partial failure. A producer batch is appended by the broker whole or not at all, so each
:class:`SendRun` (the call's records in one batch) was written entirely or not at all:
``SendRun.error`` is None for a written run. Batches of different partitions succeed or
fail independently; within one partition, a batch that failed for good does not stop the
next ones (as with ``send``), so a failed run may be followed by written runs of the same
partition. A record was written exactly when its run was; ``SendManyResult.offsets()``
gives each record's offset, or -1 when it was not written (or its offset is not known:
``acks=0``, or a retried batch the broker had already written, which it recognises by
its producer sequence with idempotence and does not write again).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Generator, Sequence
from typing import Any, NamedTuple, cast

from conveyor.client.append_runs import AppendRun, AppendRuns
from conveyor.client.futures import BatchCompletion
from conveyor.client.hooks import SendHooks
from conveyor.client.types import to_bytes
from conveyor.protocol.errors import ConveyorError, ErrorCode, InvalidRequestError
from conveyor.protocol.partitioner import partition_for_key

Layout = int | Sequence[int] | Sequence[bytes] | None
"""How the call's records were spread: one partition for all (an int), a partition per
record (the custom partitioner's), a key per record (bytes: Kafka's key partitioner), or
None (sticky: the runs follow each other in the records' order)."""


class SendRun(NamedTuple):
    """Records ``count`` of one ``send_many`` call that went into one producer batch."""

    topic: str
    partition: int
    base_offset: int
    """The offset of the run's first record; -1 when failed or not known (module doc)."""
    records_count: int
    error: ConveyorError | None


class SendManyResult:
    """Where each run of one ``send_many`` call's records went (module docstring)."""

    __slots__ = ("_layout", "_partition_count", "count", "runs", "topic")

    def __init__(
        self,
        topic: str,
        runs: list[SendRun],
        count: int,
        layout: Layout,
        partition_count: int,
    ) -> None:
        self.topic = topic
        self.runs = runs
        self.count = count
        self._layout = layout
        self._partition_count = partition_count

    @property
    def failed_count(self) -> int:
        return sum(run.records_count for run in self.runs if run.error is not None)

    @property
    def written_count(self) -> int:
        return self.count - self.failed_count

    @property
    def errors(self) -> list[ConveyorError]:
        """The distinct errors of the failed runs (a failed batch's error is shared)."""
        seen: dict[int, ConveyorError] = {}
        for run in self.runs:
            if run.error is not None:
                seen.setdefault(id(run.error), run.error)
        return list(seen.values())

    def partitions(self) -> list[int]:
        """Each record's partition, in the order given to ``send_many``."""
        layout = self._layout
        if isinstance(layout, int):
            return [layout] * self.count
        if layout is None:
            out: list[int] = []
            for run in self.runs:
                out += [run.partition] * run.records_count
            return out
        if layout and isinstance(layout[0], bytes):
            cache: dict[bytes, int] = {}
            keyed = []
            for key in cast("Sequence[bytes]", layout):
                partition = cache.get(key)
                if partition is None:
                    partition = cache[key] = partition_for_key(key, self._partition_count)
                keyed.append(partition)
            return keyed
        return list(cast("Sequence[int]", layout))

    def offsets(self) -> list[int]:
        """Each record's offset in its partition, in the order given to ``send_many``;
        -1 where it was not written, or where its offset is not known."""
        if self._layout is None:  # sticky: the runs are the records' order
            out: list[int] = []
            for run in self.runs:
                if run.base_offset < 0:
                    out += [-1] * run.records_count
                else:
                    out += range(run.base_offset, run.base_offset + run.records_count)
            return out
        # A partition's runs hold its records in order: walk them with a cursor each.
        cursors: dict[int, list[int]] = {}  # partition -> [run index in its list, used]
        by_partition: dict[int, list[SendRun]] = {}
        for run in self.runs:
            by_partition.setdefault(run.partition, []).append(run)
        offsets = []
        for partition in self.partitions():
            cursor = cursors.setdefault(partition, [0, 0])
            runs = by_partition[partition]
            run = runs[cursor[0]]
            offsets.append(-1 if run.base_offset < 0 else run.base_offset + cursor[1])
            cursor[1] += 1
            if cursor[1] == run.records_count:
                cursor[0] += 1
                cursor[1] = 0
        return offsets

    def __repr__(self) -> str:
        return (
            f"<SendManyResult {self.topic} {self.count} records in {len(self.runs)} runs, "
            f"{self.failed_count} failed>"
        )


class SendManyError(ConveyorError):
    """Some of a ``send_many`` call's records were not written: ``result`` says which
    (its failed runs); the code and retriability are the first failed run's error's."""

    def __init__(self, result: SendManyResult) -> None:
        first = result.errors[0]
        super().__init__(
            f"{result.failed_count} of {result.count} records to {result.topic} not "
            f"written ({len(result.errors)} distinct errors; first: {first.message})",
            code=first.code,
        )
        self.result = result


class SendManyFuture:
    """The pending outcome of one ``send_many`` call: ``result()`` blocks, ``await``
    suspends; both return :class:`SendManyResult` once every record is acknowledged, or
    raise :class:`SendManyError` (holding the result) if any run failed."""

    __slots__ = ("_completions", "_layout", "_partition_count", "_runs", "count", "topic")

    def __init__(
        self,
        topic: str,
        runs: list[AppendRun[BatchCompletion]],
        count: int,
        layout: Layout,
        partition_count: int,
    ) -> None:
        self.topic = topic
        self.count = count
        self._runs = runs
        self._layout = layout
        self._partition_count = partition_count
        # A batch may hold several runs (one per chunk); wait for each batch once.
        self._completions = list({id(run.completion): run.completion for run in runs}.values())

    def done(self) -> bool:
        return all(completion.done for completion in self._completions)

    def result(self, timeout: float | None = None) -> SendManyResult:
        """Wait up to ``timeout`` seconds (None: forever) for every record's outcome."""
        return self._outcome(self._wait(timeout))

    def exception(self, timeout: float | None = None) -> SendManyError | None:
        try:
            self.result(timeout)
        except SendManyError as exc:
            return exc
        return None

    def _wait(self, timeout: float | None) -> SendManyResult:
        deadline = None if timeout is None else time.monotonic() + timeout
        for completion in self._completions:
            remaining = None if deadline is None else max(0.0, deadline - time.monotonic())
            if not completion.wait(remaining):
                raise TimeoutError(f"send_many not acknowledged within {timeout}s")
        return self._collect()

    def _collect(self) -> SendManyResult:
        runs = []
        for run in self._runs:
            completion = run.completion
            base = completion.base_offset
            offset = -1 if completion.error is not None or base < 0 else base + run.first
            runs.append(
                SendRun(completion.topic, completion.partition, offset, run.count, completion.error)
            )
        return SendManyResult(self.topic, runs, self.count, self._layout, self._partition_count)

    @staticmethod
    def _outcome(result: SendManyResult) -> SendManyResult:
        if any(run.error is not None for run in result.runs):
            raise SendManyError(result)
        return result

    def add_done_callback(self, callback: Callable[[SendManyFuture], None]) -> None:
        """Call ``callback(future)`` once every batch is done: on the producer's I/O
        thread (or at once when already done); it must be quick and must not block."""
        remaining = [len(self._completions)]
        lock = threading.Lock()

        def one_done() -> None:
            with lock:
                remaining[0] -= 1
                last = remaining[0] == 0
            if last:
                callback(self)

        if not self._completions:
            callback(self)
        for completion in self._completions:
            completion.add_callback(one_done)

    def __await__(self) -> Generator[Any, None, SendManyResult]:
        for completion in self._completions:
            if not completion.done:
                yield from completion.wait_async().__await__()
        return self._outcome(self._collect())

    def __repr__(self) -> str:
        state = "done" if self.done() else "pending"
        return f"<SendManyFuture {self.topic} {self.count} records {state}>"


def bytes_column(items: Sequence[Any], what: str, *, nullable: bool) -> Sequence[bytes | None]:
    """``items`` as bytes (str as UTF-8), checked before anything is appended, so that a
    bad item cannot leave the call half-appended. A list of bytes is used as it is."""
    kinds = set(map(type, items))
    if kinds <= {bytes} or (nullable and kinds <= {bytes, type(None)}):
        return items
    if not nullable and type(None) in kinds:
        raise InvalidRequestError(f"send_many: a {what} is None (give keys for all or none)")
    try:
        return [None if item is None else to_bytes(item) for item in items]
    except TypeError as exc:
        raise InvalidRequestError(f"send_many: a {what} is not bytes or str: {exc}") from None


class ManySend:
    """One ``send_many`` call on its way into the accumulator: its converted records,
    how far they are appended (``next_index``), and where they went (``runs``)."""

    __slots__ = (
        "keys",
        "next_index",
        "partition_count",
        "partitions",
        "runs",
        "timestamp_ms",
        "topic",
        "values",
    )

    def __init__(
        self,
        topic: str,
        values: Sequence[bytes | None],
        keys: Sequence[bytes] | None,
        partition: int | None,
        timestamp_ms: int | None,
    ) -> None:
        if keys is not None and len(keys) != len(values):
            raise InvalidRequestError(
                f"send_many: {len(keys)} keys for {len(values)} values (give one per value)"
            )
        self.topic = topic
        self.values = values
        self.keys = keys
        self.partitions: int | Sequence[int] | None = partition
        self.timestamp_ms = timestamp_ms
        self.partition_count = 0  # fixed by the first append: keys map with one count
        self.next_index = 0
        self.runs: AppendRuns[BatchCompletion] = AppendRuns()

    def bind(self, count: int, hooks: SendHooks, available: Callable[[str], list[int]]) -> None:
        """Fix the topic's partition count for the whole call (so every key maps with
        one count) and check the partitions, or ask the custom partitioner for them."""
        self.partition_count = count
        if isinstance(self.partitions, int) and not 0 <= self.partitions < count:
            raise InvalidRequestError(
                f"{self.topic} has partitions 0..{count - 1}, not {self.partitions}",
                code=ErrorCode.UNKNOWN_PARTITION,
            )
        if self.partitions is None and hooks.partitioner is not None:
            up = available(self.topic)
            keys: Sequence[bytes | None] = self.keys or [None] * len(self.values)
            chosen = [hooks.choose_partition(self.topic, key, count, up) for key in keys]
            self.partitions = cast("list[int]", chosen)

    @property
    def finished(self) -> bool:
        return self.next_index >= len(self.values)

    def future(self) -> SendManyFuture:
        layout: Layout = self.partitions
        if layout is None and self.keys is not None:
            layout = self.keys
        return SendManyFuture(
            self.topic, self.runs.finish(), len(self.values), layout, self.partition_count
        )


def prepare_many(  # noqa: PLR0917 -- send_many's own arguments
    hooks: SendHooks,
    topic: str,
    values: Sequence[Any],
    keys: Sequence[Any] | None,
    partition: int | None,
    timestamp_ms: int | None,
) -> ManySend:
    """``send_many``'s records as bytes, through the serializers if any."""
    if hooks.value_serializer is not None:
        values = [hooks.value_serializer(value) for value in values]
    if keys is not None and hooks.key_serializer is not None:
        keys = [hooks.key_serializer(key) for key in keys]
    return ManySend(
        topic,
        bytes_column(values, "value", nullable=True),
        None
        if keys is None
        else cast("Sequence[bytes]", bytes_column(keys, "key", nullable=False)),
        partition,
        timestamp_ms,
    )
