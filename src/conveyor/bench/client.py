"""``conveyor bench produce|consume|e2e``: run producer and consumer processes against a
cluster and summarize what they measured.

- **produce**: ``producers`` processes send ``count`` messages (or for ``duration_s``,
  optionally at ``rate``) and flush; rate = all acknowledged messages over first start to
  last acknowledgement; produce-ack latency from one send in ``sample_every``.
- **consume**: the topic is filled first (untimed, by the same producers), then
  ``consumers`` processes read it to its end, each a slice of the partitions.
- **e2e**: consumers wait at the end of the log while producers send at ``rate`` for
  ``duration_s``; every value carries its send time, so each message's end-to-end latency
  (send to receipt by a consumer) is known.

The cluster is the one at ``bootstrap``, or a fresh local one (``bench/local.py``). Each
run uses a new topic, so runs do not see each other's data.
"""

from __future__ import annotations

import asyncio
import multiprocessing
import queue
import signal
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final

from conveyor.bench.fetch import wait_until_served
from conveyor.bench.local import LocalCluster
from conveyor.bench.machine import describe_machine
from conveyor.bench.workers import WorkerSpec, worker_main
from conveyor.bench.workload import (
    ClientBenchConfig,
    ClientBenchResult,
    WorkerReport,
    assign_partitions,
    combine,
    split_evenly,
    summarize_latencies,
)

POLL_S: Final = 0.2
READY_TIMEOUT_S: Final = 120.0
STOP_GRACE_S: Final = 30.0

Progress = Callable[[str, int, int | None], None]
"""``progress(phase, done, total)``: called several times a second while a phase runs."""


class BenchError(RuntimeError):
    """A worker failed or a phase did not finish; the message says which and why."""


@dataclass
class _Phase:
    """Worker processes started together and released by one ``go``."""

    name: str
    context: Any
    results: Any
    producers_done: Any
    specs: list[WorkerSpec]
    processes: list[Any] = field(default_factory=list)
    counters: list[Any] = field(default_factory=list)

    def start(self) -> None:
        self.go = self.context.Event()
        for spec in self.specs:
            counter = self.context.Value("q", 0, lock=False)
            process = self.context.Process(
                target=worker_main,
                args=(spec, counter, self.go, self.producers_done, self.results),
                name=f"bench-{spec.role}-{spec.index}",
                daemon=True,
            )
            process.start()
            self.processes.append(process)
            self.counters.append(counter)

    def done_count(self) -> int:
        return sum(int(counter.value) for counter in self.counters)

    def stop(self) -> None:
        """Let workers exit on their own first: one terminated while its queue feeder holds
        the queue's write lock would leave the lock taken for every later worker."""
        deadline = time.monotonic() + STOP_GRACE_S
        for process in self.processes:
            process.join(max(0.0, deadline - time.monotonic()))
        for process in self.processes:
            if process.is_alive():
                process.terminate()
                process.join(10)


def run_client_bench(
    config: ClientBenchConfig,
    *,
    bootstrap: str | None = None,
    local_brokers: int | None = None,
    local_dir: Path | None = None,
    pin_brokers: bool = False,
    progress: Progress | None = None,
) -> ClientBenchResult:
    """Run one benchmark; exactly one of ``bootstrap`` and ``local_brokers``."""
    if (bootstrap is None) == (local_brokers is None):
        raise ValueError("give either bootstrap or local_brokers")
    if threading.current_thread() is threading.main_thread():
        # SIGTERM (timeout, kill) unwinds like Ctrl-C, so a local cluster is stopped
        signal.signal(signal.SIGTERM, _exit_on_sigterm)
    if local_brokers is not None:
        with LocalCluster(local_brokers, parent_dir=local_dir, pin_brokers=pin_brokers) as cluster:
            return _run(config, cluster.url, cluster, progress)
    assert bootstrap is not None
    return _run(config, bootstrap, None, progress)


def _exit_on_sigterm(signum: int, frame: object) -> None:
    raise SystemExit(128 + signum)


