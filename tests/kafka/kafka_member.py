"""A Kafka consumer-group member as its own process (so tests can SIGKILL it), with one of
the Kafka client families Conveyor is tested with.

``python -m tests.kafka.kafka_member CLIENT BOOTSTRAP TOPIC GROUP [--instance-id ID]``

CLIENT: ``confluent`` (librdkafka, classic protocol), ``confluent-848`` (librdkafka,
``group.protocol=consumer``), ``confluent-coop`` (classic, cooperative-sticky),
``kafka-python``, ``aiokafka``. Output, JSON lines on stdout, as
``tests/integration/group_member.py``: ``{"k", "v", "p", "o", "t"}`` per message processed,
``{"committed": n}`` after each successful synchronous commit (n = messages processed so
far; it commits after every batch, so what a killed member processed after its last
commit is its uncommitted tail), ``{"commit_failed": text}``, ``{"assigned": [[topic,
partition], ...]}`` on each new assignment, ``{"closed": n}``. SIGTERM: commit, leave the
group (a static member does not leave, as Kafka's), exit 0.
"""

from __future__ import annotations

import argparse
import asyncio
import faulthandler
import json
import os
import signal
import sys
import threading
import time
import warnings
from typing import Any

SESSION_TIMEOUT_MS = 3000  # the test cluster allows 1 s (--group-min-session-timeout-ms)
HEARTBEAT_INTERVAL_MS = 300
STOP = threading.Event()  # SIGTERM: finish the batch, commit, leave


def emit(line: dict[str, Any]) -> None:
    sys.stdout.write(json.dumps(line) + "\n")
    sys.stdout.flush()


def message_line(key: bytes | None, value: bytes | None, partition: int, offset: int) -> None:
    emit(
        {
            "k": key.decode() if key is not None else None,
            "v": value.decode() if value is not None else None,
            "p": partition,
            "o": offset,
            "t": time.time(),
        }
    )


def run_confluent(args: argparse.Namespace) -> int:
    from confluent_kafka import Consumer, KafkaException

    conf: dict[str, Any] = {
        "bootstrap.servers": args.bootstrap,
        "group.id": args.group,
        "client.id": f"member-{args.client}",
        "auto.offset.reset": "earliest",
        "enable.auto.commit": False,
    }
    if args.client == "confluent-848":
        conf["group.protocol"] = "consumer"
    else:
        conf["session.timeout.ms"] = SESSION_TIMEOUT_MS
        conf["heartbeat.interval.ms"] = HEARTBEAT_INTERVAL_MS
        if args.client == "confluent-coop":
            conf["partition.assignment.strategy"] = "cooperative-sticky"
    if args.instance_id:
        conf["group.instance.id"] = args.instance_id
    if os.environ.get("RDDEBUG"):  # librdkafka's debug contexts, to stderr
        conf["debug"] = os.environ["RDDEBUG"]
    consumer = Consumer(conf)

    owned: set[tuple[str, int]] = set()

    def on_assign(c: Any, partitions: list[Any]) -> None:
        owned.update((p.topic, p.partition) for p in partitions)  # cooperative: added ones
        emit({"assigned": sorted([t, p] for t, p in owned)})

    def on_revoke(c: Any, partitions: list[Any]) -> None:
        owned.difference_update((p.topic, p.partition) for p in partitions)

    consumer.subscribe([args.topic], on_assign=on_assign, on_revoke=on_revoke, on_lost=on_revoke)
    processed = 0
    while not STOP.is_set():
        batch = consumer.consume(num_messages=200, timeout=0.2)
        good = [m for m in batch if m.error() is None]
        for m in good:
            message_line(m.key(), m.value(), m.partition(), m.offset())
            processed += 1
        if good:
            try:
                consumer.commit(asynchronous=False)
                emit({"committed": processed})
            except KafkaException as exc:
                emit({"commit_failed": str(exc), "t": time.time()})
    consumer.close()
    emit({"closed": processed})
    return 0


def run_kafka_python(args: argparse.Namespace) -> int:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        from kafka.errors import KafkaError

        from kafka import KafkaConsumer

    options: dict[str, Any] = {}
    if args.instance_id:
        options["group_instance_id"] = args.instance_id
    if os.environ.get("KPDEBUG"):  # kafka-python's DEBUG log, to stderr
        import logging

        logging.basicConfig(level=logging.DEBUG, format="%(asctime)s %(name)s %(message)s")
    consumer = KafkaConsumer(
        args.topic,
        bootstrap_servers=args.bootstrap,
        group_id=args.group,
        client_id="member-kafka-python",
        auto_offset_reset="earliest",
        enable_auto_commit=False,
        session_timeout_ms=SESSION_TIMEOUT_MS,
        heartbeat_interval_ms=HEARTBEAT_INTERVAL_MS,
        **options,
    )
    processed = 0
    assigned: list[Any] = []
    while not STOP.is_set():
        batches = consumer.poll(timeout_ms=200, max_records=200)
        now = sorted([tp.topic, tp.partition] for tp in consumer.assignment())
        if now != assigned:
            assigned = now
            emit({"assigned": now})
        count = 0
        for tp, records in batches.items():
            for r in records:
                message_line(r.key, r.value, tp.partition, r.offset)
                count += 1
        processed += count
        if count:
            try:
                consumer.commit()
                emit({"committed": processed})
            except KafkaError as exc:
                emit({"commit_failed": repr(exc), "t": time.time()})
    consumer.close()
    emit({"closed": processed})
    return 0


async def run_aiokafka(args: argparse.Namespace) -> int:
    from aiokafka import AIOKafkaConsumer
    from aiokafka.errors import KafkaError

    options: dict[str, Any] = {}
    if args.instance_id:
        options["group_instance_id"] = args.instance_id
    consumer = AIOKafkaConsumer(
        args.topic,
        bootstrap_servers=args.bootstrap,
        group_id=args.group,
        client_id="member-aiokafka",
        auto_offset_reset="earliest",
        enable_auto_commit=False,
        session_timeout_ms=SESSION_TIMEOUT_MS,
        heartbeat_interval_ms=HEARTBEAT_INTERVAL_MS,
        **options,
    )
    await consumer.start()
    processed = 0
    assigned: list[Any] = []
    while not STOP.is_set():
        batches = await consumer.getmany(timeout_ms=200, max_records=200)
        now = sorted([tp.topic, tp.partition] for tp in consumer.assignment())
        if now != assigned:
            assigned = now
            emit({"assigned": now})
        count = 0
        for tp, records in batches.items():
            for r in records:
                message_line(r.key, r.value, tp.partition, r.offset)
                count += 1
        processed += count
        if count:
            try:
                await consumer.commit()
                emit({"committed": processed})
            except KafkaError as exc:
                emit({"commit_failed": repr(exc), "t": time.time()})
    await consumer.stop()
    emit({"closed": processed})
    return 0


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("client")
    parser.add_argument("bootstrap")
    parser.add_argument("topic")
    parser.add_argument("group")
    parser.add_argument("--instance-id")
    args = parser.parse_args()
    signal.signal(signal.SIGTERM, lambda *_: STOP.set())
    faulthandler.register(signal.SIGUSR1, all_threads=True)  # a hung member's stacks
    if args.client.startswith("confluent"):
        return run_confluent(args)
    if args.client == "kafka-python":
        return run_kafka_python(args)
    if args.client == "aiokafka":
        return asyncio.run(run_aiokafka(args))
    raise SystemExit(f"unknown client {args.client}")


if __name__ == "__main__":
    sys.exit(main())
