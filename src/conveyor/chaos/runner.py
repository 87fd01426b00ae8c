"""One chaos run: start a cluster, run the workload under the nemesis, heal everything,
read every partition, check, and render the result.

Cleanup is unconditional: the nft table is deleted and the tmpfs unmounted in ``finally``
(and the table again ``atexit``), and every process is stopped.
"""

from __future__ import annotations

import io
import json
import logging
import os
import tempfile
import threading
import time
from collections.abc import Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Final, Protocol

import conveyor
from conveyor.chaos import checker, diskfault, ha, netfault, queue_checker, queue_workload
from conveyor.chaos.cluster import ChaosCluster
from conveyor.chaos.history import History, Op
from conveyor.chaos.nemesis import CrashesConsumers, Nemesis, mount_tmpfs, unmount
from conveyor.chaos.schedule import HA_FAULTS, FaultEvent, make_schedule
from conveyor.chaos.workload import (
    COMPACT_CONFIG,
    COMPACT_PARTITIONS,
    COMPACT_TOPIC,
    TOPIC,
    Workload,
    final_read,
    topic_dirs,
)
from conveyor.cli.etcd_local import etcd_available

if TYPE_CHECKING:
    from rich.console import Console

log = logging.getLogger(__name__)

PARTITIONS: Final = 4
DRAIN_S: Final = 8.0
FINAL_READ_TIMEOUT_S: Final = 60.0
# Members are processes that import the client and join a group: seconds on a loaded
# machine. A minute without faults is a workload that does not work.
WARM_UP_TIMEOUT_S: Final = 60.0


class NotRunningError(RuntimeError):
    """The workload did not get going before the faults were due to start."""


@dataclass
class RunReport:
    seed: int
    duration_s: float
    faults: tuple[str, ...]
    schedule: list[FaultEvent]
    result: checker.Result
    ops: list[Op]
    skipped: dict[str, str] = field(default_factory=dict)  # fault -> why it cannot run here
    root: Path | None = None


def skipped_faults(faults: tuple[str, ...], ha: bool = False) -> dict[str, str]:
    """Faults this machine (or this cluster shape) cannot inject, with the reason."""
    out: dict[str, str] = {}
    reason = netfault.unavailable_reason()
    etcd_missing = etcd_available()
    for fault in faults:
        if fault in HA_FAULTS and not ha:
            out[fault] = "needs several coordinators on etcd (--ha)"
            continue
        if fault in HA_FAULTS and etcd_missing:
            out[fault] = etcd_missing
            continue
        if fault.startswith("partition") and reason:
            out[fault] = reason
        if fault == "disk-full" and os.geteuid() != 0:
            out[fault] = "mounting a tmpfs needs root"
    return out


def plan(
    seed: int, duration_s: float, faults: tuple[str, ...], *, ha: bool, brokers: int,
    partitions: int, consumers: int,
) -> tuple[list[FaultEvent], tuple[str, ...], dict[str, str]]:  # fmt: skip
    """The fault schedule of a run, the faults it may use and those it skips (with why)."""
    skipped = skipped_faults(faults, ha)
    usable = tuple(f for f in faults if f not in skipped)
    schedule = make_schedule(
        seed, duration_s, usable, brokers=brokers, partitions=partitions, consumers=consumers
    )
    return schedule, usable, skipped


class Driven(CrashesConsumers, Protocol):
    """What a run needs of a workload (the stream, queue and transactional ones)."""

    history: History

    def start(self) -> None: ...

    def warm_up(self) -> dict[str, str]:
        """What must have happened before the faults start: member -> an op ``f`` that
        one of its incarnations has had answer ok."""
        ...

    def stop(self, drain_s: float) -> None: ...

    def abort(self) -> None: ...


@dataclass
class Stage:
    """A started cluster under a fault schedule, and what its cleanup collected."""

    cluster: ChaosCluster
    history: History
    schedule: list[FaultEvent]  # without disk-full when its tmpfs could not be mounted
    skipped: dict[str, str]
    workload: Driven | None = None  # aborted on the way out
    replicas: list[checker.Replica] = field(default_factory=list)  # read once it stopped


HARNESS_LOGGERS: Final = ("conveyor.client", "conveyor.chaos")