def _run(
    config: ClientBenchConfig,
    url: str,
    cluster: LocalCluster | None,
    progress: Progress | None,
) -> ClientBenchResult:
    topic = config.topic or f"bench-{config.mode}-{uuid.uuid4().hex[:8]}"
    _create_topic(url, topic, config)
    kafka = kafka_bootstrap(url) if config.client != "conveyor" else ""
    if kafka:
        _wait_for_kafka_leaders(kafka, topic, config.partitions)
    context = multiprocessing.get_context("spawn")
    producers_done = context.Event()
    cpu_before = cluster.broker_cpu_s() if cluster is not None else None
    reports: list[WorkerReport] = []
    if config.mode == "produce":
        results = context.Queue()
        reports += _run_phases(
            [_phase("produce", context, results, producers_done, url, topic, config, kafka)],
            results,
            progress,
        )
    elif config.mode == "consume":
        results = context.Queue()
        fill = _phase("fill", context, results, producers_done, url, topic, config, kafka)
        reports += _run_phases([fill], results, progress)
        if cluster is not None:
            cpu_before = cluster.broker_cpu_s()  # the consume phase's own cost
        results = context.Queue()  # a new one: see _Phase.stop
        consumers = _phase("consume", context, results, producers_done, url, topic, config, kafka)
        reports += _run_phases([consumers], results, progress)
    else:
        results = context.Queue()
        consumers = _phase("consume", context, results, producers_done, url, topic, config, kafka)
        producers = _phase("produce", context, results, producers_done, url, topic, config, kafka)
        reports += _run_phases([consumers, producers], results, progress, producers_done)
    producer_reports = [r for r in reports if r.role == "producer"]
    consumer_reports = [r for r in reports if r.role == "consumer"]
    errors = tuple(m for r in reports for m in r.error_messages)
    return ClientBenchResult(
        config=config,
        bootstrap=url,
        brokers=None if cluster is None else cluster.brokers,
        produce=combine(producer_reports),
        consume=combine(consumer_reports),
        produce_latency=summarize_latencies(
            [ns for r in producer_reports for ns in r.latencies_ns]
        ),
        e2e_latency=summarize_latencies([ns for r in consumer_reports for ns in r.latencies_ns]),
        broker_cpu_s=None
        if cluster is None or cpu_before is None
        else round(cluster.broker_cpu_s() - cpu_before, 3),
        broker_rss_bytes_max=None if cluster is None else cluster.broker_rss_peak_bytes(),
        error_messages=errors,
        machine=describe_machine(Path.cwd()).to_dict(),
    )


def kafka_bootstrap(url: str) -> str:
    """The live brokers' Kafka listeners, from the coordinator (what Kafka clients need)."""
    from conveyor.client import Admin

    with Admin(url) as admin:
        brokers = admin.cluster().brokers
    addresses = [b.kafka_address for b in brokers if b.alive and b.kafka_address]
    if not addresses:
        raise BenchError("no broker has a Kafka listener (start them with --kafka-listen)")
    return ",".join(addresses)


def _create_topic(url: str, topic: str, config: ClientBenchConfig) -> None:
    from conveyor.client import Admin

    admin = Admin(url)
    try:
        names = {t.name for t in admin.list_topics()}
        if topic not in names:
            admin.create_topic(topic, config.partitions, config.replication_factor)
    finally:
        admin.close()
    # Timing starts with every leader serving: a new partition's first produce would
    # otherwise be refused and retried after a backoff (~0.7 s measured), a cost of topic
    # creation, not of producing.
    asyncio.run(wait_until_served(url, topic, range(config.partitions)))


def _wait_for_kafka_leaders(bootstrap: str, topic: str, partitions: int) -> None:
    """Until the brokers' Kafka Metadata names a leader for every partition: it can lag
    their HTTP routes by seconds after a topic is created on several brokers, and
    librdkafka's watermark query keeps a leaderless first answer (docs/benchmarks.md)."""
    from conveyor.client import Admin

    deadline = time.monotonic() + 30
    with Admin(bootstrap_servers=bootstrap) as admin:
        while True:
            described = admin.describe_topic(topic).partitions
            if len(described) == partitions and all(
                p.leader is not None and p.leader >= 0 for p in described
            ):
                return
            if time.monotonic() > deadline:
                raise BenchError(f"{topic}: no Kafka leader for every partition in 30 s")
            time.sleep(0.05)


