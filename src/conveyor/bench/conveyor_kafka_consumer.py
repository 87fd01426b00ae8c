"""The benchmark's consumer with Conveyor's own ``Consumer`` over the brokers' Kafka
listeners (``--client conveyor-kafka``): the same role, phases and report as the other
workers (``workers.py``), reading its manually assigned partitions with ``poll`` (one
``Message`` per record, as an application receives them) or, with ``--batch-api``,
``poll_batch`` (columns).

It reads from the log start to the high watermark seen at the start (consume), or from
the end until the producers are done (e2e, reading each value's timestamp).
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any, Final

from conveyor.bench.workers import GO_TIMEOUT_S, WorkerSpec
from conveyor.bench.workload import TIMESTAMP_BYTES, WorkerReport

if TYPE_CHECKING:
    from multiprocessing.queues import Queue
    from multiprocessing.sharedctypes import Synchronized
    from multiprocessing.synchronize import Event

    from conveyor.client import Consumer

_POLL_S: Final = 0.1
_MAX_RECORDS: Final = 10_000


def run_conveyor_kafka_consumer(
    spec: WorkerSpec,
    counter: Synchronized[int],
    go: Event,
    producers_done: Event,
    out: Queue[Any],
) -> WorkerReport:
    from conveyor.client import Consumer

    config = spec.config
    consumer = Consumer(
        bootstrap_servers=spec.kafka_bootstrap,
        max_poll_records=_MAX_RECORDS,
        fetch_max_bytes=config.fetch_max_bytes,
        fetch_max_wait_ms=config.fetch_max_wait_ms,
        enable_auto_commit=False,
    )
    report = WorkerReport("consumer", spec.index)
    try:
        partitions = [(spec.topic, p) for p in spec.partitions]
        ends = {tp[1]: offset for tp, offset in consumer.end_offsets(partitions).items()}
        consumer.assign(partitions)
        if spec.from_end:
            consumer.seek_to_end()
        else:
            consumer.seek_to_beginning()
        out.put(("ready", spec.role, spec.index))
        if not go.wait(GO_TIMEOUT_S):
            raise TimeoutError("no go from the orchestrator")
        cpu_start = time.process_time()
        report.started_s = time.time()
        _read(consumer, spec, ends, producers_done, counter, report)
        report.finished_s = time.time()
        report.cpu_s = time.process_time() - cpu_start
        counter.value = report.messages
    finally:
        consumer.close()
    return report


def _read(  # noqa: PLR0917 -- the worker's parts, in order
    consumer: Consumer,
    spec: WorkerSpec,
    ends: dict[int, int],
    producers_done: Event,
    counter: Synchronized[int],
    report: WorkerReport,
) -> None:
    positions = dict.fromkeys(spec.partitions, 0)
    final = not spec.from_end
    latencies = report.latencies_ns
    from_bytes = int.from_bytes
    while not final or any(positions[p] < ends[p] for p in positions):
        if not final and producers_done.is_set():  # every send acknowledged: ends are final
            tps = [(spec.topic, p) for p in spec.partitions]
            ends = {tp[1]: offset for tp, offset in consumer.end_offsets(tps).items()}
            final = True
        if spec.config.batch_api:
            batch = consumer.poll_batch(timeout=_POLL_S)
            for run in batch.runs:
                positions[run.partition] = batch.offsets[run.stop - 1] + 1
            values: list[Any] = batch.values
        else:
            messages = consumer.poll(timeout=_POLL_S)
            for m in messages:
                positions[m.partition] = m.offset + 1
            values = [m.value for m in messages]
        if not values:
            continue
        if spec.measure_e2e:
            now_ns = time.time_ns()
            latencies.extend(
                now_ns - from_bytes(v[:TIMESTAMP_BYTES], "big") for v in values if v is not None
            )
        report.messages += len(values)
        counter.value = report.messages
    report.payload_bytes = report.messages * spec.config.message_bytes