@contextmanager
def harness_log(path: Path) -> Iterator[None]:
    """The harness's own clients (the dead-letter reader, the final reads, the nemesis's
    admin) log at INFO to ``path``: what a stuck reader did stays with the run (issue 15:
    its fetches after a leader change were not recorded anywhere). Their warnings still
    reach stderr as before (Python's last-resort handler, which a handler would mute)."""
    handler = logging.FileHandler(path)
    handler.setLevel(logging.INFO)
    handler.setFormatter(logging.Formatter("%(asctime)s %(threadName)s %(name)s %(message)s"))
    loud = None
    if not logging.getLogger().handlers:
        loud = logging.StreamHandler()
        loud.setLevel(logging.WARNING)
    loggers = [logging.getLogger(name) for name in HARNESS_LOGGERS]
    levels = [logger.level for logger in loggers]
    for logger in loggers:
        logger.setLevel(logging.INFO)
        logger.addHandler(handler)
        if loud is not None:
            logger.addHandler(loud)
    try:
        yield
    finally:
        for logger, level in zip(loggers, levels, strict=True):
            logger.setLevel(level)
            logger.removeHandler(handler)
            if loud is not None:
                logger.removeHandler(loud)
        handler.close()


@contextmanager
def staged(
    root: Path, brokers: int, *, ha: bool, schedule: list[FaultEvent], usable: tuple[str, ...],
    skipped: dict[str, str], topic: str = TOPIC,
) -> Iterator[Stage]:  # fmt: skip
    """Start the cluster with what the schedule needs (the tmpfs, the nft table); on the
    way out, whatever happened: abort the workload, heal and remove every fault, stop every
    process, dump the history and read ``topic``'s replicas from the brokers' files."""
    cluster = ChaosCluster(root, brokers, ha=ha)
    stage = Stage(cluster, History(), schedule, skipped)
    tmpfs = root / "broker-1"
    root.mkdir(parents=True, exist_ok=True)
    with harness_log(root / "harness.log"):
        try:
            if "disk-full" in usable and not mount_tmpfs(tmpfs):
                skipped["disk-full"] = "mount -t tmpfs failed"
                stage.schedule = [e for e in schedule if e.kind != "disk-full"]
            if any(e.kind.startswith("partition") for e in stage.schedule):
                netfault.remove_on_signals()
                netfault.install(cluster.parties_for(brokers))  # before any connection: all marked
            cluster.start()
            yield stage
        finally:
            if stage.workload is not None:
                stage.workload.abort()  # a no-op after a normal stop
            netfault.heal()
            cluster.stop()
            netfault.remove()
            stage.history.dump(root / "history.jsonl")
            stage.replicas = read_replicas(cluster, topic)
            unmount(tmpfs)


def run(
    duration_s: float, seed: int, faults: tuple[str, ...], *, brokers: int = 3,
    root: Path | None = None, producers: int = 3, consumers: int = 2,
    replication_factor: int | None = None, ha: bool = False, workload_name: str = "stream",
) -> RunReport:  # fmt: skip
    """One run; ``replication_factor`` defaults to ``min(3, brokers)``. ``ha``: three
    coordinators on a 3-member etcd (the HA faults need it), and the "two active
    coordinators" check over their logs. ``workload_name``: ``stream`` (a consumer group)
    or ``queue`` (share groups, :mod:`conveyor.chaos.queue_workload`)."""
    queue = workload_name == "queue"
    schedule, usable, skipped = plan(
        seed, duration_s, faults, ha=ha, brokers=brokers, partitions=PARTITIONS,
        consumers=consumers,
    )  # fmt: skip
    root = root or Path(tempfile.mkdtemp(prefix=f"conveyor-chaos-{seed}-"))
    replication_factor = replication_factor or min(3, brokers)
    with staged(root, brokers, ha=ha, schedule=schedule, usable=usable, skipped=skipped) as stage:
        url = stage.cluster.url
        with conveyor.Admin(url) as admin:
            admin.create_topic(TOPIC, partitions=PARTITIONS, replication_factor=replication_factor)
            admin.create_topic(
                COMPACT_TOPIC, partitions=COMPACT_PARTITIONS,
                replication_factor=replication_factor, config=COMPACT_CONFIG,
            )  # fmt: skip
        if queue:
            queue_workload.prepare(url, replication_factor)
        kind = queue_workload.QueueWorkload if queue else Workload
        stage.workload = workload = kind(url, stage.history, root, producers, consumers)
        drive(stage, workload, seed, duration_s, drain_s=DRAIN_S)
        final = final_read(url, PARTITIONS, FINAL_READ_TIMEOUT_S)
        compacted = final_read(url, COMPACT_PARTITIONS, FINAL_READ_TIMEOUT_S, COMPACT_TOPIC)
        ops = stage.history.ops()
    check = queue_checker.check if queue else checker.check
    result = check(ops, final, stage.replicas, coordinator_problems(stage.cluster), compacted)
    report = RunReport(seed, duration_s, faults, stage.schedule, result, ops, skipped, root)
    (root / "final.json").write_text(json.dumps({str(p): r for p, r in final.items()}))
    return report


