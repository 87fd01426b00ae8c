"""Benchmark workers that speak the Kafka protocol (``conveyor bench --client
confluent-kafka|aiokafka``): the same roles, phases and reports as ``workers.py``'s
Conveyor-client workers, so results compare directly, but through the brokers' Kafka
listeners with an unmodified Kafka client.

* Producers send ``config.count`` messages (or for ``duration_s``) with the benchmark's
  keys, Java's murmur2 partitioner (``murmur2_random``: the same partitions as Conveyor's
  client), ``acks``, ``linger_ms`` and ``batch_bytes``; one send in ``sample_every`` is
  timed from ``produce`` to its delivery report. ``--sequential`` waits for each delivery
  before the next send (W3's acknowledged latency).
* Consumers are manually assigned their partitions (no consumer group: issue 17) and read
  from the log start to the high watermark seen at the start (consume), or from the end
  until the producers are done (e2e, reading each value's timestamp).
"""

from __future__ import annotations

import asyncio
import time
from typing import TYPE_CHECKING, Any, Final

from conveyor.bench.workers import (
    ERRORS_KEPT,
    GO_TIMEOUT_S,
    PROGRESS_EVERY,
    WorkerSpec,
    _keys,
    _value_maker,
)
from conveyor.bench.workload import TIMESTAMP_BYTES, WorkerReport, due_count

if TYPE_CHECKING:
    from multiprocessing.queues import Queue
    from multiprocessing.sharedctypes import Synchronized
    from multiprocessing.synchronize import Event

_ACKS: Final = {"all": "-1", "1": "1", "0": "0"}
_POLL_S: Final = 0.1


def run_kafka_worker(
    spec: WorkerSpec,
    counter: Synchronized[int],
    go: Event,
    producers_done: Event,
    out: Queue[Any],
) -> WorkerReport:
    if spec.config.client == "confluent-kafka":
        if spec.role == "producer":
            return _confluent_producer(spec, counter, go, out)
        return _confluent_consumer(spec, counter, go, producers_done, out)
    if spec.role == "producer":
        return asyncio.run(_aiokafka_producer(spec, counter, go, out))
    return asyncio.run(_aiokafka_consumer(spec, counter, go, producers_done, out))


def _wait_go(go: Event) -> None:
    if not go.wait(GO_TIMEOUT_S):
        raise TimeoutError("no go from the orchestrator")


def _error(report: WorkerReport, message: str) -> None:
    report.errors += 1
    if len(report.error_messages) < ERRORS_KEPT:
        report.error_messages.append(message)


# --- confluent-kafka (librdkafka) -----------------------------------------------------------


def _confluent_producer(
    spec: WorkerSpec, counter: Synchronized[int], go: Event, out: Queue[Any]
) -> WorkerReport:
    from confluent_kafka import Producer

    config = spec.config
    producer = Producer(
        {
            "bootstrap.servers": spec.kafka_bootstrap,
            "acks": _ACKS[config.acks],
            "linger.ms": config.linger_ms,
            "batch.size": config.batch_bytes,
            "partitioner": "murmur2_random",
            "queue.buffering.max.kbytes": 1024 * 1024,
        }
    )
    report = WorkerReport("producer", spec.index)
    producer.list_topics(spec.topic, timeout=30)  # metadata and connections before timing
    out.put(("ready", spec.role, spec.index))
    _wait_go(go)
    cpu_start = time.process_time()
    report.started_s = time.time()
    _confluent_send(producer, spec, counter, report)
    remaining = producer.flush(120)
    if remaining:
        _error(report, f"{remaining} messages never acknowledged")
    report.finished_s = time.time()
    report.cpu_s = time.process_time() - cpu_start
    counter.value = report.messages
    return report


