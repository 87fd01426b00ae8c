"""The seed's ``pull()`` across runs of a script, as a new user runs it twice in a row
(over the brokers' Kafka listeners, the client's one data path): the second run gets
the waiting messages at once when the first exited normally (it left the group at
exit; a static member, with ``CONVEYOR_GROUP_INSTANCE_ID``, left keeping its place for
its next run), and when the first was killed without exiting, once that run's session
has timed out (10 s). A killed static member's restart waits for that session too
(KIP-848's rule)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from typing import NamedTuple

import pytest

import conveyor
from conveyor.protocol.kafka.apis import ApiKey
from tests.integration.cluster import Cluster
from tests.kafka.wire import KafkaWire

SESSION_TIMEOUT_S = 10  # the seed consumer's, and the coordinator's for KIP-848 members
SCRIPT = """
import sys, time
import conveyor

conveyor.push("k", sys.argv[1])
started = time.monotonic()
got = conveyor.pull()
while got is None or got[1] != sys.argv[1].encode():  # earlier runs' messages first
    assert time.monotonic() - started < 60, got
    got = conveyor.pull()
print("pulled", got, round(time.monotonic() - started, 2), flush=True)
if sys.argv[2] == "hang":
    time.sleep(600)  # killed here: still a member of the group
"""


class Seed(NamedTuple):
    cluster: Cluster


@pytest.fixture(scope="module")
def seed(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Seed]:
    c = Cluster(tmp_path_factory.mktemp("seed-restart"), broker_count=1).start()
    try:
        yield Seed(c)
    finally:
        c.stop()


def script_env(seed: Seed, **env: str) -> dict[str, str]:
    return {
        **os.environ,
        "CONVEYOR_URL": seed.cluster.url,
        **env,
    }


def run(seed: Seed, value: str, mode: str, **env: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-c", SCRIPT, value, mode],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=script_env(seed, **env),
    )


def leave_for_good(seed: Seed, instance: str) -> None:
    """A static run that exited left its place waiting for its next run (epoch -2) for a
    session timeout; the next test starts with an empty group: that member leaves for good
    (epoch -1 under its member id, Kafka's rule), as an operator would make it."""
    with conveyor.Admin(seed.cluster.url) as admin:
        waiting = [m for m in admin.describe_group("default").members if m.instance_id]
    broker = seed.cluster.brokers[1]
    assert broker.kafka_port is not None
    with KafkaWire("127.0.0.1", broker.kafka_port, broker.ssl_context()) as wire:
        for member in waiting:
            assert member.instance_id == f"{instance}-pull", waiting
            reply = wire.call(
                ApiKey.CONSUMER_GROUP_HEARTBEAT,
                0,
                group_id="default",
                member_id=member.member_id,
                member_epoch=-1,
                instance_id=member.instance_id,
                rack_id=None,
                rebalance_timeout_ms=-1,
                subscribed_topic_names=None,
                server_assignor=None,
                topic_partitions=None,
            )
            assert reply.error_code == 0, reply


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


@pytest.mark.parametrize("instance", [None, "worker-0"])
def test_a_second_run_pulls_at_once_after_the_first_exited(
    seed: Seed, instance: str | None
) -> None:
    env = {"CONVEYOR_GROUP_INSTANCE_ID": instance} if instance else {}
    first = run(seed, f"run-1-{instance}", "exit", **env)
    assert pulled_within(first, f"run-1-{instance}") < 5
    assert finish(first) == 0  # the snippet ends: nothing keeps the interpreter alive
    second = run(seed, f"run-2-{instance}", "exit", **env)
    # Without leaving the group at exit, run-1's member kept the partitions until its
    # session timed out (10 s) and pull() said None meanwhile. A static member leaves
    # keeping its place (KIP-848's epoch -2), which the next run with its id takes.
    assert pulled_within(second, f"run-2-{instance}") < 3
    assert finish(second) == 0
    if instance is not None:
        leave_for_good(seed, instance)


def test_a_killed_static_run_is_replaced_by_its_restart(seed: Seed) -> None:
    env = {"CONVEYOR_GROUP_INSTANCE_ID": "worker-1"}
    first = run(seed, "killed-1", "hang", **env)
    try:
        assert pulled_within(first, "killed-1") < 5
    finally:
        first.send_signal(signal.SIGKILL)  # no atexit: the member stays in the group
        finish(first)
    killed = time.monotonic()
    second = run(seed, "killed-2", "exit", **env)
    waited_s = pulled_within(second, "killed-2")
    assert finish(second) == 0
    # UNRELEASED_INSTANCE_ID until the killed one's session ended, then its partitions
    assert waited_s > 0 and time.monotonic() - killed < SESSION_TIMEOUT_S + 10
    leave_for_good(seed, "worker-1")


def test_without_an_instance_id_pull_waits_for_a_killed_members_partitions(seed: Seed) -> None:
    """The documented limit: the killed run's partitions come back when its session
    times out (10 s); pull() returns None after 5 s meanwhile, never earlier."""
    # the probe starts and pushes before the kill, so its first pull() begins at the kill,
    # well inside the killed run's session, however slowly processes start under load
    probe = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import sys, time, conveyor\n"
            "sys.stdin.readline()\n"
            "conveyor.push('k', 'lost-2')\n"
            "print('pushed', flush=True)\n"
            "sys.stdin.readline()\n"
            "t = time.monotonic(); got = conveyor.pull()\n"
            "print(got, round(time.monotonic() - t, 2), flush=True)\n"
            "while got is None or got[1] != b'lost-2': got = conveyor.pull()\n"
            "print('done', round(time.monotonic() - t, 2), flush=True)\n",
        ],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=script_env(seed),
    )
    assert probe.stdin is not None and probe.stdout is not None
    try:
        first = run(seed, "lost-1", "hang")
        try:
            assert pulled_within(first, "lost-1") < 5
            probe.stdin.write("push\n")  # after lost-1 was pulled: lost-1 stays uncommitted
            probe.stdin.flush()
            assert probe.stdout.readline() == "pushed\n"
        finally:
            first.send_signal(signal.SIGKILL)
            finish(first)
        out, err = probe.communicate("pull\n", timeout=60)
    finally:
        probe.kill()
    assert probe.returncode == 0, err
    first_line, done = out.splitlines()
    # every partition is still given to the killed member: none for pull() yet, and it
    # waited its 5 s rather than answer "nothing waiting" at once
    assert first_line.startswith("None") and float(first_line.split()[-1]) >= 4.5, first_line
    assert float(done.split()[-1]) < 20
