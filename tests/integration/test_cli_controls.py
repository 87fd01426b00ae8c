"""The CLI's kcat- and rpk-style controls against real processes: consume -p/-o/-e/-c/-f,
produce -K/-H/-p/--compression streaming from a pipe with a summary, group seek per
partition, --output yaml, named profiles and --profile."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

import conveyor
from tests.integration.cluster import Cluster
from tests.integration.test_cli import conveyor as run
from tests.integration.test_cli import json_lines

T0 = 1_700_000_000_000


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    shared = Cluster(tmp_path_factory.mktemp("cli-controls"), broker_count=1).start()
    try:
        with conveyor.Admin(shared.url) as admin:
            admin.create_topic("events", partitions=2, replication_factor=1)
        with conveyor.Producer(shared.url, linger_ms=0) as producer:
            for i in range(10):  # partition i % 2, offset i // 2, time T0 + i s
                producer.send(
                    "events", f"v{i}", key=f"k{i}", partition=i % 2, timestamp_ms=T0 + i * 1000
                ).result(10)
        yield shared
    finally:
        shared.stop()


def test_consume_a_partition_from_an_offset_to_its_end_with_a_format(cluster: Cluster) -> None:
    shown = run(
        cluster.url, "consume", "events", "-p", "1", "-o", "2", "-e", "-f", "%p:%o:%k=%s\\n"
    )
    assert shown.returncode == 0, shown.stderr
    assert shown.stdout.splitlines() == ["1:2:k5=v5", "1:3:k7=v7", "1:4:k9=v9"]
    tail = run(cluster.url, "consume", "events", "-o", "-1", "-e", "--json")
    assert sorted((m["partition"], m["value"]) for m in json_lines(tail.stdout)) == [
        (0, "v8"),
        (1, "v9"),
    ]
    timed = run(cluster.url, "consume", "events", "-p", "0", "-o", f"@{T0 + 5_500}", "-e")
    assert timed.stdout.splitlines() == ["k6\tv6", "k8\tv8"]
    counted = run(cluster.url, "consume", "events", "-o", "beginning", "-c", "3", "--json")
    assert len(json_lines(counted.stdout)) == 3
    refused = run(cluster.url, "consume", "events", "-o", "stored", "-e")
    assert refused.returncode == 1 and "--group" in refused.stderr
    bad = run(cluster.url, "consume", "events", "-o", "sometime")
    assert bad.returncode == 2 and "beginning, end" in bad.stderr


def test_produce_keys_headers_partition_and_compression_from_stdin(cluster: Cluster) -> None:
    sent = run(
        cluster.url,
        "produce",
        "events",
        "-K",
        ":",
        "-H",
        "source=cli",
        "-p",
        "0",
        "--compression",
        "gzip",
        "--json",
        stdin="a:one\nb:two\nno key here\n",
    )
    assert sent.returncode == 0, sent.stderr
    acks = json_lines(sent.stdout)
    assert [a["partition"] for a in acks] == [0, 0, 0]
    assert [a["offset"] for a in acks] == sorted(a["offset"] for a in acks)  # input order
    assert "3 sent, 3 acknowledged, 0 failed" in sent.stderr
    with conveyor.Consumer(cluster.url) as consumer:
        consumer.assign([("events", 0, acks[0]["offset"])])
        got: list[conveyor.Message] = []
        deadline = time.monotonic() + 20
        while len(got) < 3 and time.monotonic() < deadline:
            got += consumer.poll(timeout=0.2)
    assert [(m.key, m.value, m.headers) for m in got] == [
        (b"a", b"one", (("source", b"cli"),)),
        (b"b", b"two", (("source", b"cli"),)),
        (None, b"no key here", (("source", b"cli"),)),
    ]


def test_produce_acknowledges_each_line_of_an_open_pipe(cluster: Cluster) -> None:
    """As with ``tail -f log | conveyor produce``: stdin stays open, each line's
    acknowledgement is printed before the next line is written."""
    env = dict(os.environ, CONVEYOR_URL=cluster.url)
    child = subprocess.Popen(
        [sys.executable, "-m", "conveyor", "produce", "events", "-p", "1"],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )
    assert child.stdin is not None and child.stdout is not None
    try:
        for i in range(3):
            child.stdin.write(f"line {i}\n")
            child.stdin.flush()
            ack = child.stdout.readline()  # blocks until that very line is acknowledged
            assert ack.startswith("events[1]@"), ack
        child.stdin.close()
        assert child.wait(30) == 0
        assert child.stderr is not None
        assert "3 sent, 3 acknowledged, 0 failed" in child.stderr.read()
    finally:
        if child.poll() is None:
            child.kill()
            child.wait(10)
        for stream in (child.stdout, child.stderr):
            if stream is not None:
                stream.close()


def test_group_seek_per_partition_and_yaml_output(cluster: Cluster) -> None:
    seek = run(
        cluster.url, "group", "seek", "readers", "-t", "events", "-p", "1", "--to", "3", "--json"
    )
    assert seek.returncode == 0, seek.stderr
    assert [(o["partition"], o["offset"]) for o in json.loads(seek.stdout)["offsets"]] == [(1, 3)]
    described = run(cluster.url, "topic", "describe", "events", "--output", "yaml")
    assert described.returncode == 0, described.stderr
    document = yaml.safe_load(described.stdout)
    assert document["name"] == "events" and len(document["partitions"]) == 2
    as_json = run(cluster.url, "topic", "describe", "events", "--output", "json")
    assert json.loads(as_json.stdout)["name"] == "events"
    listed = run(cluster.url, "group", "list", "--output", "yaml")
    assert "readers" in {g["group"] for g in yaml.safe_load(listed.stdout)}
    deleted = run(cluster.url, "group", "delete", "readers")
    assert deleted.returncode == 0, deleted.stderr
    listed = run(cluster.url, "group", "list", "--json")
    assert "readers" not in {g["group"] for g in json.loads(listed.stdout)}
    with conveyor.Consumer(cluster.url, "events", group_id="busy") as member:
        deadline = time.monotonic() + 20
        while not member.assignment() and time.monotonic() < deadline:
            member.poll(timeout=0.2)
        busy = run(cluster.url, "group", "delete", "busy")
        assert busy.returncode == 1 and "GROUP_NOT_EMPTY" in busy.stderr


def test_profiles_name_a_cluster_and_flags_still_win(cluster: Cluster, tmp_path: Path) -> None:
    env = {"CONVEYOR_PROFILES_DIR": str(tmp_path / "profiles"), "CONVEYOR_URL": ""}

    def cli(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "conveyor", *args],
            capture_output=True,
            text=True,
            env=dict(os.environ, **env),
            timeout=60,
            check=False,
        )

    token = tmp_path / "token"
    token.write_text("cvt_unused\n")
    added = cli("profile", "add", "local", "--url", cluster.url, "--token-file", str(token))
    assert added.returncode == 0, added.stderr
    assert (tmp_path / "profiles" / "local.toml").stat().st_mode & 0o777 == 0o600
    assert cli("topic", "list", "--profile", "local", "--json").returncode == 0
    assert cli("--profile", "local", "topic", "list").returncode == 0
    unused = cli("topic", "list")  # no profile chosen, no URL: the default URL, nobody there
    assert unused.returncode == 1
    assert cli("profile", "use", "local").returncode == 0
    assert "events" in cli("topic", "list", "--json").stdout  # the default profile
    wrong = cli("topic", "list", "--url", "http://127.0.0.1:9")  # a flag wins over it
    assert wrong.returncode == 1
    bad = cli("profile", "add", "broken", "--url", "notaurl")
    assert bad.returncode == 2 and "url" in bad.stderr
    assert not (tmp_path / "profiles" / "broken.toml").exists()
    listed = json.loads(cli("profile", "list", "--json").stdout)
    assert listed == [{"name": "local", "default": True, "url": cluster.url}]
    assert cli("profile", "remove", "local").returncode == 0
    assert "no profile" in cli("topic", "list", "--profile", "local").stderr