def _confluent_send(
    producer: Any, spec: WorkerSpec, counter: Synchronized[int], report: WorkerReport
) -> None:
    config = spec.config
    keys = _keys(config)
    make_value = _value_maker(spec)
    samples = report.latencies_ns
    limit = spec.count if spec.count is not None else 1 << 62
    deadline = None if config.duration_s is None else time.monotonic() + config.duration_s
    start = time.monotonic()

    def delivered(err: Any, _msg: Any) -> None:
        if err is not None:
            _error(report, str(err))

    def timed(sent_ns: int) -> Any:
        def callback(err: Any, msg: Any) -> None:
            samples.append(time.perf_counter_ns() - sent_ns)
            delivered(err, msg)

        return callback

    sent = 0
    while sent < limit and (deadline is None or time.monotonic() < deadline):
        if spec.rate is not None and due_count(spec.rate, time.monotonic() - start) <= sent:
            producer.poll(0.0005)
            continue
        key = keys[sent % len(keys)]
        callback = timed(time.perf_counter_ns()) if sent % config.sample_every == 0 else delivered
        if config.sequential:
            callback = timed(time.perf_counter_ns())
        while True:
            try:
                producer.produce(spec.topic, make_value(), key, on_delivery=callback)
                break
            except BufferError:  # the local queue is full: serve delivery reports
                producer.poll(_POLL_S)
        sent += 1
        if config.sequential:
            producer.flush(60)
        elif sent % PROGRESS_EVERY == 0:
            producer.poll(0)
            counter.value = sent
    report.messages = sent
    report.payload_bytes = sent * config.message_bytes


def _confluent_consumer(
    spec: WorkerSpec,
    counter: Synchronized[int],
    go: Event,
    producers_done: Event,
    out: Queue[Any],
) -> WorkerReport:
    from confluent_kafka import OFFSET_BEGINNING, OFFSET_END, Consumer, TopicPartition

    config = spec.config
    consumer = Consumer(
        {
            "bootstrap.servers": spec.kafka_bootstrap,
            "group.id": f"bench-{spec.topic}",  # required by the client; never joined
            "enable.auto.commit": False,
            "fetch.max.bytes": config.fetch_max_bytes,
            "fetch.wait.max.ms": config.fetch_max_wait_ms,
        }
    )
    report = WorkerReport("consumer", spec.index)
    try:
        start = OFFSET_END if spec.from_end else OFFSET_BEGINNING
        ends = {p: consumer.get_watermark_offsets(TopicPartition(spec.topic, p), 30)[1]
                for p in spec.partitions}  # fmt: skip
        consumer.assign([TopicPartition(spec.topic, p, start) for p in spec.partitions])
        out.put(("ready", spec.role, spec.index))
        _wait_go(go)
        cpu_start = time.process_time()
        report.started_s = time.time()
        _confluent_read(consumer, spec, ends, producers_done, counter, report)
        report.finished_s = time.time()
        report.cpu_s = time.process_time() - cpu_start
        counter.value = report.messages
    finally:
        consumer.close()
    return report


def _confluent_read(  # noqa: PLR0917 -- the worker's parts, in order
    consumer: Any,
    spec: WorkerSpec,
    ends: dict[int, int],
    producers_done: Event,
    counter: Synchronized[int],
    report: WorkerReport,
) -> None:
    from confluent_kafka import TopicPartition

    positions = dict.fromkeys(spec.partitions, 0)
    final = not spec.from_end
    latencies = report.latencies_ns
    while not final or any(positions[p] < ends[p] for p in positions):
        if not final and producers_done.is_set():
            for p in positions:
                ends[p] = consumer.get_watermark_offsets(
                    TopicPartition(spec.topic, p), 30, cached=False
                )[1]
            final = True
        for message in consumer.consume(num_messages=10_000, timeout=_POLL_S):
            if message.error() is not None:
                continue
            positions[message.partition()] = message.offset() + 1
            report.messages += 1
            if spec.measure_e2e:
                value = message.value()
                sent_ns = int.from_bytes(value[:TIMESTAMP_BYTES], "big")
                latencies.append(time.time_ns() - sent_ns)
        counter.value = report.messages
    report.payload_bytes = report.messages * spec.config.message_bytes


# --- aiokafka -------------------------------------------------------------------------------


