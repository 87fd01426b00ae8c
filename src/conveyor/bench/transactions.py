"""Transactional W1 (issue 21, docs/benchmarks.md#transactions): N x 100 B messages over
8 keys to an 8-partition topic with confluent-kafka (librdkafka), committed in
transactions of ``per_transaction`` messages, against the same producer without
transactions (idempotent, acks=all), alternating in the same run so both see the same
machine. Reports msg/s of each, their ratio, and commit latency percentiles (the
``commit_transaction()`` call: librdkafka waits for the transaction's records, which wait
for its AddPartitionsToTxn, then sends EndTxn, answered once the decision is durable).
"""

from __future__ import annotations

import statistics
import time
import uuid
from dataclasses import dataclass, field
from typing import Any

KEYS = 8
PARTITIONS = 8


@dataclass
class Run:
    transactional: bool
    messages: int
    seconds: float
    commit_ms: list[float] = field(default_factory=list)

    @property
    def rate(self) -> float:
        return self.messages / self.seconds


def _producer(bootstrap: str, transactional: bool) -> Any:
    from confluent_kafka import Producer

    config: dict[str, Any] = {
        "bootstrap.servers": bootstrap,
        "enable.idempotence": True,
        "acks": "all",
        "linger.ms": 5,
        "batch.size": 512 * 1024,
        "partitioner": "murmur2_random",
    }
    if transactional:
        config["transactional.id"] = f"bench-{uuid.uuid4().hex[:8]}"
    producer = Producer(config)
    if transactional:
        producer.init_transactions(30)
    return producer


def one_run(bootstrap: str, topic: str, count: int, per_transaction: int, txn: bool) -> Run:
    producer = _producer(bootstrap, txn)
    value = b"x" * 100
    keys = [f"key-{k}".encode() for k in range(KEYS)]
    run = Run(txn, count, 0.0)
    started = time.perf_counter()
    for i in range(count):
        if txn and i % per_transaction == 0:
            producer.begin_transaction()
        while True:
            try:
                producer.produce(topic, value, key=keys[i % KEYS])
                break
            except BufferError:
                producer.poll(0.01)
        if txn and (i + 1) % per_transaction == 0:
            before = time.perf_counter()
            producer.commit_transaction(60)
            run.commit_ms.append((time.perf_counter() - before) * 1000)
    if txn and count % per_transaction:
        producer.commit_transaction(60)
    if producer.flush(120) != 0:
        raise RuntimeError("messages left unsent after 120 s")
    run.seconds = time.perf_counter() - started
    return run


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))] if ordered else float("nan")


def compare(bootstrap: str, count: int, per_transaction: int, rounds: int) -> dict[str, Any]:
    from confluent_kafka import admin

    topic = f"bench-txn-{uuid.uuid4().hex[:8]}"
    client = admin.AdminClient({"bootstrap.servers": bootstrap})
    new_topic = admin.NewTopic(topic, PARTITIONS, 1)  # type: ignore[attr-defined]
    for future in client.create_topics([new_topic]).values():
        future.result(30)
    plain: list[Run] = []
    transactional: list[Run] = []
    for _ in range(rounds):
        plain.append(one_run(bootstrap, topic, count, per_transaction, txn=False))
        transactional.append(one_run(bootstrap, topic, count, per_transaction, txn=True))
    commits = [ms for run in transactional for ms in run.commit_ms]
    plain_rate = statistics.median(r.rate for r in plain)
    txn_rate = statistics.median(r.rate for r in transactional)
    return {
        "messages_per_run": count,
        "per_transaction": per_transaction,
        "rounds": rounds,
        "plain_msg_s": [round(r.rate) for r in plain],
        "transactional_msg_s": [round(r.rate) for r in transactional],
        "plain_median_msg_s": round(plain_rate),
        "transactional_median_msg_s": round(txn_rate),
        "ratio": round(txn_rate / plain_rate, 3),
        "commit_ms_p50": round(percentile(commits, 0.50), 2),
        "commit_ms_p99": round(percentile(commits, 0.99), 2),
        "commits": len(commits),
    }
