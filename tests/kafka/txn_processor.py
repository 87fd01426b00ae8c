"""A consume-transform-produce processor with exactly-once (Kafka transactions) as its own
process, so tests can SIGKILL it: ``python -m tests.kafka.txn_processor BOOTSTRAP INPUT
OUTPUT GROUP TRANSACTIONAL_ID``.

confluent-kafka (librdkafka): a read_committed group member reads INPUT; per poll it
opens a transaction, writes ``value.upper()`` with the same key to OUTPUT, sends the
consumed offsets to the transaction and commits. Prints ``{"committed": n}`` after each
commit (n = records processed so far). Runs until SIGTERM or SIGKILL; a transaction
that fails (a fatal or abortable error, the coordinator gone) prints ``{"error": text}``
and exits 3: its transaction is aborted by the next incarnation's init, and the records
are processed again from the group's committed offsets (what a supervisor restart does).
"""

from __future__ import annotations

import json
import signal
import sys
import threading
import time
from typing import Any

from confluent_kafka import Consumer, KafkaException, Producer, TopicPartition

STOP = threading.Event()


def main(bootstrap: str, source: str, sink: str, group: str, transactional_id: str) -> None:
    signal.signal(signal.SIGTERM, lambda *_: STOP.set())
    consumer = Consumer(
        {
            "bootstrap.servers": bootstrap,
            "group.id": group,
            "enable.auto.commit": False,
            "auto.offset.reset": "earliest",
            "isolation.level": "read_committed",
            "session.timeout.ms": 6000,  # Kafka's (and the coordinator's) minimum
            "heartbeat.interval.ms": 500,
        }
    )
    producer = Producer(
        {"bootstrap.servers": bootstrap, "transactional.id": transactional_id, "linger.ms": 5}
    )
    producer.init_transactions(30)  # fences this id's previous (killed) incarnation
    consumer.subscribe([source])
    processed = 0
    while not STOP.is_set():
        messages = [m for m in consumer.consume(num_messages=10, timeout=0.5) if m.error() is None]
        if not messages:
            continue
        producer.begin_transaction()
        ends: dict[int, int] = {}
        for message in messages:
            producer.produce(sink, value=message.value().upper(), key=message.key())
            ends[message.partition()] = message.offset() + 1
        producer.flush(30)
        time.sleep(0.2)  # most of the time inside a transaction: a kill lands in one
        offsets = [TopicPartition(source, p, o) for p, o in ends.items()]
        producer.send_offsets_to_transaction(offsets, consumer.consumer_group_metadata(), 30)
        producer.commit_transaction(30)
        processed += len(messages)
        emit({"committed": processed})
    consumer.close()


def emit(line: dict[str, Any]) -> None:
    sys.stdout.write(json.dumps(line) + "\n")
    sys.stdout.flush()


if __name__ == "__main__":
    try:
        main(*sys.argv[1:6])
    except KafkaException as exc:
        emit({"error": str(exc)})
        sys.exit(3)
