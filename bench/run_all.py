"""``make bench``: the standard workloads W1-W5 on Conveyor and its peers, medians of runs,
one table, a section of docs/benchmarks.md and a chart (docs/benchmarks-peers.png).

Usage: python bench/run_all.py [--count 200000] [--runs 3] [--e2e-seconds 30]
       [--systems conveyor,redis,nats,rabbitmq-quorum,rabbitmq-classic] [--no-docs]
"""

from __future__ import annotations

import argparse
import json
import platform
import re
import statistics
import subprocess
import sys
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
DOC = ROOT / "docs" / "benchmarks.md"
CHART = ROOT / "docs" / "benchmarks-peers.png"
BEGIN, END = "<!-- peers:begin -->", "<!-- peers:end -->"


def conveyor(*args: str) -> dict[str, Any]:
    argv = [sys.executable, "-m", "conveyor", "bench", *args, "--json"]
    done = subprocess.run(argv, capture_output=True, text=True, check=False, timeout=1800)
    if done.returncode != 0:
        raise RuntimeError(f"{' '.join(argv)} failed:\n{done.stderr[-3000:]}")
    result: dict[str, Any] = json.loads(done.stdout)
    return result


def conveyor_runs(count: int, e2e_seconds: float, w5_count: int) -> dict[str, Any]:
    common = ["--message-bytes", "100", "--keys", "8", "--acks", "all"]
    w1 = conveyor("produce", "--local", "1", "--count", str(count), *common)
    w1_rf3 = conveyor(
        "produce", "--local", "3", "--replication-factor", "3", "--count", str(count), *common
    )
    w2 = conveyor(
        "consume", "--local", "1", "--count", str(count), "--partitions", "16",
        "--consumers", "4", *common,
    )  # fmt: skip
    w3 = conveyor(
        "produce", "--local", "1", "--count", "2000", "--sequential", "--linger-ms", "0", *common
    )
    w4 = conveyor(
        "e2e", "--local", "1", "--rate", "5000", "--duration", str(e2e_seconds),
        "--linger-ms", "1", "--fetch-max-wait-ms", "100", *common,
    )  # fmt: skip
    w5 = conveyor(
        "consume", "--local", "1", "--count", str(w5_count), "--partitions", "16",
        "--consumers", "4", *common,
    )  # fmt: skip
    return {
        "system": "conveyor",
        "version": _conveyor_version(),
        "w1_produce_msg_per_s": w1["produce"]["msg_per_s"],
        "w1_rf3_produce_msg_per_s": w1_rf3["produce"]["msg_per_s"],
        "w2_consume_msg_per_s": w2["consume"]["msg_per_s"],
        "w3_ack_latency_us": w3["produce_latency_us"],
        "w4_e2e_latency_us": w4["e2e_latency_us"],
        "w5_seconds": w5["produce"]["seconds"] + w5["consume"]["seconds"],
        "w1_produce_ack_latency_us": w1["produce_latency_us"],
        "w1_client_cpu_s": w1["produce"]["client_cpu_s"],
        "w1_broker_cpu_s": w1["broker_cpu_s"],
        "errors": sum(r["errors"] for r in (w1, w1_rf3, w2, w3, w4, w5)),
    }


