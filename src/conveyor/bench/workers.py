"""The producer and consumer processes of ``conveyor bench produce|consume|e2e``.

Each worker is a process of its own (``multiprocessing`` spawn), so that several of them
use several cores as separate client applications would. A worker sets itself up
(connections, metadata, start offsets), says ``ready`` on the shared queue, waits for the
orchestrator's ``go``, measures, and puts one :class:`WorkerReport` on the queue. Progress
goes through a shared counter the orchestrator reads for its live bar.

Producers use the client library's :class:`~conveyor.client.Producer` as an application
would. Consumers read an explicit set of partitions (manual assignment, as Kafka's
``assign``): the library's ``Consumer`` reads every partition of a topic until consumer
groups land, so competing consumers are the benchmark's own fetch loop, built from the
same parts the ``Consumer`` uses (long-poll fetch, ``decode_batches``,
``messages_from_records``): one ``Message`` per record, as an application receives them.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from multiprocessing.queues import Queue
from multiprocessing.sharedctypes import Synchronized
from multiprocessing.synchronize import Event
from typing import Any, Final

from conveyor.bench.workload import TIMESTAMP_BYTES, ClientBenchConfig, WorkerReport, due_count
from conveyor.transport.waits import gather_all

PROGRESS_EVERY: Final = 1024  # messages between updates of the shared progress counter
ERRORS_KEPT: Final = 5
GO_TIMEOUT_S: Final = 300.0


@dataclass(frozen=True, slots=True)
class WorkerSpec:
    role: str  # "producer" or "consumer"
    index: int
    url: str
    topic: str
    config: ClientBenchConfig
    count: int | None = None  # producer: messages to send (None: until duration_s)
    rate: float | None = None  # producer: its share of the rate
    partitions: tuple[int, ...] = ()  # consumer: its manual assignment
    from_end: bool = False  # consumer: start at the high watermark (e2e) or the log start
    measure_e2e: bool = False  # consumer: read the producer's timestamp in each value
    kafka_bootstrap: str = ""  # the brokers' Kafka listeners (Kafka clients only)


def worker_main(
    spec: WorkerSpec,
    counter: Synchronized[int],
    go: Event,
    producers_done: Event,
    out: Queue[Any],
) -> None:
    """The spawned process's entry point."""
    try:
        if spec.config.client not in ("conveyor", "conveyor-kafka"):  # a Kafka library
            from conveyor.bench.kafka_workers import run_kafka_worker

            report = run_kafka_worker(spec, counter, go, producers_done, out)
        elif spec.role == "producer":
            report = _run_producer(spec, counter, go, out)
        elif spec.config.client == "conveyor-kafka":
            from conveyor.bench.conveyor_kafka_consumer import run_conveyor_kafka_consumer

            report = run_conveyor_kafka_consumer(spec, counter, go, producers_done, out)
        else:
            report = asyncio.run(_run_consumer(spec, counter, go, producers_done, out))
    except BaseException as exc:
        out.put(("failed", spec.role, spec.index, f"{type(exc).__name__}: {exc}"))
        raise
    out.put(("report", report))


# --- producer -------------------------------------------------------------------------------


def _run_producer(
    spec: WorkerSpec, counter: Synchronized[int], go: Event, out: Queue[Any]
) -> WorkerReport:
    from conveyor.client import Producer

    config = spec.config
    producer = Producer(
        spec.url,
        acks=config.acks,
        linger_ms=config.linger_ms,
        batch_size=config.batch_bytes,
        max_block_ms=120_000,
        max_in_flight_requests_per_connection=config.max_in_flight,
    )
    report = WorkerReport("producer", spec.index)
    try:
        _warm_up(producer, spec.topic)
        out.put(("ready", spec.role, spec.index))
        if not go.wait(GO_TIMEOUT_S):
            raise TimeoutError("no go from the orchestrator")
        cpu_start = time.process_time()
        report.started_s = time.time()
        if config.sequential:
            futures = _send_sequential(producer, spec, counter, report)
        else:
            futures = _send_pipelined(producer, spec, counter, report)
        producer.flush()
        report.finished_s = time.time()
        report.cpu_s = time.process_time() - cpu_start
        counter.value = report.messages
        _count_errors(futures, report)
    finally:
        producer.close(timeout=30)
    return report


def _warm_up(producer: Any, topic: str) -> None:
    """Fetch the topic's metadata before timing starts (what ``send`` would do first)."""
    core = producer._core  # the benchmark's one reach inside: no public metadata call
    producer._io.run(core.partition_count(topic, 30_000))


def _keys(config: ClientBenchConfig) -> list[bytes | None]:
    return [f"key-{i}".encode() for i in range(config.keys)] if config.keys else [None]


def _value_maker(spec: WorkerSpec) -> Callable[[], bytes]:
    size = spec.config.message_bytes
    if spec.config.mode != "e2e":
        value = os.urandom(size)  # incompressible, made once: the broker never decodes it
        return lambda: value
    padding = os.urandom(size - TIMESTAMP_BYTES)
    to_bytes = int.to_bytes
    clock = time.time_ns

    def stamped() -> bytes:
        return to_bytes(clock(), TIMESTAMP_BYTES, "big") + padding

    return stamped


def _record_latency(samples: list[int], sent_ns: int, _future: object) -> None:
    samples.append(time.perf_counter_ns() - sent_ns)  # list.append is atomic under the GIL