def coordinator_problems(cluster: ChaosCluster) -> list[str]:
    """The "two active coordinators" findings over every coordinator's log (--ha)."""
    if not cluster.ha:
        return []
    events = []
    for coordinator in cluster.coordinators:
        try:
            lines = coordinator.log_path.read_text(errors="replace").splitlines()
        except FileNotFoundError:
            continue
        events += ha.parse_log(coordinator.name, lines)
    return ha.two_actives(events)


def read_replicas(cluster: ChaosCluster, topic: str = TOPIC) -> list[checker.Replica]:
    """Every replica of ``topic``, from the stopped brokers' files."""
    replicas = []
    for broker_id, broker in sorted(cluster.brokers.items()):
        for directory in topic_dirs(broker.data_dir, topic):
            partition = int(directory.name.rpartition("-")[2])
            read = diskfault.read_replica(directory)
            replicas.append(checker.Replica(partition, broker_id, read.records, read.problems))
    return replicas


def drive(
    stage: Stage, workload: Driven, seed: int, duration_s: float, *, drain_s: float,
    topic: str = TOPIC,
) -> None:  # fmt: skip
    """Start ``workload``; once each member has done its first step (the schedule's
    times count from then: a fault must meet a running workload, not a process still
    starting), run it under the nemesis (``stage``'s schedule) for ``duration_s``, heal
    everything, wait until every process is up again, then stop the workload (``drain_s``
    to catch up)."""
    cluster = stage.cluster
    nemesis = Nemesis(cluster, workload, workload.history, seed, topic=topic)
    workload.start()
    needed = workload.warm_up()
    missing = workload.history.wait_for_each(needed, WARM_UP_TIMEOUT_S)
    if missing:
        steps = ", ".join(f"{m} (a {needed[m]})" for m in missing)
        raise NotRunningError(
            f"no fault injected: in {WARM_UP_TIMEOUT_S:.0f} s, no ok yet from {steps}"
        )
    workload.history.record("harness", "ok", "running", {"members": needed})
    start = time.monotonic()
    thread = threading.Thread(target=nemesis.run, args=(stage.schedule, start), name="nemesis")
    thread.start()
    try:
        remaining = duration_s - (time.monotonic() - start)
        thread.join(max(0.0, remaining) + 120)  # the last fault heals before duration_s
    finally:
        nemesis.stopped.set()
        thread.join(60)
        netfault.heal()
        cluster.wait_ready()  # every fault healed: all processes up before the final read
    workload.stop(drain_s)


def render(report: RunReport) -> str:
    """The summary table, the seed, and the minimal history around each anomaly."""
    from rich.table import Table

    result = report.result
    console = text_console()
    counts = Table(title=f"conveyor chaos  seed={report.seed}  duration={report.duration_s}s")
    counts.add_column("check")
    counts.add_column("count", justify="right")
    counts.add_column("kind")
    for name in result.safety:
        counts.add_row(name, str(result.counts[name]), "safety")
    for name in result.reported:
        counts.add_row(name, str(result.counts[name]), _kind(result, name))
    console.print(counts)
    print_faults(console, report.schedule, report.skipped)
    sends, during = result.sends, result.availability_during_faults
    console.print(
        f"sends ok={sends['ok']} fail={sends['fail']} info={sends['info']}  "
        f"polls={result.polls_ok} commits={result.commits_ok}  "
        f"availability={result.availability:.3f} during faults={_ratio(during)}"
    )
    if result.stall_ms:
        console.print(f"longest stall while active, ms: {_stalls(result)}")
    if result.recovery_ms:
        recovery = sorted(result.recovery_ms)
        console.print(
            f"recovery after heal ms: median={recovery[len(recovery) // 2]:.0f} "
            f"max={recovery[-1]:.0f}"
        )
    print_examples(console, report.ops, result.examples)
    print_verdict(console, report.seed, result.valid, report.root)
    return console.export_text()


def text_console() -> Console:
    """A console that records plain text, 120 columns (:func:`render`'s)."""
    from rich.console import Console

    return Console(
        record=True, width=120, force_terminal=False, file=io.StringIO(), markup=False,
        highlight=False,
    )  # fmt: skip


