"""The workload: producers sending unique keyed sequence-numbered values with acks=all, and
a consumer group whose members poll and commit as they go; every operation is recorded.

Each producer owns its keys (``p{i}-k{j}``) and sends one value at a time, waiting for the
outcome, so acknowledged order per key is sequence order. Values are ``"{key}:{seq}"``.
A compacting producer does the same on a compacted topic (``COMPACT_TOPIC``, keys
``c-k{j}``, ops ``csend``): the checker verifies each key's latest acknowledged value
survives the cleaners.
Each consumer member is a child process (:mod:`conveyor.chaos.consumer_proc`) reporting its
operations as JSON lines; one SIGKILLed by the nemesis is replaced by a new incarnation
(``consumer-{m}.{n}``) that resumes from the group's committed offsets.
"""

from __future__ import annotations

import concurrent.futures
import logging
import signal
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import ClassVar, Final

import conveyor
from conveyor.chaos.children import Incarnations, parse_line
from conveyor.chaos.history import History, OpType
from conveyor.client.consumer_core import Isolation
from conveyor.client.errors import ConveyorError, RetriableError

log = logging.getLogger(__name__)

TOPIC: Final = "chaos"
COMPACT_TOPIC: Final = "chaos-compact"
COMPACT_PARTITIONS: Final = 2
COMPACT_KEYS: Final = 8
# Small segments and a low dirty ratio so the cleaners run many times during a run.
COMPACT_CONFIG: Final = {
    "cleanup_policy": "compact",
    "segment_bytes": 4096,
    "min_cleanable_dirty_ratio": 0.1,
    "delete_retention_ms": 0,
}
GROUP: Final = "chaos-group"
KEYS_PER_PRODUCER: Final = 4
SEND_WAIT_S: Final = 6.0
COMMIT_EVERY_POLLS: Final = 3


def classify(error: BaseException) -> OpType:
    """``fail`` only when the service answered that nothing was written; else ``info``."""
    if isinstance(error, ConveyorError) and not isinstance(error, RetriableError):
        return "fail"
    return "info"


