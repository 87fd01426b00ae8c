"""``conveyor bench produce|consume|e2e --local 1`` end to end, with tiny counts: each
starts its own cluster, runs real producer and consumer processes, and its ``--json``
has the fields docs/benchmarks.md promises."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

THROUGHPUT_FIELDS = {"messages", "payload_bytes", "seconds", "msg_per_s", "mb_per_s", "errors"}
LATENCY_FIELDS = {"count", "p50_us", "p95_us", "p99_us", "max_us", "mean_us"}


def bench(tmp_path: Path, *args: str) -> dict[str, Any]:
    completed = subprocess.run(
        [sys.executable, "-m", "conveyor", "bench", *args, "--local", "1", "--dir", str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert completed.returncode == 0, completed.stderr[-4000:]
    result: dict[str, Any] = json.loads(completed.stdout)
    assert result["errors"] == 0
    assert result["brokers"] == 1
    assert set(result["machine"]) >= {"cpu_count", "python_version"}
    assert list(tmp_path.iterdir()) == []  # the local cluster's directory is removed
    return result


def check_latency(summary: dict[str, Any], samples: int) -> None:
    assert set(summary) == LATENCY_FIELDS
    assert summary["count"] == samples
    assert 0 < summary["p50_us"] <= summary["p95_us"] <= summary["p99_us"] <= summary["max_us"]


def test_produce(tmp_path: Path) -> None:
    result = bench(tmp_path, "produce", "--count", "3000", "--sample-every", "10", "--json")
    produce = result["produce"]
    assert set(produce) >= THROUGHPUT_FIELDS
    assert produce["messages"] == 3000
    assert produce["payload_bytes"] == 300_000
    assert produce["msg_per_s"] > 0
    check_latency(result["produce_latency_us"], 300)
    assert result["consume"] is None
    assert result["e2e_latency_us"] is None


def test_consume_with_competing_consumers(tmp_path: Path) -> None:
    result = bench(
        tmp_path, "consume", "--count", "3000", "--partitions", "4", "--consumers", "2", "--json"
    )
    assert result["produce"]["messages"] == 3000  # the fill
    consume = result["consume"]
    assert set(consume) >= THROUGHPUT_FIELDS
    assert consume["messages"] == 3000  # each record read once, by one of the two
    assert consume["payload_bytes"] == 300_000


def test_e2e_latency_of_every_message(tmp_path: Path) -> None:
    result = bench(
        tmp_path, "e2e", "--rate", "500", "--duration", "1", "--consumers", "2", "--json"
    )
    sent = result["produce"]["messages"]
    assert sent == 500
    assert result["consume"]["messages"] == sent
    check_latency(result["e2e_latency_us"], sent)


def test_conveyor_consumer_over_kafka(tmp_path: Path) -> None:
    """``--client conveyor-kafka``: the consumers are Conveyor's ``Consumer`` over the Kafka
    listeners, with ``poll_batch`` under ``--batch-api`` (from the log start) and ``poll``
    (from the end, each value's timestamp read)."""
    common = ("--client", "conveyor-kafka", "--partitions", "4", "--consumers", "2", "--json")
    result = bench(tmp_path, "consume", "--count", "3000", "--batch-api", *common)
    assert result["consume"]["messages"] == 3000
    result = bench(tmp_path, "e2e", "--rate", "500", "--duration", "1", *common)
    assert result["consume"]["messages"] == result["produce"]["messages"] == 500
    check_latency(result["e2e_latency_us"], 500)


def test_sequential_sends_time_every_ack(tmp_path: Path) -> None:
    result = bench(
        tmp_path, "produce", "--count", "50", "--sequential", "--linger-ms", "0", "--json"
    )
    check_latency(result["produce_latency_us"], 50)


@pytest.mark.parametrize("args", [["--count", "0"], ["--rate", "0"]])
def test_bad_arguments_exit_2(tmp_path: Path, args: list[str]) -> None:
    completed = subprocess.run(
        [sys.executable, "-m", "conveyor", "bench", "produce", "--local", "1", *args],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert completed.returncode == 2
    assert "is not >= 1" in completed.stderr  # refused before any cluster starts
