"""Where the records of one ``send_many`` went, as ``Accumulator.append_many`` appends
them: one :class:`AppendRun` per producer batch touched (``client/send_many.py`` turns
them into the caller's result once the batches are acknowledged). Pure bookkeeping, called
under the accumulator's lock."""

from __future__ import annotations

from typing import TYPE_CHECKING, Generic, TypeVar

if TYPE_CHECKING:
    from conveyor.client.accumulator import ProducerBatch

C = TypeVar("C")  # what a batch's records share to learn the outcome (BatchCompletion)


class AppendRun(Generic[C]):
    """Records of one ``append_many`` caller in one batch: ``count`` records from index
    ``first`` of the batch whose records share ``completion``."""

    __slots__ = ("completion", "count", "first")

    def __init__(self, completion: C, first: int) -> None:
        self.completion = completion
        self.first = first
        self.count = 0


class AppendRuns(Generic[C]):
    """Where ``append_many``'s records went: ``runs``, one per batch touched, in the order
    they began. The caller keeps one across its calls for one list of records."""

    __slots__ = ("_last", "_open", "runs")

    def __init__(self) -> None:
        self.runs: list[AppendRun[C]] = []
        # per partition: the batch appended to in this chunk and its run (counted when
        # the chunk ends, under the lock, before the batch can be built and let go) ...
        self._open: dict[int, tuple[ProducerBatch[C], AppendRun[C]]] = {}
        # ... and the one of the previous chunk, which the next may continue
        self._last: dict[int, tuple[ProducerBatch[C], AppendRun[C]]] = {}

    def begin(self, batch: ProducerBatch[C], position: int) -> None:
        """The record at ``position`` of ``batch`` was appended through the slow path
        (the first of a chunk to its partition, or the first after its batch changed)."""
        tail = self._open.get(batch.partition)
        if tail is not None:
            if tail[0] is batch:  # the fast path's room estimate ran out, the record fit
                return
            _count(*tail)
        else:
            tail = self._last.pop(batch.partition, None)
            if tail is not None and tail[0] is batch and tail[1].first + tail[1].count == position:
                self._open[batch.partition] = tail  # nothing came between: the run goes on
                return
        run = AppendRun(batch.completion, position)
        self.runs.append(run)
        self._open[batch.partition] = (batch, run)

    def end_chunk(self) -> None:
        """Called under the lock when a chunk ends: other records may follow."""
        for tail in self._open.values():
            _count(*tail)
        self._last.update(self._open)
        self._open.clear()

    def finish(self) -> list[AppendRun[C]]:
        """The runs, letting go of the batches."""
        self._last.clear()
        return self.runs


def _count(batch: ProducerBatch[C], run: AppendRun[C]) -> None:
    assert batch.builder is not None, "a run is counted before its batch can be built"
    run.count = batch.builder.records_count - run.first
