"""``conveyor bench produce|consume|e2e``: the client benchmarks' arguments, live progress
bar and final tables (the logic is in ``conveyor/bench/client.py``)."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

from conveyor.cli.common import EXIT_ERROR, EXIT_OK, positive_int

if TYPE_CHECKING:
    from rich.console import Console

    from conveyor.bench.workload import ClientBenchResult, LatencySummary, Mode
    from conveyor.cli.common import Subparsers

_DESCRIPTIONS = {
    "produce": "Send messages from producer processes and report messages/s, MB/s and "
    "produce-ack latency (send to acknowledgement).",
    "consume": "Fill a topic (untimed), then read it to the end with competing consumer "
    "processes (each a slice of the partitions) and report messages/s and MB/s.",
    "e2e": "Produce at a steady --rate while consumers read at the end of the log, and "
    "report end-to-end latency (send to receipt) and produce-ack latency.",
}


def register_client_benchmarks(benchmarks: Subparsers) -> None:
    for mode in ("produce", "consume", "e2e"):
        parser = benchmarks.add_parser(
            mode,
            help=_DESCRIPTIONS[mode].split(" and ")[0].lower(),
            description=_DESCRIPTIONS[mode],
        )
        _add_arguments(parser, mode)
        parser.set_defaults(handler=_run, bench_mode=mode)


def _add_arguments(parser: argparse.ArgumentParser, mode: str) -> None:
    where = parser.add_mutually_exclusive_group(required=True)
    where.add_argument(
        "--bootstrap",
        "--url",
        dest="bootstrap",
        metavar="URL",
        help="an existing cluster's coordinator URL",
    )
    where.add_argument(
        "--local",
        type=positive_int,
        metavar="N",
        help="start a throwaway cluster of N brokers in a temporary directory",
    )
    add = parser.add_argument
    add("--message-bytes", type=positive_int, default=100, metavar="N", help="(default 100)")
    add("--count", type=positive_int, default=100_000, metavar="N", help="messages (100000)")
    add("--duration", type=float, default=None, metavar="S", help="run S seconds, not --count")
    add(
        "--rate",
        type=positive_int,
        default=5_000 if mode == "e2e" else None,
        metavar="MSG/S",
        help="total send rate, spread over producers (default: "
        + ("5000)" if mode == "e2e" else "as fast as possible)"),
    )
    add("--keys", type=int, default=8, metavar="N", help="distinct keys, 0 for none (8)")
    add("--partitions", type=positive_int, default=8, metavar="N", help="of a new topic (8)")
    add("--replication-factor", type=positive_int, default=None, metavar="N")
    add("--acks", default="all", choices=("all", "1", "0"), help="(default all)")
    add("--producers", type=positive_int, default=1, metavar="N", help="processes (1)")
    add("--consumers", type=positive_int, default=1, metavar="N", help="processes (1)")
    add("--batch-bytes", type=positive_int, default=512 * 1024, metavar="N")
    add("--linger-ms", type=int, default=5, metavar="MS", help="(default 5)")
    add(
        "--max-in-flight",
        type=positive_int,
        default=None,
        metavar="N",
        help="conveyor clients: full batches in flight per partition (default: the "
        "producer's, 5 with acks=all, 1 otherwise; a batch still filling waits for the "
        "answers; at most 5 with acks=all)",
    )
    add("--sequential", action="store_true", help="wait for each ack before the next send")
    add(
        "--batch-api",
        action="store_true",
        help="conveyor client: send_many per step of records instead of send per record "
        "(and, with conveyor-kafka, consumers' poll_batch instead of poll)",
    )
    add("--fetch-max-bytes", type=positive_int, default=4 * 1024 * 1024, metavar="N")
    add("--fetch-max-wait-ms", type=int, default=100, metavar="MS")
    add("--sample-every", type=positive_int, default=64, metavar="N", help="time 1 send in N")
    add("--topic", default=None, help="use this topic (created when missing)")
    add("--dir", type=Path, default=None, help="parent of --local's temporary directory")
    add("--pin-brokers", action="store_true", help="--local: broker i on CPU i-1 (mod CPUs)")
    add(
        "--client",
        default="conveyor",
        choices=("conveyor", "conveyor-kafka", "confluent-kafka", "aiokafka"),
        help="the client library: Conveyor's (the default: its Producer, which speaks Kafka, "
        "and HTTP fetch readers of the brokers' REST API; conveyor-kafka: its Producer and "
        "Consumer) or a Kafka client through the brokers' Kafka listeners "
        "(docs/kafka-compatibility.md)",
    )
    add("--json", action="store_true", help="print one JSON object instead of tables")


def _config(args: argparse.Namespace, mode: Mode) -> Any:
    from conveyor.bench.workload import ClientBenchConfig

    return ClientBenchConfig(
        mode=mode,
        message_bytes=args.message_bytes,
        count=args.count,
        duration_s=args.duration,
        rate=args.rate,
        keys=args.keys,
        partitions=args.partitions,
        replication_factor=args.replication_factor,
        acks=args.acks,
        producers=args.producers,
        consumers=args.consumers,
        batch_bytes=args.batch_bytes,
        linger_ms=args.linger_ms,
        max_in_flight=args.max_in_flight,
        sequential=args.sequential,
        batch_api=args.batch_api,
        fetch_max_bytes=args.fetch_max_bytes,
        fetch_max_wait_ms=args.fetch_max_wait_ms,
        sample_every=args.sample_every,
        topic=args.topic,
        client=args.client,
    )


def _run(args: argparse.Namespace) -> int:
    from rich.console import Console

    from conveyor.bench.client import BenchError, run_client_bench

    try:
        config = _config(args, args.bench_mode)
    except ValueError as exc:
        print(f"conveyor bench {args.bench_mode}: {exc}", file=sys.stderr)
        return 2
    status = Console(stderr=True, highlight=False)
    try:
        if args.json or not status.is_terminal:
            result = run_client_bench(
                config,
                bootstrap=args.bootstrap,
                local_brokers=args.local,
                local_dir=args.dir,
                pin_brokers=args.pin_brokers,
            )
        else:
            result = _run_with_bar(config, args, status)
    except BenchError as exc:
        status.print(f"[red]benchmark failed:[/red] {exc}")
        return EXIT_ERROR
    if args.json:
        sys.stdout.write(json.dumps(result.to_dict(), indent=2) + "\n")
    else:
        render_client(result, Console(highlight=False))
    return EXIT_OK if result.errors == 0 else EXIT_ERROR


def _run_with_bar(config: Any, args: argparse.Namespace, status: Console) -> ClientBenchResult:
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        TaskID,
        TextColumn,
        TimeElapsedColumn,
    )

    from conveyor.bench.client import run_client_bench

    tasks: dict[str, TaskID] = {}
    with Progress(
        TextColumn("{task.description:>8}"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("{task.fields[rate]}"),
        TimeElapsedColumn(),
        console=status,
    ) as bar:

        def progress(phase: str, done: int, total: int | None) -> None:
            if phase not in tasks:
                tasks[phase] = bar.add_task(phase, total=total, rate="")
            task = bar.tasks[tasks[phase]]
            elapsed = task.elapsed or 0.0
            rate = f"{done / elapsed:,.0f} msg/s" if elapsed > 0 else ""
            bar.update(tasks[phase], completed=done, total=total, rate=rate)

        return run_client_bench(
            config,
            bootstrap=args.bootstrap,
            local_brokers=args.local,
            local_dir=args.dir,
            pin_brokers=args.pin_brokers,
            progress=progress,
        )


def render_client(result: ClientBenchResult, console: Console) -> None:
    from rich.table import Table

    config = result.config
    where = f"local cluster of {result.brokers}" if result.brokers else result.bootstrap
    console.print(
        f"[bold]conveyor bench {config.mode}[/bold] ({where}): {config.message_bytes} B "
        f"messages, {config.keys} keys, {config.partitions} partitions, acks={config.acks}, "
        f"{config.producers} producer(s), {config.consumers} consumer(s), "
        f"batch {config.batch_bytes:,} B, linger {config.linger_ms} ms, client {config.client}"
        + (f", {config.max_in_flight} in flight" if config.max_in_flight is not None else ""),
        soft_wrap=True,
    )
    rates = Table(title="Throughput (MB = 10^6 bytes of payload)", title_justify="left")
    for column in ("phase", "messages", "seconds", "msg/s", "MB/s", "errors", "client CPU s"):
        rates.add_column(column, justify="left" if column == "phase" else "right")
    for name, throughput in (("produce", result.produce), ("consume", result.consume)):
        if throughput is None:
            continue
        rates.add_row(
            name,
            f"{throughput.messages:,}",
            f"{throughput.seconds:.3f}",
            f"{throughput.msg_per_s:,.0f}",
            f"{throughput.mb_per_s:,.2f}",
            f"{throughput.errors:,}",
            f"{throughput.cpu_s:.2f}",
        )
    console.print(rates)
    latencies = Table(title="Latency (microseconds)", title_justify="left")
    for column in ("latency", "samples", "p50", "p95", "p99", "max"):
        latencies.add_column(column, justify="left" if column == "latency" else "right")
    for name, summary in (
        ("produce ack", result.produce_latency),
        ("end to end", result.e2e_latency),
    ):
        if summary is not None:
            latencies.add_row(name, f"{summary.count:,}", *_percentiles(summary))
    console.print(latencies)
    if result.broker_cpu_s is not None:
        rss_mib = (result.broker_rss_bytes_max or 0) / 2**20
        console.print(f"brokers: {result.broker_cpu_s:.2f} CPU s, peak RSS {rss_mib:.0f} MiB")
    for message in result.error_messages:
        console.print(f"[red]error:[/red] {message}", soft_wrap=True)


def _percentiles(summary: LatencySummary) -> list[str]:
    return [f"{v:,.0f}" for v in (summary.p50_us, summary.p95_us, summary.p99_us, summary.max_us)]


__all__ = ["EXIT_ERROR", "register_client_benchmarks", "render_client"]
