"""One processor of the transactional workload, as a child process:
``python -m conveyor.chaos.txn_proc URL PROCESS MEMBER SEED``.

A read_committed member of ``TXN_GROUP`` and a transactional producer
(``chaos-txn-p{MEMBER}``: a new incarnation fences the one before and aborts its open
transaction). Each poll that returns values feeds one transaction: it writes up to two
new values to two partitions of the topic it reads, commits its consumed offsets with
them (``send_offsets_to_transaction``) and commits, or (one in ``ABORT_ONE_IN``) aborts
and rewinds to the first offsets it polled. A transaction that fails ends the process
(exit 3): the workload starts a new incarnation from the group's committed offsets.
Every step goes to stdout as a JSON line (see :mod:`conveyor.chaos.consumer_proc`);
SIGTERM asks it to stop after the current transaction.
"""

from __future__ import annotations

import random
import sys
import threading
import time
from typing import Any, Final

import conveyor
from conveyor.chaos.children import stop_on_sigterm, write_line
from conveyor.chaos.history import OpType
from conveyor.chaos.txn_workload import (
    ABORT_ONE_IN,
    DEPTH_MAX,
    POLL_TIMEOUT_S,
    SEND_GAP_S,
    TXN_GROUP,
    TXN_PARTITIONS,
    TXN_TOPIC,
    end_transaction,
    read_committed_consumer,
    records_of,
    txn_producer,
)
from conveyor.chaos.workload import classify
from conveyor.client.errors import ConveyorError

EXIT_TXN_FAILED: Final = 3
SESSION_TIMEOUT_MS: Final = 3_000
HEARTBEAT_INTERVAL_MS: Final = 500


def emit(type_: str, f: str, value: dict[str, Any] | None = None, error: str | None = None) -> None:
    """One step as a JSON line, with when it happened (``t``, CLOCK_MONOTONIC in ns): the
    workload reads the line later, and G1b/read-past-lso compare times across processes."""
    write_line(
        {"type": type_, "f": f, "value": value or {}, "error": error, "t": time.monotonic_ns()}
    )


def record(
    process: str,  # the workload names the process from the pipe
    type_: OpType, f: str, value: dict[str, Any] | None = None, error: str | None = None,
) -> None:  # fmt: skip
    emit(type_, f, value, error)


def depth_of(value: str | None) -> int:
    """How many processor transactions led to ``value`` (writers' values: 0)."""
    if value is None or "@" not in value:
        return 0
    return int(value.rpartition("@")[2])


def run(url: str, process: str, member: int, seed: int, stop: threading.Event) -> int:
    rng = random.Random(f"{seed}/{process}")
    consumer = read_committed_consumer(
        url, group_id=TXN_GROUP, max_poll_records=50, session_timeout_ms=SESSION_TIMEOUT_MS,
        heartbeat_interval_ms=HEARTBEAT_INTERVAL_MS,
    )  # fmt: skip
    producer = txn_producer(url, f"chaos-txn-p{member}")
    count = 0
    try:
        try:
            producer.init_transactions()
        except (ConveyorError, TimeoutError, OSError) as e:
            emit(classify(e), "init", error=repr(e))
            return EXIT_TXN_FAILED
        while not stop.is_set():
            emit("invoke", "poll")
            try:
                messages = consumer.poll(timeout=POLL_TIMEOUT_S)
            except ConveyorError as e:
                emit(classify(e), "poll", error=repr(e))
                continue
            txn = f"{process}#{count}" if messages else None
            emit("ok", "poll", {"records": records_of(messages), "txn": txn})
            if txn is None:
                continue
            count += 1
            if not _transaction(consumer, producer, process, txn, messages=messages, rng=rng):
                return EXIT_TXN_FAILED
        return 0
    finally:
        producer.close(timeout=5)
        consumer.close(timeout=5)


def _transaction(
    consumer: conveyor.Consumer, producer: conveyor.Producer, process: str, txn: str, *,
    messages: list[conveyor.Message], rng: random.Random,
) -> bool:  # fmt: skip
    """One read-then-write transaction over ``messages``; False: it failed (exit)."""
    try:
        producer.begin_transaction()
    except (ConveyorError, TimeoutError, OSError) as e:
        emit(classify(e), "begin", {"txn": txn}, repr(e))
        return False
    emit("ok", "begin", {"txn": txn})
    depth = 1 + min(depth_of(None if m.value is None else m.value.decode()) for m in messages)
    futures = []
    if depth <= DEPTH_MAX:
        for j, partition in enumerate(rng.sample(range(TXN_PARTITIONS), 2)):
            value = f"{txn}/{j}@{depth}"
            emit("invoke", "tsend", {"txn": txn, "partition": partition, "value": value})
            futures.append((value, producer.send(TXN_TOPIC, value, key=txn, partition=partition)))
            time.sleep(SEND_GAP_S)
    first: dict[int, int] = {}
    last: dict[int, int] = {}
    for m in messages:
        first.setdefault(m.partition, m.offset)
        last[m.partition] = m.offset
    try:
        producer.send_offsets_to_transaction(
            {(TXN_TOPIC, p): offset + 1 for p, offset in last.items()},
            consumer.group_metadata(),  # fenced (KIP-447): a zombie's offsets are refused
        )
    except ConveyorError as e:
        emit("info", "offsets", {"txn": txn}, repr(e))
        end_transaction(record, producer, process, txn, commit=False)
        return False
    if rng.randrange(ABORT_ONE_IN) == 0:
        if not end_transaction(record, producer, process, txn, commit=False):
            return False
        for partition, offset in first.items():  # read them again in the next one
            consumer.seek(TXN_TOPIC, partition, offset)
        return True
    return end_transaction(record, producer, process, txn, commit=True, futures=futures)


def main() -> None:
    stop = stop_on_sigterm()
    url, process, member, seed = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
    sys.exit(run(url, process, member, seed, stop))


if __name__ == "__main__":
    main()
