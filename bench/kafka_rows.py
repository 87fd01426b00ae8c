"""One round of ``make bench``'s Kafka-protocol rows: Conveyor's client over the brokers'
Kafka listeners (with ``send``/``poll``, and with the batch APIs ``send_many``/
``poll_batch``) and confluent-kafka (librdkafka) against the same Conveyor broker build,
workload by workload, the clients' order rotating from round to round so that load drifts
hit them alike.

Each workload but W2 is one ``conveyor bench ... --local N`` (a fresh cluster, stopped
afterwards; broker CPU from /proc); W2 is ``bench/w2_group.py`` (one cluster, one topic
filled once, then a group of 4 members of each client reading it all, in turn).

    W1      produce --local 1 --count N, 8 partitions, batch 512 KiB, linger 5 ms
    W1 RF=3 the same on --local 3 --replication-factor 3
    W2      4 group members, 16 partitions, 64 keys
    W3      produce --local 1 --count 2000 --sequential --linger-ms 0
    W4      e2e --local 3 --replication-factor 3 --partitions 8 --rate R --linger-ms 1
            --fetch-max-wait-ms 100, R = 5,000 and 50,000 msg/s

All with 100 B values, 8 keys (W2: 64), acks=all, the brokers' default fsync before ack.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import report
import w2_group

ROOT = Path(__file__).resolve().parent.parent
COMMON = ("--message-bytes", "100", "--keys", "8", "--acks", "all")
W3_COUNT = 2_000
BENCH_TIMEOUT_S = 1800

# system -> (conveyor bench --client, extra arguments, W2 member kind)
CLIENTS: dict[str, tuple[str, tuple[str, ...], str]] = {
    report.CONVEYOR: ("", (), "conveyor"),
    report.CONVEYOR_BATCH: ("", ("--batch-api",), "conveyor-batch"),
    report.CONFLUENT: ("confluent-kafka", (), "confluent-kafka"),
}


def conveyor_client() -> tuple[str, str]:
    """(``--client`` value, transport) for Conveyor's own client over Kafka: the
    ``conveyor-kafka`` choice while the client still has an HTTP transport, else plain
    ``conveyor`` (Kafka is then its only data path)."""
    done = subprocess.run(
        [sys.executable, "-m", "conveyor", "bench", "produce", "--help"],
        capture_output=True,
        text=True,
        check=True,
    )
    if "conveyor-kafka" in done.stdout:
        return "conveyor-kafka", "kafka"
    return "conveyor", "kafka"


def bench(*args: str) -> dict[str, Any]:
    argv = [sys.executable, "-m", "conveyor", "bench", *args, *COMMON, "--json"]
    done = subprocess.run(
        argv, capture_output=True, text=True, check=False, timeout=BENCH_TIMEOUT_S
    )
    if done.returncode != 0 and not done.stdout.startswith("{"):
        raise RuntimeError(f"{' '.join(argv)} failed:\n{done.stderr[-3000:]}")
    result: dict[str, Any] = json.loads(done.stdout)
    return result


def versions(conveyor_version: str) -> dict[str, str]:
    import confluent_kafka

    librdkafka = confluent_kafka.libversion()[0]
    confluent = f"confluent-kafka {confluent_kafka.__version__} (librdkafka {librdkafka})"
    return {
        report.CONVEYOR: conveyor_version,
        report.CONVEYOR_BATCH: conveyor_version,
        report.CONFLUENT: f"{confluent} on {conveyor_version}",
    }


def rotated(items: list[str], by: int) -> list[str]:
    shift = by % len(items)
    return items[shift:] + items[:shift]


def one_round(  # noqa: PLR0917 -- the round's settings, each a command-line option
    run: int,
    systems: list[str],
    count: int,
    e2e_seconds: float,
    w4_rates: list[int],
    version: str,
) -> list[dict[str, Any]]:
    """One raw row per system in ``systems`` (a subset of ``CLIENTS``)."""
    conveyor, transport = conveyor_client()
    names = versions(version)
    rows: dict[str, dict[str, Any]] = {}
    for system in systems:
        client = CLIENTS[system][0] or conveyor
        rows[system] = {
            "system": system,
            "version": names[system],
            "run": run,
            "count": count,
            "client": client,
            "transport": transport if client == conveyor else "kafka",
            "errors": 0,
            "load_before": os.getloadavg()[0],
        }
    started = time.monotonic()

    def each(wanted: list[str]) -> list[tuple[str, str, tuple[str, ...]]]:
        picked = [s for s in rotated(systems, run) if s in wanted]
        return [(s, CLIENTS[s][0] or conveyor, CLIENTS[s][1]) for s in picked]

    for system, client, extra in each(list(CLIENTS)):
        _w1(rows[system], client, extra, count)
    for system, client, extra in each(list(CLIENTS)):
        _w1_rf3(rows[system], client, extra, count)
    for system, client, extra in each([report.CONVEYOR, report.CONFLUENT]):
        w3 = bench("produce", "--local", "1", "--count", str(W3_COUNT), "--sequential",
                   "--linger-ms", "0", "--client", client, *extra)  # fmt: skip
        rows[system]["w3_ack_latency_us"] = w3["produce_latency_us"]
        rows[system]["errors"] += w3["errors"]
    for rate in w4_rates:
        for system, client, extra in each([report.CONVEYOR, report.CONFLUENT]):
            _w4(rows[system], client, extra, rate, e2e_seconds)
    _w2(rows, rotated([s for s in systems if s in CLIENTS], run), count)
    for row in rows.values():
        row["load_after"] = os.getloadavg()[0]
        row["round_seconds"] = time.monotonic() - started
    return [rows[s] for s in systems]


def _w1(row: dict[str, Any], client: str, extra: tuple[str, ...], count: int) -> None:
    w1 = bench("produce", "--local", "1", "--count", str(count), "--client", client, *extra)
    messages = w1["produce"]["messages"]
    row["w1_produce_msg_per_s"] = w1["produce"]["msg_per_s"]
    row["w1_produce_ack_latency_us"] = w1["produce_latency_us"]
    row["w1_client_cpu_us_per_msg"] = w1["produce"]["client_cpu_s"] / messages * 1e6
    row["w1_broker_cpu_us_per_msg"] = (w1["broker_cpu_s"] or 0) / messages * 1e6
    row["errors"] += w1["errors"]


def _w1_rf3(row: dict[str, Any], client: str, extra: tuple[str, ...], count: int) -> None:
    w1 = bench("produce", "--local", "3", "--replication-factor", "3", "--count", str(count),
               "--client", client, *extra)  # fmt: skip
    row["w1_rf3_produce_msg_per_s"] = w1["produce"]["msg_per_s"]
    row["errors"] += w1["errors"]


def _w4(
    row: dict[str, Any], client: str, extra: tuple[str, ...], rate: int, seconds: float
) -> None:
    key = "w4_e2e_latency_us" if rate == 5_000 else f"w4_{rate // 1000}k_e2e_latency_us"
    argv = ("e2e", "--local", "3", "--replication-factor", "3", "--partitions", "8",
            "--rate", str(rate), "--duration", f"{seconds:g}", "--linger-ms", "1",
            "--fetch-max-wait-ms", "100", "--client", client, *extra)  # fmt: skip
    try:
        w4 = bench(*argv)
    except RuntimeError as first:
        # a failed run is recorded and tried once more, not the end of the whole table
        # (librdkafka's consumer has been seen not to learn a just-created RF=3 topic)
        row.setdefault("failures", []).append(f"{key}: {str(first)[-400:]}")
        try:
            w4 = bench(*argv)
        except RuntimeError as again:
            row["failures"].append(f"{key} (again): {str(again)[-400:]}")
            return
    row[key] = w4["e2e_latency_us"]
    sent, received = w4["produce"]["messages"], w4["consume"]["messages"]
    row[key.replace("latency_us", "lost")] = sent - received  # acknowledged, never read
    row["errors"] += w4["errors"] + max(0, sent - received)


def _w2(rows: dict[str, dict[str, Any]], order: list[str], count: int) -> None:
    from conveyor.bench.client import kafka_bootstrap
    from conveyor.bench.local import LocalCluster

    with LocalCluster(1) as cluster:
        bootstrap = kafka_bootstrap(cluster.url)
        fill_s = w2_group.fill(bootstrap, "w2", count)
        for index, system in enumerate(order):
            kind = CLIENTS[system][2]
            result = w2_group.group_round(
                kind, f"kafka://{bootstrap}", f"w2-{index}-{time.time_ns()}", "w2", count,
                cluster.broker_pids(),
            )  # fmt: skip
            row = rows[system]
            row["w2_consume_msg_per_s"] = result.msg_per_s
            row["w2_first_message_s"] = result.first_message_s  # go to the first message
            row["w2_members_cpu_us_per_msg"] = result.members_cpu_us_per_msg
            row["w2_broker_cpu_us_per_msg"] = result.servers_cpu_us_per_msg[0]
            row["w2_fill_s"] = fill_s