def _send_pipelined(
    producer: Any, spec: WorkerSpec, counter: Synchronized[int], report: WorkerReport
) -> list[Any]:
    """Send as fast as the producer takes records, or at ``spec.rate``; time one send in
    ``sample_every`` from ``send`` to its acknowledgement (on the producer's I/O thread)."""
    config = spec.config
    send, topic = producer.send, spec.topic
    keys = _keys(config)
    key_count = len(keys)
    make_value = _value_maker(spec)
    sample_every = config.sample_every
    samples = report.latencies_ns
    futures: list[Any] = []
    keep = futures.append
    deadline = None if config.duration_s is None else time.monotonic() + config.duration_s
    limit = spec.count if spec.count is not None else 1 << 62
    rate = spec.rate
    start = time.monotonic()
    sent = 0
    while sent < limit:
        if rate is not None:
            allowed = min(limit, due_count(rate, time.monotonic() - start))
            if allowed <= sent:
                time.sleep(min(0.0005, 1 / rate))
                continue
        else:
            allowed = min(limit, sent + PROGRESS_EVERY)
        if config.batch_api:  # one future for the step: its ack latency is not sampled
            step = range(sent, allowed)
            step_keys = None if keys[0] is None else [keys[i % key_count] for i in step]
            keep(producer.send_many(topic, [make_value() for _ in step], step_keys))
        else:
            for i in range(sent, allowed):
                future = send(topic, make_value(), keys[i % key_count])
                keep(future)
                if i % sample_every == 0:
                    future.add_done_callback(
                        partial(_record_latency, samples, time.perf_counter_ns())
                    )
        sent = allowed
        counter.value = sent
        if deadline is not None and time.monotonic() >= deadline:
            break
    report.messages = sent
    report.payload_bytes = sent * config.message_bytes
    return futures


def _send_sequential(
    producer: Any, spec: WorkerSpec, counter: Synchronized[int], report: WorkerReport
) -> list[Any]:
    """One record at a time: send, wait for its ack, next (request/ack latency, W3)."""
    config = spec.config
    send, topic = producer.send, spec.topic
    keys = _keys(config)
    make_value = _value_maker(spec)
    samples = report.latencies_ns
    futures: list[Any] = []
    deadline = None if config.duration_s is None else time.monotonic() + config.duration_s
    limit = spec.count if spec.count is not None else 1 << 62
    sent = 0
    while sent < limit and (deadline is None or time.monotonic() < deadline):
        started_ns = time.perf_counter_ns()
        future = send(topic, make_value(), keys[sent % len(keys)])
        with contextlib.suppress(Exception):
            future.result(60)  # an error is counted below
        samples.append(time.perf_counter_ns() - started_ns)
        futures.append(future)
        sent += 1
        if sent % 64 == 0:
            counter.value = sent
    report.messages = sent
    report.payload_bytes = sent * config.message_bytes
    return futures


def _count_errors(futures: list[Any], report: WorkerReport) -> None:
    for future in futures:
        error = future.exception(0) if future.done() else TimeoutError("never acknowledged")
        if error is not None:
            failed = getattr(error, "result", None)  # a send_many's: count its records
            report.errors += 1 if failed is None else failed.failed_count
            if len(report.error_messages) < ERRORS_KEPT:
                report.error_messages.append(str(error))


# --- consumer -------------------------------------------------------------------------------


async def _run_consumer(
    spec: WorkerSpec,
    counter: Synchronized[int],
    go: Event,
    producers_done: Event,
    out: Queue[Any],
) -> WorkerReport:
    from conveyor.bench.fetch import PartitionReader, open_readers

    config = spec.config
    report = WorkerReport("consumer", spec.index)
    session, readers = await open_readers(
        spec.url,
        spec.topic,
        spec.partitions,
        from_end=spec.from_end,
        fetch_max_bytes=config.fetch_max_bytes,
        fetch_max_wait_ms=config.fetch_max_wait_ms,
    )
    try:
        out.put(("ready", spec.role, spec.index))
        loop = asyncio.get_running_loop()
        if not await loop.run_in_executor(None, go.wait, GO_TIMEOUT_S):
            raise TimeoutError("no go from the orchestrator")
        cpu_start = time.process_time()
        report.started_s = time.time()
        totals = [0, 0]  # messages, payload bytes: shared by the partition tasks

        async def read(reader: PartitionReader) -> None:
            await _read_partition(
                reader,
                spec,
                producers_done=producers_done,
                counter=counter,
                totals=totals,
                report=report,
            )

        await gather_all(*(read(reader) for reader in readers))
        report.finished_s = time.time()
        report.cpu_s = time.process_time() - cpu_start
        report.messages, report.payload_bytes = totals
        counter.value = report.messages
    finally:
        await session.close()
    return report


async def _read_partition(
    reader: Any,
    spec: WorkerSpec,
    *,
    producers_done: Event,
    counter: Synchronized[int],
    totals: list[int],
    report: WorkerReport,
) -> None:
    """Read until the end offset: known at the start (consume), or once the producers are
    done (e2e: everything is acknowledged by then, so the high watermark is final)."""
    end = None if spec.from_end else reader.end_offset
    latencies = report.latencies_ns
    while end is None or reader.offset < end:
        if end is None and producers_done.is_set():
            end = await reader.high_watermark()
            continue
        messages = await reader.fetch()
        if not messages:
            continue
        received_ns = time.time_ns()
        if spec.measure_e2e:
            from_bytes = int.from_bytes
            latencies.extend(
                received_ns - from_bytes(m.value[:TIMESTAMP_BYTES], "big")
                for m in messages
                if m.value is not None
            )
        totals[0] += len(messages)
        totals[1] += len(messages) * spec.config.message_bytes  # every value has that size
        counter.value = totals[0]
