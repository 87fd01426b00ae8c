"""The workload: producers sending unique keyed sequence-numbered values with acks=all, and
a consumer group whose members poll and commit as they go; every operation is recorded.

Each producer owns its keys (``p{i}-k{j}``) and sends one value at a time, waiting for the
outcome, so acknowledged order per key is sequence order. Values are ``"{key}:{seq}"``.
A consumer member crashed by the nemesis is replaced by a new incarnation
(``consumer-{m}.{n}``) that resumes from the group's committed offsets.
"""

from __future__ import annotations

import concurrent.futures
import logging
import threading
import time
from dataclasses import dataclass, field
from typing import Final

import conveyor
from conveyor.chaos.history import History, OpType
from conveyor.client.errors import ConveyorError, RetriableError

log = logging.getLogger(__name__)

TOPIC: Final = "chaos"
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
    producers: int = 3
    consumers: int = 2
    stop_producing: threading.Event = field(default_factory=threading.Event)
    stop_consuming: threading.Event = field(default_factory=threading.Event)
    crash_requests: list[threading.Event] = field(default_factory=list)
    threads: list[threading.Thread] = field(default_factory=list)

    def start(self) -> None:
        self.crash_requests = [threading.Event() for _ in range(self.consumers)]
        for i in range(self.producers):
            self._spawn(f"producer-{i}", self._produce, i)
        for m in range(self.consumers):
            self._spawn(f"consumer-{m}", self._consume, m)

    def _spawn(self, name: str, target: object, index: int) -> None:
        thread = threading.Thread(target=target, args=(index,), name=name, daemon=True)  # type: ignore[arg-type]
        thread.start()
        self.threads.append(thread)

    def crash_consumer(self, member: int) -> None:
        self.crash_requests[member].set()

    def stop(self, drain_s: float) -> None:
        """Stop producers, give consumers ``drain_s`` to catch up, then stop them."""
        self.stop_producing.set()
        for thread in self.threads[: self.producers]:
            thread.join(SEND_WAIT_S * 2 + 30)
        self.stop_consuming.wait(drain_s)
        self.stop_consuming.set()
        for thread in self.threads[self.producers :]:
            thread.join(60)

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

    def _send_one(self, producer: conveyor.Producer, process: str, key: str, value: str) -> None:
        self.history.record(process, "invoke", "send", {"key": key, "value": value})
        try:
            metadata = producer.send(TOPIC, value, key=key).result(timeout=SEND_WAIT_S)
        except (ConveyorError, concurrent.futures.TimeoutError, TimeoutError, OSError) as e:
            self.history.record(
                process, classify(e), "send", {"key": key, "value": value}, error=repr(e)
            )
            return
        self.history.record(
            process, "ok", "send",
            {"key": key, "value": value, "partition": metadata.partition,
             "offset": metadata.offset},
        )  # fmt: skip

    def _consume(self, member: int) -> None:
        incarnation = 0
        while not self.stop_consuming.is_set():
            process = f"consumer-{member}.{incarnation}"
            self.crash_requests[member].clear()
            consumer = conveyor.Consumer(
                self.url, TOPIC, group=GROUP, enable_auto_commit=False,
                fetch_max_wait_ms=200, request_timeout_ms=3_000, max_poll_records=200,
            )  # fmt: skip
            crashed = self._consume_loop(consumer, process, member)
            if crashed:
                self.history.record(process, "info", "crash", {"member": member})
            consumer.close(timeout=10)  # auto-commit is off: a crash commits nothing
            incarnation += 1

    def _consume_loop(self, consumer: conveyor.Consumer, process: str, member: int) -> bool:
        polls = 0
        assigned: list[int] = []
        while not self.stop_consuming.is_set():
            if self.crash_requests[member].is_set():
                return True
            self.history.record(process, "invoke", "poll")
            try:
                messages = consumer.poll(timeout=0.5)
            except ConveyorError as e:
                self.history.record(process, classify(e), "poll", error=repr(e))
                continue
            now_assigned = sorted(tp.partition for tp in consumer.assignment())
            if now_assigned != assigned:  # positions may legitimately jump after this
                self.history.record(process, "ok", "rebalance", {"partitions": now_assigned})
                assigned = now_assigned
            records = [[m.partition, m.offset, _text(m.key), _text(m.value)] for m in messages]
            self.history.record(process, "ok", "poll", {"records": records})
            polls += 1
            if polls % COMMIT_EVERY_POLLS == 0:
                self._commit(consumer, process)
        self._commit(consumer, process)
        return False

    def _commit(self, consumer: conveyor.Consumer, process: str) -> None:
        """Commit what poll returned; the history gets the offsets (next to read) it covers."""
        positions = {}
        for tp in consumer.assignment():
            position = consumer.position(tp.topic, tp.partition)
            if position is not None:
                positions[str(tp.partition)] = position
        self.history.record(process, "invoke", "commit", {"offsets": positions})
        try:
            consumer.commit()
        except ConveyorError as e:
            self.history.record(process, classify(e), "commit", {"offsets": positions}, repr(e))
            return
        self.history.record(process, "ok", "commit", {"offsets": positions})


def _text(data: bytes | None) -> str | None:
    return None if data is None else data.decode(errors="replace")


FinalReads = dict[int, list[tuple[int, str | None, str | None]]]


def final_read(url: str, partitions: int, timeout_s: float) -> FinalReads:
    """Every record of every partition, read from the start by a fresh group."""

    out: FinalReads = {p: [] for p in range(partitions)}
    deadline = time.monotonic() + timeout_s
    with conveyor.Consumer(
        url, TOPIC, group=f"chaos-final-{time.time_ns()}", enable_auto_commit=False,
        fetch_max_wait_ms=100, request_timeout_ms=3_000,
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
