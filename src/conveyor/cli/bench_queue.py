"""``conveyor bench queue``: share groups against partition-based groups (the logic is in
``conveyor/bench/queue.py``; docs/benchmarks.md#queues)."""

from __future__ import annotations

import argparse
import json
import sys
from typing import TYPE_CHECKING

from conveyor.cli.common import EXIT_OK, positive_int

if TYPE_CHECKING:
    from rich.console import Console

    from conveyor.bench.queue import QueueBenchResult
    from conveyor.cli.common import Subparsers


def register_queue_benchmark(benchmarks: Subparsers) -> None:
    parser = benchmarks.add_parser(
        "queue",
        help="share groups (queues) against partition-based groups",
        description=(
            "Scaling past the partition count (simulated work per record, 1..32 consumers: "
            "share groups unordered and key-ordered against a consumer group), plain "
            "throughput with no work against W2 (and RabbitMQ's quorum queue with "
            "--peers), and redelivery latency after a release or a lock expiry."
        ),
    )
    where = parser.add_mutually_exclusive_group(required=True)
    where.add_argument(
        "--bootstrap",
        "--url",  # as every command that talks to a cluster (issue 22)
        dest="bootstrap",
        metavar="URL",
        help="an existing cluster's coordinator URL",
    )
    where.add_argument("--local", type=positive_int, metavar="N", help="a throwaway cluster")
    add = parser.add_argument
    add("--partitions", type=positive_int, default=4, metavar="N", help="scaling topic (4)")
    add("--keys", type=positive_int, default=1000, metavar="N", help="distinct keys (1000)")
    add("--work-ms", type=float, default=5.0, metavar="MS", help="work per record (5)")
    add("--consumers", default="1,2,4,8,16,32", metavar="N,N,...", help="(1,2,4,8,16,32)")
    add("--kinds", default="unordered,key_ordered,group", help="which groups to run")
    add("--duration", type=float, default=5.0, metavar="S", help="measured per run (5)")
    add("--batch", type=positive_int, default=10, metavar="N", help="records per receive (10)")
    add("--plain-count", type=positive_int, default=200_000, metavar="N", help="(200000)")
    add("--plain-partitions", type=positive_int, default=16, metavar="N", help="as W2 (16)")
    add("--plain-consumers", type=positive_int, default=4, metavar="N", help="processes (4)")
    add("--redelivery-rounds", type=positive_int, default=10, metavar="N", help="(10)")
    add("--peers", default="", help="e.g. rabbitmq-quorum: W2 of a peer in the same run")
    add("--json", action="store_true", help="print one JSON object instead of tables")
    parser.set_defaults(handler=_run)


def _run(args: argparse.Namespace) -> int:
    from rich.console import Console

    from conveyor.bench.queue import QueueBenchConfig, run_queue_bench

    config = QueueBenchConfig(
        partitions=args.partitions,
        keys=args.keys,
        work_ms=args.work_ms,
        consumers=tuple(int(c) for c in args.consumers.split(",")),
        kinds=tuple(args.kinds.split(",")),
        duration_s=args.duration,
        batch=args.batch,
        plain_count=args.plain_count,
        plain_partitions=args.plain_partitions,
        plain_consumers=args.plain_consumers,
        redelivery_rounds=args.redelivery_rounds,
        peers=tuple(p for p in args.peers.split(",") if p),
    )
    status = Console(stderr=True, highlight=False)
    result = run_queue_bench(
        config, bootstrap=args.bootstrap, local_brokers=args.local, progress=status.print
    )
    if args.json:
        sys.stdout.write(json.dumps(result.to_dict(), indent=2) + "\n")
    else:
        render(result, Console(highlight=False))
    return EXIT_OK


def render(result: QueueBenchResult, console: Console) -> None:
    from rich.table import Table

    config = result.config
    scaling = Table(
        title=f"Scaling: {config.partitions} partitions, {config.keys:,} keys, "
        f"{config.work_ms:g} ms of work per record (msg/s)",
        title_justify="left",
    )
    scaling.add_column("consumers", justify="right")
    for kind in config.kinds:
        scaling.add_column(kind, justify="right")
    for count in config.consumers:
        cells = [f"{result.scaling.get(k, {}).get(count, 0):,.0f}" for k in config.kinds]
        scaling.add_row(str(count), *cells)
    console.print(scaling)
    plain = Table(title="Plain throughput, no work (msg/s)", title_justify="left")
    for column in ("reader", "msg/s", "client CPU s"):
        plain.add_column(column, justify="left" if column == "reader" else "right")
    for name, rate in result.plain.items():
        cpu = result.plain_cpu_s.get(name)
        plain.add_row(name, f"{rate:,.0f}", "-" if cpu is None else f"{cpu:.1f}")
    console.print(plain)
    for name, figures in result.redelivery_ms.items():
        console.print(
            f"redelivery after {name}: p50 {figures['p50']:.1f} ms, p99 {figures['p99']:.1f} ms "
            f"({figures['count']:.0f} records)"
        )
    for name, ratio in result.ratios().items():
        console.print(f"{name}: {ratio:.2f}x")
    load = result.load_average
    console.print(f"load average at the end: {load[0]:.1f} {load[1]:.1f} {load[2]:.1f}")
    for error in result.errors:
        console.print(f"[red]error[/red]: {error}")