def _conveyor_version() -> str:
    from conveyor._version import __version__

    commit = subprocess.run(
        ["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, cwd=ROOT,
        check=False,
    ).stdout.strip()  # fmt: skip
    return f"Conveyor {__version__} ({commit})"


def peer_runs(
    systems: list[str], count: int, runs: int, e2e_seconds: float
) -> list[dict[str, Any]]:
    argv = [
        sys.executable, str(ROOT / "bench" / "peers" / "peers.py"), "--systems", ",".join(systems),
        "--count", str(count), "--runs", str(runs), "--e2e-seconds", str(e2e_seconds),
    ]  # fmt: skip
    done = subprocess.run(argv, capture_output=True, text=True, check=False, timeout=7200)
    results = [json.loads(line) for line in done.stdout.splitlines() if line.startswith("{")]
    if done.returncode != 0:
        print(f"peers failed (results so far kept):\n{done.stderr[-3000:]}", file=sys.stderr)
    return results


def median_of(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """Field by field median (latency percentiles each on their own)."""
    out: dict[str, Any] = {"system": runs[0]["system"], "version": runs[0]["version"]}
    out["runs"] = len(runs)
    for key, value in runs[0].items():
        if key in ("system", "version", "run"):
            continue
        if isinstance(value, dict):
            out[key] = {k: statistics.median(r[key][k] for r in runs) for k in value}
        elif isinstance(value, int | float):
            out[key] = statistics.median(r[key] for r in runs)
    return out


COLUMNS = [
    ("W1 produce msg/s", lambda r: _n(r.get("w1_produce_msg_per_s"))),
    ("W1 RF=3 msg/s", lambda r: _n(r.get("w1_rf3_produce_msg_per_s"))),
    ("W2 consume msg/s", lambda r: _n(r.get("w2_consume_msg_per_s"))),
    ("W3 ack p50 us", lambda r: _n(r.get("w3_ack_latency_us", {}).get("p50_us"))),
    ("W3 ack p99 us", lambda r: _n(r.get("w3_ack_latency_us", {}).get("p99_us"))),
    ("W4 e2e p50 us", lambda r: _n(r.get("w4_e2e_latency_us", {}).get("p50_us"))),
    ("W4 e2e p99 us", lambda r: _n(r.get("w4_e2e_latency_us", {}).get("p99_us"))),
    ("W5 s", lambda r: "-" if r.get("w5_seconds") is None else f"{r['w5_seconds']:.1f}"),
]


def _n(value: float | None) -> str:
    return "-" if value is None else f"{value:,.0f}"


def table(rows: list[dict[str, Any]]) -> str:
    head = "| system | " + " | ".join(name for name, _ in COLUMNS) + " |"
    rule = "|---|" + "---:|" * len(COLUMNS)
    lines = [head, rule]
    for row in rows:
        lines.append(f"| {row['system']} | " + " | ".join(f(row) for _, f in COLUMNS) + " |")
    return "\n".join(lines)


def chart(rows: list[dict[str, Any]]) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = [r["system"] for r in rows]
    fig, axes = plt.subplots(1, 3, figsize=(15, 4.5))
    axes[0].bar(names, [r.get("w1_produce_msg_per_s", 0) for r in rows], label="W1 produce")
    axes[0].set_title("W1 produce (msg/s, higher is better)")
    axes[1].bar(names, [r.get("w2_consume_msg_per_s", 0) for r in rows], color="tab:green")
    axes[1].set_title("W2 consume, 4 consumers (msg/s)")
    width = 0.4
    xs = range(len(rows))
    axes[2].bar(
        [x - width / 2 for x in xs],
        [r["w3_ack_latency_us"]["p50_us"] for r in rows],
        width,
        label="W3 ack p50",
    )
    axes[2].bar(
        [x + width / 2 for x in xs],
        [r["w4_e2e_latency_us"]["p99_us"] for r in rows],
        width,
        label="W4 e2e p99",
    )
    axes[2].set_xticks(list(xs), names)
    axes[2].set_yscale("log")
    axes[2].set_title("latency (us, log scale, lower is better)")
    axes[2].legend()
    for axis in axes:
        axis.tick_params(axis="x", rotation=30)
    fig.tight_layout()
    fig.savefig(CHART, dpi=100)


def write_doc(section: str) -> None:
    text = DOC.read_text()
    block = f"{BEGIN}\n{section}\n{END}"
    if BEGIN in text:
        text = re.sub(re.escape(BEGIN) + ".*?" + re.escape(END), lambda _: block, text, flags=re.S)
    else:
        text = text.rstrip("\n") + "\n\n" + block + "\n"
    DOC.write_text(text)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--systems", default="conveyor,redis,nats,rabbitmq-quorum,rabbitmq-classic")
    parser.add_argument("--count", type=int, default=200_000)
    parser.add_argument("--w5-count", type=int, default=1_000_000)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--e2e-seconds", type=float, default=30.0)
    parser.add_argument("--raw", type=Path, default=ROOT / "bench" / "results.jsonl")
    parser.add_argument("--no-docs", action="store_true")
    parser.add_argument("--from-raw", type=Path, default=None, help="re-render from a raw file")
    args = parser.parse_args()
    systems = args.systems.split(",")
    raw: list[dict[str, Any]] = []
    if args.from_raw is not None:  # tables, docs and chart again from recorded runs
        raw = [json.loads(line) for line in args.from_raw.read_text().splitlines() if line]
        systems = [s for s in systems if any(r["system"] == s for r in raw)]
    elif "conveyor" in systems:
        for run in range(args.runs):
            result = conveyor_runs(args.count, args.e2e_seconds, args.w5_count)
            result["run"] = run
            print(json.dumps(result), flush=True)
            raw.append(result)
    peers = [s for s in systems if s != "conveyor"]
    if peers and args.from_raw is None:
        raw += peer_runs(peers, args.count, args.runs, args.e2e_seconds)
    if args.from_raw is None:
        args.raw.write_text("".join(json.dumps(r) + "\n" for r in raw))
    rows = [
        median_of([r for r in raw if r["system"] == s])
        for s in systems
        if any(r["system"] == s for r in raw)
    ]
    rendered = table(rows)
    print(rendered)
    if not args.no_docs:
        chart(rows)
        versions = "; ".join(f"{r['system']}: {r['version']}" for r in rows)
        write_doc(
            f"### Results (median of {args.runs} runs, {args.count:,} x 100 B, 8 keys)\n\n"
            f"{rendered}\n\n![throughput and latency per system](benchmarks-peers.png)\n\n"
            f"Machine: {platform.machine()}, {platform.platform(terse=True)}, Python "
            f"{platform.python_version()}. Versions: {versions}.\n\n"
            f"Command: `python bench/run_all.py --count {args.count} --runs {args.runs} "
            f"--e2e-seconds {args.e2e_seconds:g} --w5-count {args.w5_count}` "
            "(`make bench` runs the defaults); raw runs in `bench/results.jsonl`."
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
