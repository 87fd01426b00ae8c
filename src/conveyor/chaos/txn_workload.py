"""The transactional workload (``conveyor chaos --workload txn``, issue 21): what Jepsen's
Kafka workload does with transactions, with Conveyor's own client.

- **Writers** (threads ``txn-writer-{i}``, transactional id ``chaos-txn-w{i}``): each
  transaction writes 2 to 4 unique values to 2 or 3 partitions of ``TXN_TOPIC``, a few
  milliseconds apart, then commits, or (one in ``ABORT_ONE_IN``) aborts on purpose. A
  failed commit is followed by an abort; a failed abort by a new producer with the same
  transactional id (its init aborts whatever is open).
- **Processors** (child processes ``txn-proc-{m}.{n}``, :mod:`conveyor.chaos.txn_proc`):
  read-then-write transactions. A read_committed member of group ``TXN_GROUP`` polls,
  and in one transaction writes new values (to the same topic, so processors read each
  other and cyclic information flow could show) and commits its consumed offsets
  (``send_offsets_to_transaction``). SIGKILLed by the nemesis (``kill-consumer``) it is
  restarted with its transactional id, which aborts the open transaction.
- **Readers** (threads ``txn-reader-{r}``): read_committed consumers without a group,
  every partition from its start: what they return must be exactly the committed values,
  in log order.

Every step is recorded (:mod:`conveyor.chaos.txn_checker` lists the ops), values are
``"{txn}/{j}"`` (processors add ``@{depth}``: how many processor transactions led to it;
past ``DEPTH_MAX`` a processor writes nothing, so chains end).
"""

from __future__ import annotations

import concurrent.futures
import logging
import random
import signal
import sys
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final, Protocol

import conveyor
from conveyor.chaos.children import Incarnations, parse_line
from conveyor.chaos.history import History, OpType
from conveyor.chaos.workload import classify
from conveyor.client.errors import ConveyorError

log = logging.getLogger(__name__)

TXN_TOPIC: Final = "chaos-txn"
TXN_PARTITIONS: Final = 4
# Small segments: they roll every few transactions, so read_committed fetches cross
# sealed segments and their aborted-transaction index files, and recovery after a kill
# or a disk fault rebuilds them.
TXN_CONFIG: Final = {"segment_bytes": 4096}
TXN_GROUP: Final = "chaos-txn-group"
ABORT_ONE_IN: Final = 4
DEPTH_MAX: Final = 3
SEND_GAP_S: Final = 0.005  # between a transaction's writes: a reader could see a prefix
END_WAIT_S: Final = 15.0  # commit/abort: the coordinator answers within 10 s
# A transaction left open by a killed process is aborted this soon by the coordinator
# (its restart aborts it sooner); short so the final read's LSO is not held long.
TRANSACTION_TIMEOUT_MS: Final = 10_000
POLL_TIMEOUT_S: Final = 0.5

_ERRORS: Final = (ConveyorError, concurrent.futures.TimeoutError, TimeoutError, OSError)


def txn_producer(url: str, transactional_id: str) -> conveyor.Producer:
    """A transactional producer with short timeouts; the request timeout outlasts the
    coordinator's 10 s wait for markers, so a slow commit is answered, not timed out."""
    return conveyor.Producer(
        url, transactional_id=transactional_id, transaction_timeout_ms=TRANSACTION_TIMEOUT_MS,
        linger_ms=0, request_timeout_ms=12_000, delivery_timeout_ms=14_000,
        retry_backoff_max_ms=300, max_block_ms=5_000,
    )  # fmt: skip


def read_committed_consumer(url: str, **settings: object) -> conveyor.Consumer:
    return conveyor.Consumer(
        url, TXN_TOPIC, isolation="read_committed", enable_auto_commit=False,
        fetch_max_wait_ms=200, request_timeout_ms=3_000, **settings,  # type: ignore[arg-type]
    )  # fmt: skip


