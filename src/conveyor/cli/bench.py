"""``conveyor bench``: performance measurements. ``storage`` here; ``produce``,
``consume`` and ``e2e`` in ``bench_client.py``."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import TYPE_CHECKING

from conveyor.bench.storage_defaults import (
    DEFAULT_PIPELINE_DEPTH,
    DEFAULT_RECORD_BYTES,
    DEFAULT_RECORDS_PER_BATCH,
    DEFAULT_ROUNDS,
    DEFAULT_SIZE_MIB,
    MIB,
)
from conveyor.cli.bench_client import register_client_benchmarks
from conveyor.cli.bench_queue import register_queue_benchmark
from conveyor.cli.common import EXIT_OK, positive_int
from conveyor.protocol.errors import InvalidRequestError

if TYPE_CHECKING:
    from rich.console import Console

    from conveyor.bench.storage import StorageBenchResult
    from conveyor.cli.common import Subparsers


def register(subparsers: Subparsers) -> None:
    bench = subparsers.add_parser(
        "bench",
        help="measure performance",
        description="Measure Conveyor's performance on this machine.",
    )
    benchmarks = bench.add_subparsers(
        title="benchmarks", dest="benchmark", metavar="BENCHMARK", required=True
    )
    _register_storage(benchmarks)
    _register_transactions(benchmarks)
    register_client_benchmarks(benchmarks)
    register_queue_benchmark(benchmarks)


def _register_transactions(benchmarks: Subparsers) -> None:
    txn = benchmarks.add_parser(
        "txn",
        help="transactional W1 against non-transactional W1 (confluent-kafka)",
        description="W1 (N x 100 B, 8 keys, 8 partitions) with confluent-kafka, in "
        "transactions of --per-transaction messages and without, alternating; prints JSON "
        "(docs/benchmarks.md#transactions).",
    )
    where = txn.add_mutually_exclusive_group(required=True)
    where.add_argument("--url", help="an existing cluster's coordinator URL")
    where.add_argument("--local", type=int, metavar="N", help="a throwaway cluster of N brokers")
    txn.add_argument("--count", type=int, default=200_000, help="messages per run (200000)")
    txn.add_argument("--per-transaction", type=int, default=1000, help="(default 1000)")
    txn.add_argument("--rounds", type=int, default=3, help="runs of each (default 3)")
    txn.set_defaults(handler=_run_transactions)


def _run_transactions(args: argparse.Namespace) -> int:
    import json

    from conveyor.bench.client import kafka_bootstrap
    from conveyor.bench.local import LocalCluster
    from conveyor.bench.transactions import compare

    if args.count < 1 or args.per_transaction < 1 or args.rounds < 1:
        raise InvalidRequestError("--count, --per-transaction and --rounds must be positive")
    if args.url is not None:
        result = compare(kafka_bootstrap(args.url), args.count, args.per_transaction, args.rounds)
    else:
        with LocalCluster(args.local) as cluster:
            bootstrap = kafka_bootstrap(cluster.url)
            result = compare(bootstrap, args.count, args.per_transaction, args.rounds)
    print(json.dumps(result, indent=2))
    return 0


def _register_storage(benchmarks: Subparsers) -> None:
    storage = benchmarks.add_parser(
        "storage",
        help="append and read back a partition log against raw-file baselines",
        description=(
            "Append one pre-built batch repeatedly to a partition log under the 'always' "
            "and 'interval' flush policies, compare each with raw writes of the same bytes "
            "fsynced on the same schedule, then read the log back sequentially. Prints "
            "PASS/MISS against the storage targets; the data directory is removed."
        ),
    )
    storage.add_argument(
        "--size-mib",
        type=positive_int,
        default=DEFAULT_SIZE_MIB,
        metavar="N",
        help="log size to write per run, in MiB (default: %(default)s)",
    )
    storage.add_argument(
        "--record-bytes",
        type=positive_int,
        default=DEFAULT_RECORD_BYTES,
        metavar="N",
        help="value size of each record (default: %(default)s)",
    )
    storage.add_argument(
        "--records-per-batch",
        type=positive_int,
        default=DEFAULT_RECORDS_PER_BATCH,
        metavar="N",
        help="records in the batch appended again and again (default: %(default)s)",
    )
    storage.add_argument(
        "--pipeline-depth",
        type=positive_int,
        default=DEFAULT_PIPELINE_DEPTH,
        metavar="N",
        help="appends awaiting durability at once under 'always' (default: %(default)s)",
    )
    storage.add_argument(
        "--rounds",
        type=positive_int,
        default=DEFAULT_ROUNDS,
        metavar="N",
        help="turns the log and its raw baselines take, in rotating order (default: %(default)s)",
    )
    storage.add_argument(
        "--dir",
        type=Path,
        default=None,
        metavar="DIR",
        help="where to create the (temporary) data directory: pick the disk to measure "
        "(default: $TMPDIR if set, else the current directory)",
    )
    storage.add_argument(
        "--json", action="store_true", help="print one JSON object instead of tables"
    )
    storage.set_defaults(handler=_run_storage)


def _run_storage(args: argparse.Namespace) -> int:
    from rich.console import Console

    from conveyor.bench.storage import StorageBenchConfig, run_storage_bench

    config = StorageBenchConfig(
        size_bytes=args.size_mib * MIB,
        record_bytes=args.record_bytes,
        records_per_batch=args.records_per_batch,
        pipeline_depth=args.pipeline_depth,
        rounds=args.rounds,
    )
    progress = None
    if not args.json:
        status = Console(stderr=True, highlight=False)
        progress = status.print
    result = run_storage_bench(config, args.dir, progress)
    if args.json:
        sys.stdout.write(json.dumps(result.to_dict(), indent=2) + "\n")
    else:
        render_storage(result, Console(highlight=False))
    return EXIT_OK


def render_storage(result: StorageBenchResult, console: Console) -> None:
    from rich.table import Table

    config, machine = result.config, result.machine
    console.print(
        f"[bold]Storage benchmark[/bold]: {result.batches * result.batch_bytes / MIB:,.0f} MiB "
        f"per writer, {result.batches:,} batches of {result.batch_bytes:,} bytes",
        soft_wrap=True,
    )
    console.print(
        f"({config.records_per_batch:,} records of {config.record_bytes} bytes each), "
        f"{config.rounds} rounds"
    )
    console.print(
        f"machine: {machine.cpu_count} CPUs, {machine.memory_bytes / 2**30:.1f} GiB RAM, "
        f"Python {machine.python_version}, filesystem {machine.filesystem}",
        soft_wrap=True,
    )
    append = Table(title="Append (MB = 10^6 bytes)", title_justify="left")
    for column in ("policy", "writer", "records/s", "MB/s", "fsyncs"):
        append.add_column(column, justify="left" if column in ("policy", "writer") else "right")
    interval_ms = config.interval_ms
    writers = {
        "always": (
            f"log, {config.pipeline_depth} awaiting",
            "raw, fsync each write",
            f"raw, group fsync, {config.pipeline_depth} awaiting",
        ),
        "interval": (
            "log",
            f"raw, inline fsync {interval_ms} ms",
            f"raw, fsync thread {interval_ms} ms",
        ),
    }
    for comparison in result.appends:
        runs = (comparison.log, comparison.raw_serial, comparison.raw_pipelined)
        for writer, run in zip(writers[comparison.policy], runs, strict=True):
            append.add_row(
                comparison.policy,
                writer,
                f"{run.records_per_s:,.0f}",
                f"{run.mb_per_s:,.1f}",
                "-" if run.fsyncs is None else f"{run.fsyncs:,}",
            )
    console.print(append)
    for comparison in result.appends:
        baseline = comparison.baseline_name.replace("_", " ")
        console.print(
            f"append ratio {comparison.policy}: {comparison.ratio:.3f} (log / {baseline}, "
            f"median of {config.rounds} rounds; from totals {comparison.ratio_total:.3f})",
            soft_wrap=True,
        )
    read = result.read
    console.print(
        f"read sequential ({config.read_bytes_max // 1024:,} KiB per read): "
        f"{read.records_per_s:,.0f} records/s, {read.mb_per_s:,.1f} MB/s",
        soft_wrap=True,
    )
    console.print(f"peak RSS: {result.peak_rss_mib:.1f} MiB")
    _render_targets(result, console)


def _render_targets(result: StorageBenchResult, console: Console) -> None:
    from rich.table import Table

    targets = Table(title="Targets", title_justify="left")
    for column in ("target", "measured", "required", "result"):
        targets.add_column(column, justify="left" if column == "target" else "right")
    for check in result.targets():
        comparison = ">=" if check.at_least else "<"
        verdict = "[green]PASS[/green]" if check.passed else "[red]MISS[/red]"
        targets.add_row(
            check.name,
            f"{_number(check.measured, check.unit)} {check.unit}",
            f"{comparison} {_number(check.threshold, check.unit)}",
            verdict,
        )
    console.print(targets)


def _number(value: float, unit: str) -> str:
    if unit == "x raw":
        return f"{value:.3f}"  # so that 0.7996 does not show as a failing 0.80
    return f"{value:,.0f}" if value >= 1000 else f"{value:,.2f}"
