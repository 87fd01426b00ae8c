"""One run of the transactional workload (``conveyor chaos --workload txn``): the stream
run's cluster, nemesis and cleanup (:mod:`conveyor.chaos.runner`) around
:class:`~conveyor.chaos.txn_workload.TxnWorkload`, then a read_committed final read (and a
read_uncommitted one, to count the aborted values the log holds), the replicas' files,
and :mod:`conveyor.chaos.txn_checker`.
"""

from __future__ import annotations

import json
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Final

import conveyor
from conveyor.chaos import checker, runner, txn_checker
from conveyor.chaos.history import Op
from conveyor.chaos.runner import fault_counts, print_examples, print_faults, print_verdict
from conveyor.chaos.schedule import FaultEvent
from conveyor.chaos.txn_workload import TXN_CONFIG, TXN_PARTITIONS, TXN_TOPIC, TxnWorkload
from conveyor.chaos.workload import FinalReads, final_read

# Besides the transactional anomalies: what the stream checker finds in the files and
# the coordinators' logs, counted here too.
FILE_CHECKS: Final = ("replica-divergence", "corrupt-replica", "two-active-coordinators")
# The readers' time to catch up once writers and processors stopped (they only feed the
# "unseen" report; the final read is what the safety checks use).
DRAIN_S: Final = 3.0


@dataclass
class TxnRunReport:
    seed: int
    duration_s: float
    faults: tuple[str, ...]
    schedule: list[FaultEvent]
    result: txn_checker.TxnResult
    ops: list[Op]
    files: checker.Result  # replica-divergence, corrupt-replica, two-active-coordinators
    skipped: dict[str, str] = field(default_factory=dict)
    root: Path | None = None
    in_log: int = 0  # values in the log read_uncommitted, aborted ones included
    committed_in_log: int = 0  # values the read_committed final read returned

    @property
    def valid(self) -> bool:
        return self.result.valid and not any(self.files.counts[n] for n in FILE_CHECKS)


def run(
    duration_s: float, seed: int, faults: tuple[str, ...], *, brokers: int = 3,
    root: Path | None = None, replication_factor: int | None = None, ha: bool = False,
    processors: int = 2,
) -> TxnRunReport:  # fmt: skip
    schedule, usable, skipped = runner.plan(
        seed, duration_s, faults, ha=ha, brokers=brokers, partitions=TXN_PARTITIONS,
        consumers=processors,
    )  # fmt: skip
    root = root or Path(tempfile.mkdtemp(prefix=f"conveyor-chaos-txn-{seed}-"))
    with runner.staged(
        root, brokers, ha=ha, schedule=schedule, usable=usable, skipped=skipped, topic=TXN_TOPIC
    ) as stage:
        url = stage.cluster.url
        with conveyor.Admin(url) as admin:
            admin.create_topic(
                TXN_TOPIC, partitions=TXN_PARTITIONS,
                replication_factor=replication_factor or min(3, brokers), config=TXN_CONFIG,
            )  # fmt: skip
        stage.workload = workload = TxnWorkload(
            url, stage.history, root, seed, processors=processors
        )
        runner.drive(stage, workload, seed, duration_s, drain_s=DRAIN_S, topic=TXN_TOPIC)
        committed = final_read(
            url, TXN_PARTITIONS, runner.FINAL_READ_TIMEOUT_S, TXN_TOPIC, "read_committed"
        )
        raw = final_read(url, TXN_PARTITIONS, runner.FINAL_READ_TIMEOUT_S, TXN_TOPIC)
    ops = stage.history.ops()
    files = checker.Result()
    checker.check_replicas(stage.replicas, files)
    for problem in runner.coordinator_problems(stage.cluster):
        files.add("two-active-coordinators", problem)
    (root / "final.json").write_text(json.dumps({str(p): r for p, r in committed.items()}))
    return TxnRunReport(
        seed, duration_s, faults, stage.schedule, txn_checker.check(ops, committed), ops,
        files, skipped, root, in_log=_count(raw), committed_in_log=_count(committed),
    )  # fmt: skip


def _count(final: FinalReads) -> int:
    return sum(1 for records in final.values() for _o, _k, v in records if v is not None)


def _rows(report: TxnRunReport) -> list[tuple[str, int, str]]:
    result = report.result
    rows = [(name, result.counts[name], "safety") for name in txn_checker.TXN_SAFETY]
    rows += [(name, report.files.counts[name], "safety") for name in FILE_CHECKS]
    rows += [(name, result.counts[name], "report") for name in txn_checker.TXN_REPORTED]
    return rows


def _summary(report: TxnRunReport) -> str:
    result = report.result
    txns = result.txns
    return (
        f"transactions: {txns['committed']} committed, {txns['aborted']} aborted, "
        f"{txns['unknown']} unknown; {result.cycles_checked} committed read-then-write; "
        f"{result.polls_ok} read_committed polls returned {result.values_read} values; "
        f"final read: {report.committed_in_log} committed values, "
        f"{report.in_log - report.committed_in_log} more in the log read_uncommitted "
        "(aborted or undecided writes)"
    )


def render(report: TxnRunReport) -> str:
    """The summary table, the seed, and the minimal history around each anomaly."""
    from rich.table import Table

    console = runner.text_console()
    counts = Table(
        title=f"conveyor chaos --workload txn  seed={report.seed}  duration={report.duration_s}s"
    )
    for column in ("check", "count", "kind"):
        counts.add_column(column, justify="right" if column == "count" else "left")
    for name, count, kind in _rows(report):
        counts.add_row(name, str(count), kind)
    console.print(counts)
    print_faults(console, report.schedule, report.skipped)
    console.print(_summary(report))
    print_examples(console, report.ops, report.result.examples + report.files.examples)
    print_verdict(console, report.seed, report.valid, report.root)
    return console.export_text()


def results_markdown(report: TxnRunReport, when: str, revision: str) -> str:
    """One run's results as a Markdown section for docs/reliability.md."""
    lines = [
        f"### {when}: transactional workload, seed {report.seed}, {report.duration_s:.0f} s, "
        f"revision {revision}",
        "",
        f"Verdict: **{'VALID' if report.valid else 'INVALID'}**. Faults injected: "
        f"{fault_counts(report.schedule)}.",
        "",
        "| check | count | kind |",
        "|---|---:|---|",
    ]
    lines += [f"| {name} | {count} | {kind} |" for name, count, kind in _rows(report)]
    lines += ["", _summary(report) + "."]
    for fault, why in report.skipped.items():
        lines.append(f"Skipped {fault}: {why}.")
    for example in (report.result.examples + report.files.examples)[:10]:
        lines.append(f"- `{example.anomaly}`: {example.description}")
    return "\n".join(lines) + "\n"