def records_of(messages: list[conveyor.Message]) -> list[list[object]]:
    """Polled messages as ``[partition, offset, value]`` rows."""
    return [
        [m.partition, m.offset, None if m.value is None else m.value.decode(errors="replace")]
        for m in messages
    ]


@dataclass
class TxnWorkload:
    url: str
    history: History
    log_dir: Path  # processors' stderr: txn-proc-N.log
    seed: int = 0
    writers: int = 2
    processors: int = 2
    readers: int = 2
    stop_writing: threading.Event = field(default_factory=threading.Event)
    stop_reading: threading.Event = field(default_factory=threading.Event)
    threads: dict[str, threading.Thread] = field(default_factory=dict)
    processors_run: Incarnations = field(init=False)

    def __post_init__(self) -> None:
        self.processors_run = Incarnations(self.history, self.log_dir, self.stop_writing)

    def start(self) -> None:
        for i in range(self.writers):
            self._spawn(f"txn-writer-{i}", self._write, i)
        for m in range(self.processors):
            self._spawn(f"txn-proc-{m}", self._process, m)
        for r in range(self.readers):
            self._spawn(f"txn-reader-{r}", self._read, r)

    def warm_up(self) -> dict[str, str]:
        """A commit from each writer and each processor (a read-then-write transaction:
        short runs must check some), a poll from each reader."""
        return (
            {f"txn-writer-{i}": "commit" for i in range(self.writers)}
            | {f"txn-proc-{m}": "commit" for m in range(self.processors)}
            | {f"txn-reader-{r}": "poll" for r in range(self.readers)}
        )

    def _spawn(self, name: str, target: object, index: int) -> None:
        thread = threading.Thread(target=target, args=(index,), name=name, daemon=True)  # type: ignore[arg-type]
        thread.start()
        self.threads[name] = thread

    def _join(self, prefix: str, timeout_s: float) -> None:
        for name, thread in self.threads.items():
            if name.startswith(prefix):
                thread.join(timeout_s)

    def abort(self) -> None:
        """Stop everything at once (the run failed): processors killed."""
        self.stop_writing.set()
        self.stop_reading.set()
        self._signal_processors(signal.SIGKILL)

    def crash_consumer(self, member: int) -> None:
        """The nemesis' kill-consumer: SIGKILL processor ``member`` (mid-transaction,
        most likely); a new incarnation starts in its place."""
        self._signal_processors(signal.SIGKILL, member)

    def stop(self, drain_s: float) -> None:
        """Stop the writers and processors, let the readers catch up for ``drain_s``."""
        self.stop_writing.set()
        self._signal_processors(signal.SIGTERM)  # each ends its transaction and exits
        self._join("txn-writer", END_WAIT_S * 2 + 10)
        self._join("txn-proc", END_WAIT_S * 2 + 10)
        self._signal_processors(signal.SIGKILL)
        self.stop_reading.wait(drain_s)
        self.stop_reading.set()
        self._join("txn-reader", 30)

    def _write(self, index: int) -> None:
        process = f"txn-writer-{index}"
        rng = random.Random(self.seed * 1000 + index)
        producer = txn_producer(self.url, f"chaos-txn-w{index}")
        count = 0
        try:
            while not self.stop_writing.is_set():
                txn = f"{process}#{count}"
                count += 1
                if not self._one_transaction(producer, process, txn, rng):
                    producer.close(timeout=1)
                    producer = txn_producer(self.url, f"chaos-txn-w{index}")
        finally:
            producer.close(timeout=5)

    def _one_transaction(
        self, producer: conveyor.Producer, process: str, txn: str, rng: random.Random
    ) -> bool:
        """One transaction; False when the producer must be replaced."""
        history = self.history
        try:
            producer.begin_transaction()
        except _ERRORS as e:
            history.record(process, classify(e), "begin", {"txn": txn}, error=repr(e))
            self.stop_writing.wait(0.2)
            return False
        history.record(process, "ok", "begin", {"txn": txn})
        futures = []
        for j, partition in enumerate(_targets(rng)):
            value = f"{txn}/{j}"
            history.record(
                process, "invoke", "tsend", {"txn": txn, "partition": partition, "value": value}
            )
            try:
                futures.append(
                    (value, producer.send(TXN_TOPIC, value, key=txn, partition=partition))
                )
            except _ERRORS as e:
                history.record(
                    process, "info", "tsend", {"txn": txn, "value": value}, error=repr(e)
                )
                break
            time.sleep(SEND_GAP_S)
        commit = rng.randrange(ABORT_ONE_IN) != 0 and len(futures) > 0
        record = history.record
        if commit and end_transaction(record, producer, process, txn, commit=True, futures=futures):
            return True
        return end_transaction(record, producer, process, txn, commit=False)

    def _read(self, index: int) -> None:
        process = f"txn-reader-{index}"
        consumer = read_committed_consumer(self.url)
        try:
            while not self.stop_reading.is_set():
                self.history.record(process, "invoke", "poll")
                try:
                    messages = consumer.poll(timeout=POLL_TIMEOUT_S)
                except ConveyorError as e:
                    self.history.record(process, classify(e), "poll", error=repr(e))
                    continue
                self.history.record(process, "ok", "poll", {"records": records_of(messages)})
        finally:
            consumer.close()

    def _process(self, member: int) -> None:
        """Run processor ``member`` as a child process, incarnation after incarnation."""

        def argv(process: str) -> list[str]:
            module = "conveyor.chaos.txn_proc"
            return [sys.executable, "-m", module, self.url, process, str(member), str(self.seed)]

        self.processors_run.run(member, f"txn-proc-{member}", argv, self._record_line)

    def _record_line(self, process: str, line: str) -> None:
        """A processor's step, at the time it stamped (``t``)."""
        raw = parse_line(line)
        if raw is not None:
            self.history.record(
                process, raw["type"], raw["f"], raw["value"], raw["error"], monotonic_ns=raw["t"]
            )

    def _signal_processors(self, signum: signal.Signals, member: int | None = None) -> None:
        self.processors_run.signal(signum, member)


