"""W1 over Conveyor's two client transports in one run: the producer over HTTP against the
producer over the brokers' Kafka listeners (``transport="kafka"``, issue 19).

1,000,000 x 100 B, 8 keys, acks=all, fsync before ack, 1 broker (``conveyor bench produce
--local 1``, a fresh cluster per run), rounds alternating the transports so that load drifts
on a shared machine hit both alike; medians of --runs, with the load average around each.

    nice -n 10 .venv/bin/python scripts/bench_transport.py [--count 1000000] [--runs 3]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
from typing import Any

CLIENTS = {"http": "conveyor", "kafka": "conveyor-kafka"}


def w1(client: str, count: int) -> dict[str, Any]:
    argv = [
        sys.executable, "-m", "conveyor", "bench", "produce", "--local", "1",
        "--count", str(count), "--message-bytes", "100", "--keys", "8", "--acks", "all",
        "--client", client, "--json",
    ]  # fmt: skip
    done = subprocess.run(argv, capture_output=True, text=True, check=False, timeout=3600)
    if done.returncode != 0:
        raise RuntimeError(f"{' '.join(argv)} failed:\n{done.stderr[-3000:]}")
    result: dict[str, Any] = json.loads(done.stdout)
    return result


def load() -> str:
    return " ".join(f"{x:.1f}" for x in os.getloadavg())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--count", type=int, default=1_000_000)
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args()
    rates: dict[str, list[float]] = {name: [] for name in CLIENTS}
    cpu_us: dict[str, list[float]] = {name: [] for name in CLIENTS}
    broker_us: dict[str, list[float]] = {name: [] for name in CLIENTS}
    for round_index in range(args.runs):
        for name, client in CLIENTS.items():
            before = load()
            result = w1(client, args.count)
            produce = result["produce"]
            assert result["errors"] == 0, result["error_messages"]
            rates[name].append(produce["msg_per_s"])
            cpu_us[name].append(produce["client_cpu_s"] / args.count * 1e6)
            broker_us[name].append((result["broker_cpu_s"] or 0) / args.count * 1e6)
            print(
                f"round {round_index + 1} {name:5}: {produce['msg_per_s']:>10,.0f} msg/s, "
                f"client CPU {cpu_us[name][-1]:.2f} us/msg, broker CPU "
                f"{broker_us[name][-1]:.2f} us/msg (load {before} -> {load()})",
                flush=True,
            )
    for name in CLIENTS:
        print(
            f"median {name:5}: {statistics.median(rates[name]):>10,.0f} msg/s, client CPU "
            f"{statistics.median(cpu_us[name]):.2f} us/msg, broker CPU "
            f"{statistics.median(broker_us[name]):.2f} us/msg"
        )
    ratio = statistics.median(rates["kafka"]) / statistics.median(rates["http"])
    print(f"kafka / http: {ratio:.2f}x")


if __name__ == "__main__":
    main()
