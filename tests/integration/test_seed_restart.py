"""The seed's ``pull()`` across runs of a script, as a new user runs it twice in a row: the
second run gets the waiting messages at once whether the first exited normally (it left
the group at exit) or was killed with ``CONVEYOR_GROUP_INSTANCE_ID`` set (static
membership: the second run replaces it)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.integration.cluster import Cluster

SCRIPT = """
import sys, time
import conveyor

conveyor.push("k", sys.argv[1])
started = time.monotonic()
got = conveyor.pull()
while got is not None and got[1] != sys.argv[1].encode():  # earlier runs' messages first
    got = conveyor.pull()
print("pulled", got, round(time.monotonic() - started, 2), flush=True)
if sys.argv[2] == "hang":
    time.sleep(600)  # killed here: still a member of the group
"""


@pytest.fixture(scope="module")
def seed_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    c = Cluster(tmp_path_factory.mktemp("seed-restart"), broker_count=1).start()
    try:
        yield c
    finally:
        c.stop()


def run(cluster: Cluster, value: str, mode: str, **env: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-c", SCRIPT, value, mode],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "CONVEYOR_URL": cluster.url, **env},
    )


def finish(process: subprocess.Popen[str]) -> int:
    """Wait for the end of ``process`` (closing its pipes); its exit code."""
    process.communicate(timeout=60)
    return process.returncode


def pulled_within(process: subprocess.Popen[str], value: str) -> float:
    """How long ``pull()`` took to return ``value`` in ``process``."""
    assert process.stdout is not None
    line = process.stdout.readline()
    assert line.startswith("pulled"), (line, process.stderr.read() if process.stderr else "")
    assert f"b'{value}'" in line, line
    return float(line.split()[-1])


def test_a_second_run_pulls_at_once_after_the_first_exited(seed_cluster: Cluster) -> None:
    first = run(seed_cluster, "run-1", "exit")
    assert pulled_within(first, "run-1") < 5
    assert finish(first) == 0  # the snippet ends: nothing keeps the interpreter alive
    second = run(seed_cluster, "run-2", "exit")
    # Without leaving the group at exit, run-1's member kept the partitions until its
    # session timed out (10 s) and pull() said None meanwhile.
    assert pulled_within(second, "run-2") < 3
    assert finish(second) == 0


def test_a_run_killed_without_exiting_is_replaced_at_once_by_its_static_restart(
    seed_cluster: Cluster,
) -> None:
    env = {"CONVEYOR_GROUP_INSTANCE_ID": "worker-1"}
    first = run(seed_cluster, "killed-1", "hang", **env)
    try:
        assert pulled_within(first, "killed-1") < 5
    finally:
        first.send_signal(signal.SIGKILL)  # no atexit: the member stays in the group
        finish(first)
    started = time.monotonic()
    second = run(seed_cluster, "killed-2", "exit", **env)
    assert pulled_within(second, "killed-2") < 3
    assert finish(second) == 0
    assert time.monotonic() - started < 10  # well inside the 10 s session timeout


def test_without_an_instance_id_pull_waits_for_a_killed_members_partitions(
    seed_cluster: Cluster, tmp_path: Path
) -> None:
    """The documented limit: the killed run's partitions come back when its session
    times out (10 s); pull() returns None after 5 s meanwhile, never earlier."""
    first = run(seed_cluster, "lost-1", "hang")
    try:
        assert pulled_within(first, "lost-1") < 5
    finally:
        first.send_signal(signal.SIGKILL)
        finish(first)
    probe = subprocess.run(
        [
            sys.executable,
            "-c",
            "import time, conveyor\n"
            "conveyor.push('k', 'lost-2')\n"
            "t = time.monotonic(); got = conveyor.pull()\n"
            "print(got, round(time.monotonic() - t, 2))\n"
            "while got is None or got[1] != b'lost-2': got = conveyor.pull()\n"
            "print('done', round(time.monotonic() - t, 2))\n",
        ],
        capture_output=True,
        text=True,
        env={**os.environ, "CONVEYOR_URL": seed_cluster.url},
        timeout=60,
        check=False,
    )
    assert probe.returncode == 0, probe.stderr
    first_line, done = probe.stdout.splitlines()
    # every partition is still given to the killed member: none for pull() yet, and it
    # waited its 5 s rather than answer "nothing waiting" at once
    assert first_line.startswith("None") and float(first_line.split()[-1]) >= 4.5, first_line
    assert float(done.split()[-1]) < 20