async def _aiokafka_producer(
    spec: WorkerSpec, counter: Synchronized[int], go: Event, out: Queue[Any]
) -> WorkerReport:
    from aiokafka import AIOKafkaProducer

    config = spec.config
    acks: int | str = "all" if config.acks == "all" else int(config.acks)
    producer = AIOKafkaProducer(
        bootstrap_servers=spec.kafka_bootstrap,
        acks=acks,
        linger_ms=config.linger_ms,
        max_batch_size=config.batch_bytes,
    )
    await producer.start()
    report = WorkerReport("producer", spec.index)
    try:
        await producer.partitions_for(spec.topic)
        out.put(("ready", spec.role, spec.index))
        await asyncio.get_running_loop().run_in_executor(None, _wait_go, go)
        cpu_start = time.process_time()
        report.started_s = time.time()
        await _aiokafka_send(producer, spec, counter, report)
        report.finished_s = time.time()
        report.cpu_s = time.process_time() - cpu_start
        counter.value = report.messages
    finally:
        await producer.stop()
    return report


async def _aiokafka_send(
    producer: Any, spec: WorkerSpec, counter: Synchronized[int], report: WorkerReport
) -> None:
    config = spec.config
    keys = _keys(config)
    make_value = _value_maker(spec)
    limit = spec.count if spec.count is not None else 1 << 62
    deadline = None if config.duration_s is None else time.monotonic() + config.duration_s
    pending: list[tuple[int, Any]] = []
    sent = 0
    while sent < limit and (deadline is None or time.monotonic() < deadline):
        sent_ns = time.perf_counter_ns()
        future = await producer.send(spec.topic, make_value(), key=keys[sent % len(keys)])
        sent += 1
        if config.sequential:
            pending.append((sent_ns, future))
            await _settle(pending, report, timed=True)
        else:
            pending.append((sent_ns if sent % config.sample_every == 1 else 0, future))
            if len(pending) >= PROGRESS_EVERY:
                await _settle(pending, report, timed=False)
                counter.value = sent
    await _settle(pending, report, timed=False)
    report.messages = sent
    report.payload_bytes = sent * config.message_bytes


async def _settle(pending: list[tuple[int, Any]], report: WorkerReport, timed: bool) -> None:
    for sent_ns, future in pending:
        try:
            await future
        except Exception as exc:  # a failed send is counted and reported, not fatal
            _error(report, str(exc))
        if timed or sent_ns:
            report.latencies_ns.append(time.perf_counter_ns() - sent_ns)
    pending.clear()


async def _aiokafka_consumer(
    spec: WorkerSpec,
    counter: Synchronized[int],
    go: Event,
    producers_done: Event,
    out: Queue[Any],
) -> WorkerReport:
    from aiokafka import AIOKafkaConsumer, TopicPartition

    config = spec.config
    consumer = AIOKafkaConsumer(
        bootstrap_servers=spec.kafka_bootstrap,
        enable_auto_commit=False,
        fetch_max_bytes=config.fetch_max_bytes,
        fetch_max_wait_ms=config.fetch_max_wait_ms,
    )
    await consumer.start()
    report = WorkerReport("consumer", spec.index)
    try:
        partitions = [TopicPartition(spec.topic, p) for p in spec.partitions]
        consumer.assign(partitions)
        if spec.from_end:
            await consumer.seek_to_end(*partitions)
        else:
            await consumer.seek_to_beginning(*partitions)
        ends = await consumer.end_offsets(partitions)
        out.put(("ready", spec.role, spec.index))
        await asyncio.get_running_loop().run_in_executor(None, _wait_go, go)
        cpu_start = time.process_time()
        report.started_s = time.time()
        positions = dict.fromkeys(partitions, 0)
        final = not spec.from_end
        while not final or any(positions[tp] < ends[tp] for tp in positions):
            if not final and producers_done.is_set():
                ends, final = await consumer.end_offsets(partitions), True
            batches = await consumer.getmany(timeout_ms=int(_POLL_S * 1000), max_records=10_000)
            for tp, records in batches.items():
                positions[tp] = records[-1].offset + 1
                report.messages += len(records)
                if spec.measure_e2e:
                    now_ns = time.time_ns()
                    report.latencies_ns.extend(
                        now_ns - int.from_bytes(r.value[:TIMESTAMP_BYTES], "big") for r in records
                    )
            counter.value = report.messages
        report.payload_bytes = report.messages * config.message_bytes
        report.finished_s = time.time()
        report.cpu_s = time.process_time() - cpu_start
    finally:
        await consumer.stop()
    return report
