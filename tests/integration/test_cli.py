"""The `conveyor` command against real processes: what a newcomer types in three terminals."""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from tests.integration.cluster import Cluster, free_port_block, http_ok, wait_for


def conveyor(
    url: str, *args: str, stdin: str | None = None, timeout: float = 60
) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ, CONVEYOR_URL=url)
    return subprocess.run(
        [sys.executable, "-m", "conveyor", *args],
        input=stdin,
        capture_output=True,
        text=True,
        env=env,
        timeout=timeout,
        check=False,
    )


def json_lines(text: str) -> list[dict[str, object]]:
    return [json.loads(line) for line in text.splitlines() if line.strip()]


def test_cli_produce_then_consume(cluster: Cluster) -> None:
    created = conveyor(cluster.url, "topic", "create", "greetings", "--partitions", "3", "--json")
    assert created.returncode == 0, created.stderr
    assert json.loads(created.stdout)["name"] == "greetings"

    produced = conveyor(
        cluster.url, "produce", "greetings", "--key", "k1", "hello", "world", "--json"
    )
    assert produced.returncode == 0, produced.stderr
    acks = json_lines(produced.stdout)
    assert [a["offset"] for a in acks] == [0, 1]
    assert acks[0]["partition"] == acks[1]["partition"]  # same key, same partition

    from_stdin = conveyor(
        cluster.url, "produce", "greetings", "--key", "k1", stdin="third\nfourth\n"
    )
    assert from_stdin.returncode == 0, from_stdin.stderr

    consumed = conveyor(
        cluster.url, "consume", "greetings", "--from-beginning", "--max", "4", "--json"
    )
    assert consumed.returncode == 0, consumed.stderr
    messages = json_lines(consumed.stdout)
    assert [m["value"] for m in messages] == ["hello", "world", "third", "fourth"]
    assert {m["key"] for m in messages} == {"k1"}

    # A record over the topic's limit: the limit and how to raise it, said once
    too_large = conveyor(cluster.url, "produce", "greetings", stdin="x" * 1_100_000 + "\n")
    assert too_large.returncode == 1
    assert too_large.stderr.count("exceeds the limit of 1048576 bytes") == 1, too_large.stderr
    assert "max_message_bytes" in too_large.stderr


def test_cli_group_resumes_from_committed_position(cluster: Cluster) -> None:
    assert (
        conveyor(cluster.url, "produce", "jobs", "--key", "a", "1", "2", "3", "4").returncode == 0
    )
    first = conveyor(
        cluster.url, "consume", "jobs", "--group", "g", "--from-beginning", "--max", "2"
    )
    assert first.returncode == 0, first.stderr
    assert first.stdout.split() == ["a", "1", "a", "2"]
    second = conveyor(cluster.url, "consume", "jobs", "--group", "g", "--max", "2")
    assert second.returncode == 0, second.stderr
    assert second.stdout.split() == ["a", "3", "a", "4"]


def test_cli_topic_admin_and_cluster_status(cluster: Cluster) -> None:
    assert conveyor(cluster.url, "topic", "create", "t1", "--partitions", "2").returncode == 0
    duplicate = conveyor(cluster.url, "topic", "create", "t1")
    assert duplicate.returncode == 1
    assert "TOPIC_ALREADY_EXISTS" in duplicate.stderr
    invalid = conveyor(cluster.url, "topic", "create", "bad/name")
    assert invalid.returncode == 1
    assert "INVALID_TOPIC" in invalid.stderr
    bad_config = conveyor(cluster.url, "topic", "create", "t2", "--config", "nope=1")
    assert bad_config.returncode == 1
    assert "INVALID_CONFIG" in bad_config.stderr

    listed = conveyor(cluster.url, "topic", "list", "--json")
    names = [t["name"] for t in json.loads(listed.stdout)]
    assert names == ["t1"]

    described = json.loads(conveyor(cluster.url, "topic", "describe", "t1", "--json").stdout)
    assert [p["partition"] for p in described["partitions"]] == [0, 1]
    assert all(p["leader"] == 1 for p in described["partitions"])

    human = conveyor(cluster.url, "topic", "describe", "t1")
    assert human.returncode == 0 and "t1" in human.stdout

    status = conveyor(cluster.url, "cluster", "status", "--json")
    assert status.returncode == 0, status.stderr
    body = json.loads(status.stdout)
    assert [b["broker_id"] for b in body["brokers"]] == [1]
    assert body["partitions"] == 2
    # at least the table: live state per broker, offline and under-replicated counts
    (broker,) = body["brokers"]
    assert broker["alive"] is True and {"leader_count", "replica_count", "url"} <= set(broker)
    assert body["offline_partitions"] == 0 and body["under_replicated_partitions"] == 0

    assert conveyor(cluster.url, "topic", "delete", "t1").returncode == 0
    gone = conveyor(cluster.url, "topic", "describe", "t1")
    assert gone.returncode == 1 and "UNKNOWN_TOPIC" in gone.stderr


def test_cli_reports_unreachable_coordinator(tmp_path: Path) -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    result = conveyor(f"http://127.0.0.1:{port}", "topic", "list")
    assert result.returncode == 1
    assert "NETWORK_ERROR" in result.stderr


@pytest.mark.slow
def test_dev_cluster_starts_serves_stops_and_resumes(tmp_path: Path) -> None:
    port = free_port_block(3)
    kafka_port = free_port_block(2)
    url = f"http://127.0.0.1:{port}"
    argv = [
        sys.executable,
        "-m",
        "conveyor",
        "dev",
        "--brokers",
        "2",
        "--port",
        str(port),
        "--kafka-port",
        str(kafka_port),
        "--data",
        str(tmp_path / "dev"),
    ]
    log_path = tmp_path / "dev.log"

    def start() -> subprocess.Popen[bytes]:
        with log_path.open("ab") as log:
            return subprocess.Popen(
                argv, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL
            )

    def all_ready() -> bool:
        return all(http_ok(f"http://127.0.0.1:{p}/readyz") for p in range(port, port + 3))

    dev = start()
    try:
        wait_for(all_ready, 60, "conveyor dev ready")
        assert conveyor(url, "produce", "demo", "--key", "x", "kept").returncode == 0
        dev.send_signal(signal.SIGINT)
        assert dev.wait(60) == 0, log_path.read_text()
        for p in range(port, port + 3):
            assert not http_ok(f"http://127.0.0.1:{p}/healthz")

        dev = start()
        wait_for(all_ready, 60, "conveyor dev ready again")
        consumed = conveyor(url, "consume", "demo", "--from-beginning", "--max", "1")
        assert consumed.returncode == 0, consumed.stderr
        assert consumed.stdout.split() == ["x", "kept"]
        output = log_path.read_text()
        assert "coordinator" in output and "broker-2" in output  # logs streamed, prefixed
        # each broker's Kafka listener, shown in the table, and the bootstrap in the hint
        bootstrap = f"127.0.0.1:{kafka_port},127.0.0.1:{kafka_port + 1}"
        assert f"kcat -b {bootstrap}" in output
        kcat = shutil.which("kcat")
        if kcat is not None:
            listing = subprocess.run(
                [kcat, "-b", bootstrap, "-L", "-t", "demo"],
                capture_output=True,
                text=True,
                timeout=30,
                check=True,
            )
            assert "2 brokers:" in listing.stdout and 'topic "demo"' in listing.stdout
    finally:
        if dev.poll() is None:
            dev.send_signal(signal.SIGINT)
            dev.wait(60)
