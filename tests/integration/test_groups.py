"""Consumer groups end to end: real coordinator, brokers and member processes.

Members are subprocesses (``group_member.py``) so that SIGKILL and SIGSTOP are real.
"""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

import conveyor
from tests.integration.cluster import Cluster

ROOT = Path(__file__).resolve().parents[2]


@dataclass
class MemberProc:
    """One member process; its stdout (JSON lines) goes to a file read on demand."""

    path: Path
    process: subprocess.Popen[bytes]
    lines: list[dict[str, Any]] = field(default_factory=list)
    _read: int = 0

    @classmethod
    def start(cls, cluster: Cluster, topic: str, group: str, path: Path, *extra: str) -> MemberProc:
        with path.open("wb") as out, path.with_suffix(".err").open("wb") as err:
            process = subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "tests.integration.group_member",
                    cluster.url,
                    topic,
                    group,
                    *extra,
                ],
                cwd=ROOT,
                stdout=out,
                stderr=err,
            )
        return cls(path, process)

    def read(self) -> list[dict[str, Any]]:
        data = self.path.read_bytes()
        complete = data[: data.rfind(b"\n") + 1]
        self.lines = [json.loads(line) for line in complete.splitlines() if line]
        return self.lines

    def processed(self) -> list[dict[str, Any]]:
        return [line for line in self.read() if "k" in line]

    def stop(self, timeout_s: float = 20.0) -> None:
        self.process.send_signal(signal.SIGTERM)
        self.process.wait(timeout_s)

    def kill(self) -> None:
        self.process.kill()
        self.process.wait(5)


@pytest.fixture
def members() -> Iterator[list[MemberProc]]:
    started: list[MemberProc] = []
    yield started
    for member in started:
        if member.process.poll() is None:
            member.process.send_signal(signal.SIGCONT)
            member.kill()


def produce(cluster: Cluster, topic: str, count: int, keys: int, start: int = 0) -> None:
    """Values ``key:n`` with n the message's sequence number within its key."""
    with conveyor.Producer(cluster.url) as producer:
        for i in range(start, start + count):
            key = f"key-{i % keys}"
            producer.send(topic, f"{key}:{i // keys}", key=key)
        producer.flush()


def make_topic(cluster: Cluster, name: str, partitions: int) -> None:
    with conveyor.Admin(cluster.url) as admin:
        admin.create_topic(name, partitions=partitions)


def wait_until(check: Callable[[], bool], timeout_s: float, what: str) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if check():
            return
        time.sleep(0.1)
    raise AssertionError(f"timed out after {timeout_s} s waiting for {what}")


def union(procs: list[MemberProc]) -> list[dict[str, Any]]:
    return [line for p in procs for line in p.processed()]


def distinct(procs: list[MemberProc]) -> set[tuple[int, int]]:
    return {(line["p"], line["o"]) for line in union(procs)}


def check_key_order(lines: list[dict[str, Any]]) -> None:
    """Per key, the first time each value is seen comes in sequence order (a redelivered
    message may repeat, but a key's messages never go backwards past a new one)."""
    seen: dict[str, int] = {}
    for line in lines:
        key, n = line["v"].rsplit(":", 1)
        n_int = int(n)
        if n_int > seen.get(key, -1):
            assert n_int == seen.get(key, -1) + 1, f"{key}: {n_int} after {seen.get(key)}"
            seen[key] = n_int


def test_two_consumers_split_a_group_each_message_once_per_key_order(
    cluster: Cluster, members: list[MemberProc], tmp_path: Path
) -> None:
    """The seed's consumer-group test: 1,000 messages over 4 keys, two members."""
    make_topic(cluster, "seed", partitions=4)
    a = MemberProc.start(cluster, "seed", "g", tmp_path / "a.jsonl")
    b = MemberProc.start(cluster, "seed", "g", tmp_path / "b.jsonl")
    members += [a, b]
    wait_until(lambda: _stable_with(cluster, "g", 2), 20, "two members in a stable group")
    produce(cluster, "seed", 1_000, keys=4)
    wait_until(lambda: len(distinct([a, b])) == 1_000, 30, "every message consumed")
    a.stop()
    b.stop()
    got_a, got_b = a.processed(), b.processed()
    assert len(got_a) + len(got_b) == 1_000  # exactly once: no duplicates
    assert got_a and got_b  # both received some
    assert not {line["k"] for line in got_a} & {line["k"] for line in got_b}
    for got in (got_a, got_b):
        check_key_order(got)


def _describe(cluster: Cluster, group: str) -> dict[str, Any]:
    import urllib.request

    with urllib.request.urlopen(f"{cluster.url}/v1/groups/{group}", timeout=5) as response:
        body: dict[str, Any] = json.loads(response.read())
    return body


def _stable_with(cluster: Cluster, group: str, count: int) -> bool:
    description = _describe(cluster, group)
    return description["state"] == "stable" and len(description.get("members", [])) == count