def print_faults(
    console: Console, schedule: Sequence[FaultEvent], skipped: Mapping[str, str]
) -> None:
    faults = ", ".join(f"{e.kind}@{e.start_s}s/{e.hold_s}s" for e in schedule) or "none"
    console.print(f"faults injected: {faults}")
    for fault, why in skipped.items():
        console.print(f"skipped {fault}: {why}")


def print_examples(
    console: Console, ops: Sequence[Op], examples: Iterable[checker.Example]
) -> None:
    """Each anomaly's description and the history around it."""
    for example in examples:
        console.print(f"\n[{example.anomaly}] {example.description}")
        for op in checker.context(ops, example):
            console.print(
                f"  {op.index:>7} {op.time_ns / 1e9:9.3f}s {op.process:<14} {op.type:<6} {op.f:<7} "
                f"{json.dumps(op.value)[:160]}" + (f" {op.error}" if op.error else "")
            )


def print_verdict(console: Console, seed: int, valid: bool, root: Path | None) -> None:
    console.print(
        f"\nseed {seed}: "
        + ("VALID" if valid else "INVALID")
        + (f"  (history in {root})" if root else "")
    )


def fault_counts(schedule: Sequence[FaultEvent]) -> str:
    """``kill x2, pause x1`` (or ``none``), for a results section."""
    kinds: dict[str, int] = {}
    for event in schedule:
        kinds[event.kind] = kinds.get(event.kind, 0) + 1
    return ", ".join(f"{k} x{n}" for k, n in sorted(kinds.items())) or "none"


def _stalls(result: checker.Result) -> str:
    """The longest time without an acknowledged send during each kind of fault."""
    worst: dict[str, float] = {}
    for fault_id, stall in result.stall_ms.items():
        kind = fault_id.partition(":")[2]
        worst[kind] = max(worst.get(kind, 0.0), stall)
    return ", ".join(f"{kind} {ms:.0f}" for kind, ms in sorted(worst.items()))


def _kind(result: checker.Result, name: str) -> str:
    """``report``, or ``safety`` for double-delivery in a run that crashed no consumer."""
    return "safety" if name == "double-delivery" and not result.consumer_faults else "report"


def _ratio(value: float | None) -> str:
    return "-" if value is None else f"{value:.3f}"


RESULTS_MARKER: Final = "<!-- chaos-results: newest first, added by `make chaos` -->"


def results_markdown(report: RunReport, when: str, revision: str) -> str:
    """One run's results as a Markdown section for docs/reliability.md."""
    result = report.result
    lines = [
        f"### {when}: seed {report.seed}, {report.duration_s:.0f} s, revision {revision}",
        "",
        f"Verdict: **{'VALID' if result.valid else 'INVALID'}**. Faults injected: "
        f"{fault_counts(report.schedule)}.",
        "",
        "| check | count | kind |",
        "|---|---:|---|",
    ]
    lines += [f"| {name} | {result.counts[name]} | safety |" for name in result.safety]
    lines += [
        f"| {name} | {result.counts[name]} | {_kind(result, name)} |" for name in result.reported
    ]
    sends = result.sends
    lines += [
        "",
        f"Sends: {sends['ok']} ok, {sends['fail']} failed, {sends['info']} indefinite; "
        f"{result.polls_ok} polls, {result.commits_ok} commits. Availability "
        f"{result.availability:.3f} overall, {_ratio(result.availability_during_faults)} "
        "during faults.",
    ]
    if result.recovery_ms:
        recovery = sorted(result.recovery_ms)
        lines.append(
            f"Recovery after heal: median {recovery[len(recovery) // 2]:.0f} ms, "
            f"max {recovery[-1]:.0f} ms over {len(recovery)} heals."
        )
    if result.stall_ms:
        lines.append(f"Longest stall (no acknowledged send) per fault kind, ms: {_stalls(result)}.")
    for fault, why in report.skipped.items():
        lines.append(f"Skipped {fault}: {why}.")
    for example in result.examples[:10]:
        lines.append(f"- `{example.anomaly}`: {example.description}")
    return "\n".join(lines) + "\n"


def record_results(path: Path, section: str) -> None:
    """Insert ``section`` right after :data:`RESULTS_MARKER` (appended with the marker when
    the file has none)."""
    text = path.read_text() if path.exists() else ""
    if RESULTS_MARKER not in text:
        text = text.rstrip("\n") + f"\n\n{RESULTS_MARKER}\n"
    head, _, tail = text.partition(RESULTS_MARKER)
    path.write_text(f"{head}{RESULTS_MARKER}\n\n{section}{tail}")
