"""``make bench``: the standard workloads W1-W4 on Conveyor (its own client over the brokers'
Kafka listeners), confluent-kafka against the same Conveyor broker build, and Conveyor's
peers (Redis Streams, NATS JetStream, RabbitMQ), medians of rounds; one table, issue 19's
targets with PASS/MISS computed from it, a section of docs/benchmarks.md and a chart
(docs/benchmarks-peers.png).

Usage: python bench/run_all.py [--runs 3] [--count 1000000] [--peer-count 100000]
       [--e2e-seconds 10] [--systems conveyor,confluent-kafka,redis,nats,...]
       [--peers-from RAW.jsonl] [--from-raw RAW.jsonl] [--no-docs]

Each round runs Conveyor's rows and confluent-kafka's (``bench/kafka_rows.py``), then Redis
Streams and, unless taken from ``--peers-from``, NATS and RabbitMQ (``bench/peers/peers.py``,
one run each per round), so that every system's runs spread over the whole run.
``--count`` messages for Conveyor, confluent-kafka and Redis (issue 19's W1 is 1,000,000);
``--peer-count`` for NATS and RabbitMQ, which at ~5,000-35,000 msg/s would need many
minutes per round at 1,000,000. ``--peers-from`` takes their rows from a raw file of
``peers.py`` written the same day (UTC) instead of running them (said in the caption); a
system with fewer than ``--runs`` runs in that file runs here instead.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import re
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

# bench/ is not a package: its modules are found by path
import kafka_rows
import report

ROOT = Path(__file__).resolve().parent.parent
DOC = ROOT / "docs" / "benchmarks.md"
CHART = ROOT / "docs" / "benchmarks-peers.png"
BEGIN, END = "<!-- peers:begin -->", "<!-- peers:end -->"
SLOW_PEERS = ("nats", "rabbitmq-quorum", "rabbitmq-classic")
PEERS = ("redis", *SLOW_PEERS)
# --systems names -> the table's rows
KAFKA_SYSTEMS = {
    "conveyor": [report.CONVEYOR, report.CONVEYOR_BATCH],
    "confluent-kafka": [report.CONFLUENT],
}
DEFAULT_SYSTEMS = "conveyor,confluent-kafka,redis,nats,rabbitmq-quorum,rabbitmq-classic"


def conveyor_version() -> str:
    from conveyor._version import __version__

    commit = subprocess.run(
        ["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, cwd=ROOT,
        check=False,
    ).stdout.strip()  # fmt: skip
    return f"Conveyor {__version__} ({commit})"


def peer_runs(systems: list[str], count: int, run: int, e2e_seconds: float) -> list[dict[str, Any]]:
    """One run of each of ``systems`` with ``peers.py`` (W1-W4)."""
    argv = [
        sys.executable, str(ROOT / "bench" / "peers" / "peers.py"), "--systems", ",".join(systems),
        "--count", str(count), "--runs", "1", "--e2e-seconds", f"{e2e_seconds:g}",
    ]  # fmt: skip
    load_before = os.getloadavg()[0]
    done = subprocess.run(argv, capture_output=True, text=True, check=False, timeout=7200)
    results = [json.loads(line) for line in done.stdout.splitlines() if line.startswith("{")]
    if done.returncode != 0:
        print(f"peers failed (results so far kept):\n{done.stderr[-3000:]}", file=sys.stderr)
    for result in results:
        result.update(run=run, load_before=load_before, load_after=os.getloadavg()[0])
    return results


def peers_from(path: Path, systems: list[str]) -> list[dict[str, Any]]:
    """The rows of ``systems`` in a raw ``peers.py`` file written today (UTC)."""
    written = datetime.datetime.fromtimestamp(path.stat().st_mtime, datetime.UTC)
    today = datetime.datetime.now(datetime.UTC).date()
    if written.date() != today:
        raise SystemExit(f"{path} was written {written:%Y-%m-%d %H:%M} UTC, not today: rerun them")
    rows = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    picked = [r for r in rows if r.get("system") in systems]
    for row in picked:
        row["source"] = f"{path} ({written:%Y-%m-%d %H:%M} UTC)"
    return picked


def measure(args: argparse.Namespace, systems: list[str]) -> list[dict[str, Any]]:
    version = conveyor_version()
    kafka = [row for name in systems for row in KAFKA_SYSTEMS.get(name, [])]
    raw: list[dict[str, Any]] = []
    if args.peers_from is not None:
        found = peers_from(args.peers_from, [s for s in SLOW_PEERS if s in systems])
        for system in dict.fromkeys(r["system"] for r in found):
            mine = [r for r in found if r["system"] == system]
            if len(mine) >= args.runs:
                raw += mine[: args.runs]
            else:
                print(
                    f"{args.peers_from}: {len(mine)} run(s) of {system}: run here", file=sys.stderr
                )
    taken = {
        r["system"] for r in raw
    }  # a slow peer the file lacks (or has too few runs of) runs here
    live_peers = [s for s in PEERS if s in systems and s not in taken]
    for run in range(args.runs):
        started = time.monotonic()
        if kafka:
            raw += emit(kafka_rows.one_round(
                run, kafka, args.count, args.e2e_seconds, args.w4_rates, version
            ))  # fmt: skip
        if "redis" in live_peers:
            raw += emit(peer_runs(["redis"], args.count, run, args.e2e_seconds))
        slow = [s for s in live_peers if s != "redis"]
        if slow:
            raw += emit(peer_runs(slow, args.peer_count, run, args.e2e_seconds))
        print(f"round {run + 1} took {time.monotonic() - started:.0f} s", file=sys.stderr)
    return raw


def emit(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    command = " ".join(["python bench/run_all.py", *sys.argv[1:]])
    for row in rows:
        row["command"] = command
        print(json.dumps(row), flush=True)
    return rows


def caption(rows: list[dict[str, Any]], raw: list[dict[str, Any]], args: argparse.Namespace) -> str:
    loads = [
        r[k] for r in raw if "source" not in r for k in ("load_before", "load_after") if k in r
    ]
    load = f"{min(loads):.1f}-{max(loads):.1f}" if loads else "not recorded"
    sources = sorted({r["source"] for r in raw if "source" in r})
    taken = (
        f" The {', '.join(s for s in SLOW_PEERS if any(r['system'] == s for r in rows))} rows "
        f"are from {', '.join(sources)}, a separate `peers.py` run of the same day on the same "
        "machine, not this run."
        if sources
        else ""
    )
    counts = ", ".join(f"{r['system']} {r.get('count', 0):,}" for r in rows)
    runs = sorted({int(r.get("runs", 0)) for r in rows})
    return (
        f"Median of {'/'.join(map(str, runs))} runs per system, 100 B messages, 8 keys, "
        "acks=all / every message "
        f"acknowledged. W1/W2 messages per run: {counts}. Conveyor's rows use its own client "
        "over the brokers' Kafka listeners; `confluent-kafka -> Conveyor` is librdkafka "
        "against the same Conveyor broker build, each workload run right after Conveyor's. "
        "W4 for Conveyor and confluent-kafka: 8 partitions, RF=3 on 3 brokers, at 5,000 and "
        "50,000 msg/s; for the peers: one node, 5,000 msg/s. W2 for Conveyor and "
        f"confluent-kafka: a 4-member consumer group over 16 partitions (64 keys). Load average "
        f"during the run: {load}.{taken}"
    )


def chart(rows: list[dict[str, Any]]) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    def value(row: dict[str, Any], key: str, sub: str | None = None) -> float:
        v = row.get(key)
        if sub is not None:
            v = v.get(sub) if isinstance(v, dict) else None
        return float(v) if isinstance(v, int | float) else 0.0

    names = [r["system"].replace(" -> ", "\n-> ").replace(", ", ",\n") for r in rows]
    fig, axes = plt.subplots(1, 3, figsize=(16, 5))
    axes[0].bar(names, [value(r, "w1_produce_msg_per_s") for r in rows])
    axes[0].set_title("W1 produce (msg/s, higher is better)")
    axes[1].bar(names, [value(r, "w2_consume_msg_per_s") for r in rows], color="tab:green")
    axes[1].set_title("W2 consume, 4 consumers (msg/s)")
    width = 0.4
    xs = range(len(rows))
    w3 = [value(r, "w3_ack_latency_us", "p50_us") for r in rows]
    w4 = [value(r, "w4_e2e_latency_us", "p99_us") for r in rows]
    axes[2].bar([x - width / 2 for x in xs], w3, width, label="W3 ack p50")
    axes[2].bar([x + width / 2 for x in xs], w4, width, label="W4 e2e p99 at 5,000 msg/s")
    axes[2].set_xticks(list(xs), names)
    axes[2].set_yscale("log")
    axes[2].set_title("latency (us, log scale, lower is better)")
    axes[2].legend()
    for axis in axes:
        axis.tick_params(axis="x", rotation=30, labelsize=8)
    fig.tight_layout()
    fig.savefig(CHART, dpi=100)


def section(rows: list[dict[str, Any]], raw: list[dict[str, Any]], args: argparse.Namespace) -> str:
    when = datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M UTC")
    versions = "; ".join(f"{r['system']}: {r['version']}" for r in rows)
    measured = sorted({r["command"] for r in raw if "command" in r})
    command = "; ".join(measured) or " ".join(["python bench/run_all.py", *sys.argv[1:]])
    if args.from_raw is not None:
        when = f"re-rendered {when} from {args.from_raw}"
    checks = report.targets(rows)
    errors = {r["system"]: r["errors"] for r in rows if r.get("errors")}
    return "\n\n".join([
        f"### Results ({when})",
        report.table(rows),
        caption(rows, raw, args),
        "![throughput and latency per system](benchmarks-peers.png)",
        f"### Issue 19's targets (this run, {when})",
        report.targets_table(checks),
        "Computed by `bench/report.py` from the table above. Errors (failed sends, messages "
        f"acknowledged but not read): {errors or 'none'}.",
        f"Machine: {platform.machine()}, {platform.platform(terse=True)}, {os.cpu_count()} CPUs, "
        f"Python {platform.python_version()}. Versions: {versions}.",
        f"Command: `{command}` (`make bench` runs the defaults); raw runs in "
        "`bench/results.jsonl`.",
    ])  # fmt: skip


def write_doc(text_block: str) -> None:
    text = DOC.read_text()
    block = f"{BEGIN}\n{text_block}\n{END}"
    if BEGIN in text:
        text = re.sub(re.escape(BEGIN) + ".*?" + re.escape(END), lambda _: block, text, flags=re.S)
    else:
        text = text.rstrip("\n") + "\n\n" + block + "\n"
    DOC.write_text(text)


def table_order(systems: list[str]) -> list[str]:
    return [row for name in systems for row in KAFKA_SYSTEMS.get(name, [name])]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--systems", default=DEFAULT_SYSTEMS)
    parser.add_argument("--count", type=int, default=1_000_000, help="Conveyor, confluent, Redis")
    parser.add_argument("--peer-count", type=int, default=100_000, help="NATS and RabbitMQ")
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--e2e-seconds", type=float, default=10.0)
    parser.add_argument(
        "--w4-rates", type=lambda s: [int(r) for r in s.split(",")], default=[5_000, 50_000]
    )
    parser.add_argument("--raw", type=Path, default=ROOT / "bench" / "results.jsonl")
    parser.add_argument("--peers-from", type=Path, default=None, help="NATS/RabbitMQ raw rows")
    parser.add_argument("--from-raw", type=Path, default=None, help="re-render from a raw file")
    parser.add_argument("--no-docs", action="store_true")
    args = parser.parse_args()
    systems = args.systems.split(",")
    if args.from_raw is not None:  # tables, docs and chart again from recorded runs
        raw = [json.loads(line) for line in args.from_raw.read_text().splitlines() if line]
    else:
        raw = measure(args, systems)
        args.raw.write_text("".join(json.dumps(r) + "\n" for r in raw))
    rows = report.medians(raw, table_order(systems))
    print(report.table(rows))
    print(report.targets_table(report.targets(rows)))
    if not args.no_docs:
        chart(rows)
        write_doc(section(rows, raw, args))
    return 0


if __name__ == "__main__":
    sys.exit(main())