@dataclass
class Workload:
    url: str
    history: History
    log_dir: Path  # consumer processes' stderr: consumer-N.log
    producers: int = 3
    consumers: int = 2
    compactors: int = 1
    stop_producing: threading.Event = field(default_factory=threading.Event)
    stop_consuming: threading.Event = field(default_factory=threading.Event)
    threads: list[threading.Thread] = field(default_factory=list)
    members: Incarnations = field(init=False)  # the consumers' processes
    consumer_module: ClassVar[str] = "conveyor.chaos.consumer_proc"  # run per consumer

    def __post_init__(self) -> None:
        self.members = Incarnations(self.history, self.log_dir, self.stop_consuming)

    def start(self) -> None:
        for i in range(self.producers):
            self._spawn(f"producer-{i}", self._produce, i)
        for m in range(self.consumers):
            self._spawn(f"consumer-{m}", self._consume, m)
        for c in range(self.compactors):
            self._spawn(f"compactor-{c}", self._produce_compacted, c)

    def _spawn(self, name: str, target: object, index: int) -> None:
        thread = threading.Thread(target=target, args=(index,), name=name, daemon=True)  # type: ignore[arg-type]
        thread.start()
        self.threads.append(thread)

    def warm_up(self) -> dict[str, str]:
        """An acknowledged send from each producer, a poll from each consumer."""
        return (
            {f"producer-{i}": "send" for i in range(self.producers)}
            | {f"consumer-{m}": "poll" for m in range(self.consumers)}
            | {f"compactor-{c}": "csend" for c in range(self.compactors)}
        )

    def abort(self) -> None:
        """Stop everything at once (the run failed): no drain, consumer processes killed."""
        self.stop_producing.set()
        self.stop_consuming.set()
        self._signal_consumers(signal.SIGKILL)

    def crash_consumer(self, member: int) -> None:
        """SIGKILL member ``member``'s process; a new incarnation starts in its place."""
        self._signal_consumers(signal.SIGKILL, member)

    def stop(self, drain_s: float) -> None:
        """Stop producers, give consumers ``drain_s`` to catch up, then stop them."""
        self.stop_producing.set()
        for thread in self.threads[: self.producers] + self.threads[-self.compactors :]:
            thread.join(SEND_WAIT_S * 2 + 30)
        self.stop_consuming.wait(drain_s)
        self.stop_consuming.set()
        self._signal_consumers(signal.SIGTERM)  # each commits what it polled and exits
        for thread in self.threads[self.producers : self.producers + self.consumers]:
            thread.join(30)
        self._signal_consumers(signal.SIGKILL)

    def _produce(self, index: int) -> None:
        process = f"producer-{index}"
        producer = conveyor.Producer(
            self.url, acks="all", linger_ms=0, delivery_timeout_ms=5_000,
            request_timeout_ms=2_000, retry_backoff_max_ms=300, max_block_ms=5_000,
        )  # fmt: skip
        sequence = 0
        try:
            while not self.stop_producing.is_set():
                key = f"p{index}-k{sequence % KEYS_PER_PRODUCER}"
                self._send_one(producer, process, key, f"{key}:{sequence}")
                sequence += 1
        finally:
            producer.close(timeout=5)

    def _produce_compacted(self, index: int) -> None:
        process = f"compactor-{index}"
        producer = conveyor.Producer(
            self.url, acks="all", linger_ms=0, delivery_timeout_ms=5_000,
            request_timeout_ms=2_000, retry_backoff_max_ms=300, max_block_ms=5_000,
        )  # fmt: skip
        sequence = 0
        try:
            while not self.stop_producing.is_set():
                key = f"c{index}-k{sequence % COMPACT_KEYS}"
                value = f"{key}:{sequence}"
                self._send_one(producer, process, key, value, topic=COMPACT_TOPIC, f="csend")
                sequence += 1
        finally:
            producer.close(timeout=5)

    def _send_one(
        self,
        producer: conveyor.Producer,
        process: str,
        key: str,
        value: str,
        *,
        topic: str = TOPIC,
        f: str = "send",
    ) -> None:
        self.history.record(process, "invoke", f, {"key": key, "value": value})
        try:
            metadata = producer.send(topic, value, key=key).result(timeout=SEND_WAIT_S)
        except (ConveyorError, concurrent.futures.TimeoutError, TimeoutError, OSError) as e:
            self.history.record(
                process, classify(e), f, {"key": key, "value": value}, error=repr(e)
            )
            return
        self.history.record(
            process, "ok", f,
            {"key": key, "value": value, "partition": metadata.partition,
             "offset": metadata.offset},
        )  # fmt: skip

    def _consume(self, member: int) -> None:
        """Run member ``member`` as a child process, incarnation after incarnation."""
        argv = [sys.executable, "-m", self.consumer_module, self.url]
        self.members.run(member, f"consumer-{member}", lambda _process: argv, self._record_line)

    def _record_line(self, process: str, line: str) -> None:
        raw = parse_line(line)
        if raw is not None:
            self.history.record(process, raw["type"], raw["f"], raw["value"], raw["error"])

    def _signal_consumers(self, signum: signal.Signals, member: int | None = None) -> None:
        self.members.signal(signum, member)


def topic_dirs(data_dir: Path, topic: str = TOPIC) -> list[Path]:
    """A broker's replica directories of ``topic`` (``chaos-*`` would also match the
    compacted topic's ``chaos-compact-*``)."""
    return sorted(
        d for d in data_dir.glob(f"{topic}-*") if d.is_dir() and d.name.rpartition("-")[0] == topic
    )


def _text(data: bytes | None) -> str | None:
    return None if data is None else data.decode(errors="replace")


FinalReads = dict[int, list[tuple[int, str | None, str | None]]]


def final_read(
    url: str, partitions: int, timeout_s: float, topic: str = TOPIC,
    isolation: Isolation = "read_uncommitted",
) -> FinalReads:  # fmt: skip
    """Every record of every partition, read from the start by a fresh group."""

    out: FinalReads = {p: [] for p in range(partitions)}
    deadline = time.monotonic() + timeout_s
    with conveyor.Consumer(
        url, topic, enable_auto_commit=False,
        fetch_max_wait_ms=100, request_timeout_ms=3_000, isolation=isolation,
    ) as consumer:  # fmt: skip
        quiet_polls = 0
        while time.monotonic() < deadline and quiet_polls < 4:
            messages = consumer.poll(timeout=0.5)
            for m in messages:
                out[m.partition].append((m.offset, _text(m.key), _text(m.value)))
            quiet_polls = quiet_polls + 1 if not messages and consumer.caught_up() else 0
        if quiet_polls < 4:
            raise RuntimeError(f"final read did not catch up within {timeout_s}s")
    return out