def _targets(rng: random.Random) -> list[int]:
    """The partitions of one writer transaction's values: 2 or 3 partitions, one or two
    values each, in a random order."""
    partitions = rng.sample(range(TXN_PARTITIONS), rng.choice((2, 3)))
    targets = [p for p in partitions for _ in range(rng.choice((1, 1, 2)))]
    rng.shuffle(targets)
    return targets


class RecordOp(Protocol):
    """Where a step is recorded: :meth:`History.record` (writers) or stdout (processors)."""

    def __call__(
        self, process: str, type_: OpType, f: str, value: dict[str, Any] | None = None,
        error: str | None = None,
    ) -> object: ...  # fmt: skip


def end_transaction(
    record: RecordOp,
    producer: conveyor.Producer,
    process: str,
    txn: str,
    *,
    commit: bool,
    futures: Sequence[tuple[str, conveyor.RecordFuture]] = (),
) -> bool:
    """Commit (with the written values' offsets in the ok) or abort ``txn``, recorded;
    whether it answered ok."""
    f = "commit" if commit else "abort"
    record(process, "invoke", f, {"txn": txn})
    try:
        if commit:
            producer.commit_transaction(timeout=END_WAIT_S)
        else:
            producer.abort_transaction(timeout=END_WAIT_S)
    except _ERRORS as e:
        record(process, classify(e), f, {"txn": txn}, error=repr(e))
        return False
    offsets = []
    for value, future in futures:
        if future.exception(timeout=0) is None:  # committed: every record was acknowledged
            metadata = future.result(timeout=0)
            offsets.append([metadata.partition, metadata.offset, value])
    record(process, "ok", f, {"txn": txn, "offsets": offsets})
    return True
