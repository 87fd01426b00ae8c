"""``conveyor bench queue``: share groups (queues) measured against partition-based groups,
in one run on one cluster (docs/benchmarks.md#queues).

1. **Scaling past partitions**: a topic of ``partitions`` partitions holds records over
   ``keys`` keys; each record needs ``work_ms`` of simulated work. For each consumer count,
   each kind of group reads it for ``duration_s`` (after a warm-up): a share group in
   ``unordered`` and in ``key_ordered`` mode, and a partition-based consumer group (at most
   one member per partition does work). Throughput = records processed / time.
2. **Plain throughput** (no work): ``plain_consumers`` processes read ``plain_count``
   records through a share group, against W2 (the ``bench consume`` workload: the same
   number of processes over ``plain_partitions`` partitions, manual assignment) in the
   same run; RabbitMQ's quorum queue through ``bench/peers/peers.py`` when asked.
3. **Redelivery latency**: after a release, and after a lock expiry (p50, p99).
"""

from __future__ import annotations

import contextlib
import json
import multiprocessing
import subprocess
import sys
import threading
import time
import uuid
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Final

from conveyor.bench.local import LocalCluster
from conveyor.bench.machine import describe_machine
from conveyor.bench.queue_members import Tally, plain_member, redelivery_probe, scaling_member
from conveyor.bench.workload import ClientBenchConfig, percentile

KINDS: Final = ("unordered", "key_ordered", "group")
PEERS_SCRIPT: Final = Path("bench/peers/peers.py")


@dataclass(frozen=True, slots=True)
class QueueBenchConfig:
    partitions: int = 4
    keys: int = 1_000
    work_ms: float = 5.0
    consumers: tuple[int, ...] = (1, 2, 4, 8, 16, 32)
    kinds: tuple[str, ...] = KINDS
    duration_s: float = 5.0
    warmup_s: float = 1.5
    batch: int = 10  # records a scaling member asks for at a time
    plain_count: int = 200_000
    plain_partitions: int = 16
    plain_consumers: int = 4
    message_bytes: int = 100
    redelivery_rounds: int = 10
    redelivery_per_round: int = 20
    peers: tuple[str, ...] = ()  # e.g. ("rabbitmq-quorum",)

    def __post_init__(self) -> None:
        if not self.consumers or min(self.consumers) < 1:
            raise ValueError("consumers must be positive counts")
        if set(self.kinds) - set(KINDS):
            raise ValueError(f"kinds are {KINDS}")
        if self.duration_s <= 0 or self.work_ms < 0 or self.keys < 1 or self.batch < 1:
            raise ValueError("duration_s > 0, work_ms >= 0, keys >= 1 and batch >= 1")


@dataclass
class QueueBenchResult:
    config: QueueBenchConfig
    scaling: dict[str, dict[int, float]] = field(default_factory=dict)  # kind -> n -> msg/s
    plain: dict[str, float] = field(default_factory=dict)  # row -> msg/s
    plain_cpu_s: dict[str, float] = field(default_factory=dict)
    redelivery_ms: dict[str, dict[str, float]] = field(default_factory=dict)
    errors: list[str] = field(default_factory=list)
    machine: dict[str, Any] = field(default_factory=dict)
    load_average: tuple[float, float, float] = (0.0, 0.0, 0.0)

    def ratios(self) -> dict[str, float]:
        """The targets' ratios (docs/benchmarks.md#queues)."""
        out: dict[str, float] = {}
        top = max(self.config.consumers)
        group = self.scaling.get("group", {}).get(top)
        for kind in ("key_ordered", "unordered"):
            rate = self.scaling.get(kind, {}).get(top)
            if rate is not None and group:
                out[f"scaling {kind} / group at {top}"] = rate / group
        share = self.plain.get("share unordered")
        if share is not None and self.plain.get("W2 partition-based"):
            out["plain share / W2"] = share / self.plain["W2 partition-based"]
        rabbit = self.plain.get("rabbitmq-quorum")
        if share is not None and rabbit:
            out["plain share / rabbitmq-quorum"] = share / rabbit
        return out

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out["ratios"] = self.ratios()
        return out