def _phase(  # noqa: PLR0917 -- the phase's name and the run's shared parts, in order
    name: str,
    context: Any,
    results: Any,
    producers_done: Any,
    url: str,
    topic: str,
    config: ClientBenchConfig,
    kafka: str = "",
) -> _Phase:
    specs: list[WorkerSpec]
    if name in ("produce", "fill"):
        count = config.planned_count()
        counts = split_evenly(count, config.producers) if count is not None else None
        rate = None if config.rate is None else config.rate / config.producers
        specs = [
            WorkerSpec(
                "producer",
                index,
                url,
                topic,
                config,
                count=None if counts is None else counts[index],
                rate=rate,
                kafka_bootstrap=kafka,
            )
            for index in range(config.producers)
        ]
    else:
        assignment = assign_partitions(config.partitions, config.consumers)
        specs = [
            WorkerSpec(
                "consumer",
                index,
                url,
                topic,
                config,
                partitions=tuple(partitions),
                from_end=config.mode == "e2e",
                measure_e2e=config.mode == "e2e",
                kafka_bootstrap=kafka,
            )
            for index, partitions in enumerate(assignment)
            if partitions
        ]
    return _Phase(name, context, results, producers_done, specs)


def _run_phases(
    phases: list[_Phase],
    results: Any,
    progress: Progress | None,
    producers_done: Any = None,
) -> list[WorkerReport]:
    """Start every worker of ``phases``, wait until all are ready, release them together,
    and collect one report from each (reporting progress meanwhile)."""
    for phase in phases:
        phase.start()
    try:
        workers = sum(len(phase.specs) for phase in phases)
        _wait_ready(phases, results, workers)
        for phase in phases:
            phase.go.set()
        return _collect(phases, results, workers, progress, producers_done)
    finally:
        for phase in phases:
            phase.stop()


def _wait_ready(phases: list[_Phase], results: Any, workers: int) -> None:
    deadline = time.monotonic() + READY_TIMEOUT_S
    ready = 0
    while ready < workers:
        message = _next_message(phases, results, deadline, "ready")
        if message[0] == "ready":
            ready += 1


def _collect(
    phases: list[_Phase],
    results: Any,
    workers: int,
    progress: Progress | None,
    producers_done: Any,
) -> list[WorkerReport]:
    reports: list[WorkerReport] = []
    producers = sum(1 for phase in phases for spec in phase.specs if spec.role == "producer")
    while len(reports) < workers:
        message = _next_message(phases, results, None, "reports")
        if message[0] == "report":
            reports.append(message[1])
            finished = sum(1 for r in reports if r.role == "producer")
            if producers_done is not None and finished == producers:
                producers_done.set()
        if progress is not None:
            for phase in phases:
                progress(phase.name, phase.done_count(), _planned(phase))
    return reports


def _planned(phase: _Phase) -> int | None:
    config = phase.specs[0].config if phase.specs else None
    if config is None:
        return None
    if phase.name == "consume" and config.mode == "consume":
        return config.count
    return config.planned_count()


def _next_message(
    phases: list[_Phase], results: Any, deadline: float | None, waiting_for: str
) -> tuple[Any, ...]:
    """The next queue message; raises when a worker failed or died, or at ``deadline``."""
    while True:
        try:
            message: tuple[Any, ...] = results.get(timeout=POLL_S)
        except queue.Empty:
            dead = [p.name for ph in phases for p in ph.processes if p.exitcode not in (None, 0)]
            if dead:
                raise BenchError(
                    f"worker(s) exited while waiting for {waiting_for}: {dead}"
                ) from None
            if deadline is not None and time.monotonic() > deadline:
                raise BenchError(f"timed out waiting for {waiting_for}") from None
            return ("tick",)
        if message[0] == "failed":
            _, role, index, reason = message
            raise BenchError(f"{role} {index} failed: {reason}")
        return message