def run_queue_bench(
    config: QueueBenchConfig,
    *,
    bootstrap: str | None = None,
    local_brokers: int | None = None,
    progress: Any = None,
) -> QueueBenchResult:
    say = progress or (lambda text: None)
    result = QueueBenchResult(config, machine=describe_machine(Path.cwd()).to_dict())
    with contextlib.ExitStack() as stack:
        if local_brokers is not None:
            url = stack.enter_context(LocalCluster(local_brokers)).url
        else:
            assert bootstrap is not None
            url = bootstrap
        run_id = uuid.uuid4().hex[:6]
        _scaling(config, url, run_id, result, say)
        _plain(config, url, run_id, result, say)
        _redelivery(config, url, run_id, result, say)
    _peers(config, result, say)
    with contextlib.suppress(OSError):
        load = Path("/proc/loadavg").read_text().split()[:3]
        result.load_average = (float(load[0]), float(load[1]), float(load[2]))
    return result


def _fill(url: str, topic: str, *, partitions: int, count: int, keys: int, size: int) -> None:
    import conveyor

    with conveyor.Admin(url) as admin:
        admin.create_topic(topic, partitions=partitions)
    value = b"x" * size
    with conveyor.Producer(url, linger_ms=5) as producer:
        for i in range(count):
            producer.send(topic, value, key=f"key-{i % keys}")
        producer.flush()


def _scaling(
    config: QueueBenchConfig, url: str, run_id: str, result: QueueBenchResult, say: Any
) -> None:
    topic = f"bench-queue-{run_id}"
    per_member = 1000 / config.work_ms if config.work_ms else 10_000
    needed = int(per_member * max(config.consumers) * (config.duration_s + config.warmup_s) * 1.5)
    say(f"filling {topic}: {needed:,} records over {config.keys:,} keys")
    _fill(
        url, topic, partitions=config.partitions, count=needed, keys=config.keys,
        size=config.message_bytes,
    )  # fmt: skip
    for count in config.consumers:
        for kind in config.kinds:
            group = f"scale-{kind}-{count}-{run_id}"
            rate = _scaling_run(config, url, topic, group, kind=kind, count=count, result=result)
            result.scaling.setdefault(kind, {})[count] = rate
            say(f"{kind:>12} x {count:>2}: {rate:,.0f} msg/s")


def _scaling_run(
    config: QueueBenchConfig, url: str, topic: str, group: str, *, kind: str, count: int,
    result: QueueBenchResult,
) -> float:  # fmt: skip
    tally = Tally()
    stop = threading.Event()
    joined = threading.Barrier(count + 1)
    threads = [
        threading.Thread(
            target=scaling_member,
            args=(kind, url, topic, group),
            kwargs={
                "work_s": config.work_ms / 1000,
                "batch": config.batch,
                "tally": tally,
                "stop": stop,
                "joined": joined,
            },
            daemon=True,
        )
        for _ in range(count)
    ]
    for thread in threads:
        thread.start()
    rate = 0.0
    try:
        joined.wait(120)
        time.sleep(config.warmup_s)
        before, started = tally.processed, time.monotonic()
        time.sleep(config.duration_s)
        rate = (tally.processed - before) / (time.monotonic() - started)
    except threading.BrokenBarrierError:
        pass
    finally:
        stop.set()
        for thread in threads:
            thread.join(60)
    result.errors += tally.errors
    return rate


def _plain(
    config: QueueBenchConfig, url: str, run_id: str, result: QueueBenchResult, say: Any
) -> None:
    from conveyor.bench.client import run_client_bench

    say(f"W2: {config.plain_count:,} records, {config.plain_consumers} consumer processes")
    w2 = run_client_bench(
        ClientBenchConfig(
            mode="consume",
            count=config.plain_count,
            partitions=config.plain_partitions,
            consumers=config.plain_consumers,
            message_bytes=config.message_bytes,
        ),
        bootstrap=url,
    )
    if w2.consume is not None and w2.consume.seconds > 0:
        result.plain["W2 partition-based"] = w2.consume.messages / w2.consume.seconds
        result.plain_cpu_s["W2 partition-based"] = w2.consume.cpu_s
    topic = f"bench-queue-plain-{run_id}"
    _fill(
        url, topic, partitions=config.plain_partitions, count=config.plain_count, keys=8,
        size=config.message_bytes,
    )  # fmt: skip
    for mode in ("unordered", "key_ordered"):
        rate, cpu, errors = _plain_run(config, url, topic, f"plain-{mode}-{run_id}", mode)
        result.plain[f"share {mode}"] = rate
        result.plain_cpu_s[f"share {mode}"] = cpu
        result.errors += errors
        say(f"share {mode}: {rate:,.0f} msg/s")


def _plain_run(
    config: QueueBenchConfig, url: str, topic: str, group: str, mode: str
) -> tuple[float, float, list[str]]:
    context = multiprocessing.get_context("spawn")
    counter = context.Value("q", 0)
    go = context.Event()
    out = context.Queue()
    processes = [
        context.Process(
            target=plain_member,
            args=(url, topic, group, mode),
            kwargs={"total": config.plain_count, "counter": counter, "go": go, "out": out},
            daemon=True,
        )
        for _ in range(config.plain_consumers)
    ]
    for process in processes:
        process.start()
    try:
        for _ in processes:
            out.get(timeout=300)  # ready
        go.set()
        reports = [out.get(timeout=600)[1] for _ in processes]
    finally:
        for process in processes:
            process.join(60)
            if process.is_alive():
                process.kill()
    errors = [r[4] for r in reports if r[4]]
    started = min(r[0] for r in reports if r[0]) if any(r[0] for r in reports) else 0.0
    finished = max(r[1] for r in reports)
    done = sum(r[3] for r in reports)
    rate = done / (finished - started) if finished > started else 0.0
    return rate, sum(r[2] for r in reports), errors


def _redelivery(
    config: QueueBenchConfig, url: str, run_id: str, result: QueueBenchResult, say: Any
) -> None:
    import conveyor

    topic = f"bench-queue-redeliver-{run_id}"
    with conveyor.Admin(url) as admin:
        admin.create_topic(topic, partitions=1)
    probe = redelivery_probe(
        url, topic, f"redeliver-{run_id}", config.redelivery_rounds, config.redelivery_per_round
    )
    for name, samples in (("release", probe.after_release_ms), ("expiry", probe.after_expiry_ms)):
        if samples:
            ordered = sorted(round(s * 1000) for s in samples)  # microseconds, as integers
            result.redelivery_ms[name] = {
                "count": len(samples),
                "p50": percentile(ordered, 0.5) / 1000,
                "p99": percentile(ordered, 0.99) / 1000,
            }
    say(f"redelivery: {result.redelivery_ms}")


def _peers(config: QueueBenchConfig, result: QueueBenchResult, say: Any) -> None:
    """RabbitMQ (and any peer) W2 in the same run, through bench/peers/peers.py."""
    if not config.peers:
        return
    if not PEERS_SCRIPT.exists():
        result.errors.append(f"{PEERS_SCRIPT} not found (run from the repository's root)")
        return
    for system in config.peers:
        say(f"{system}: W1 + W2 with {config.plain_count:,} messages")
        run = subprocess.run(
            [sys.executable, str(PEERS_SCRIPT), "--systems", system, "--runs", "1",
             "--count", str(config.plain_count), "--workloads", "w1,w2"],
            capture_output=True, text=True, timeout=1800, check=False,
        )  # fmt: skip
        lines = [line for line in run.stdout.splitlines() if line.startswith("{")]
        if run.returncode != 0 or not lines:
            result.errors.append(f"{system}: {run.stderr[-500:]}")
            continue
        result.plain[system] = float(json.loads(lines[-1])["w2_consume_msg_per_s"])
