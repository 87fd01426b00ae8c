"""The seed's ``push``, ``pull`` and ``subscribe`` with nothing but the brokers' Kafka
listeners (``CONVEYOR_BOOTSTRAP_SERVERS``; ``CONVEYOR_URL`` points where nothing listens,
so no request can have gone over HTTP): a script as a user would run it."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator

import pytest

from tests.integration.cluster import Cluster, free_port

SCRIPT = """
import threading
import conveyor
from conveyor.client.seed import close_shared

for i in range(20):
    conveyor.push(f"k{i % 4}", f"v{i}")
pulled = []
while len(pulled) < 10:
    got = conveyor.pull()
    if got is not None:
        pulled.append(got[1].decode())
close_shared()  # leaves the group: the subscription gets every partition
rest, done = [], threading.Event()

def keep(key, value):
    rest.append(value.decode())
    if len(pulled) + len(rest) >= 20:
        done.set()

subscription = conveyor.subscribe(keep)
assert done.wait(60), (pulled, rest)
subscription.stop()
print(" ".join(pulled + rest))
"""


@pytest.fixture(scope="module")
def seed_kafka_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    c = Cluster(tmp_path_factory.mktemp("seed-kafka"), broker_count=1).start()
    try:
        yield c
    finally:
        c.stop()


def test_push_pull_and_subscribe_over_kafka_alone(seed_kafka_cluster: Cluster) -> None:
    cluster = seed_kafka_cluster
    if cluster.tls_dir is not None:
        pytest.skip("the seed functions take no TLS setting for Kafka listeners alone")
    env = {
        **os.environ,
        "CONVEYOR_URL": f"http://127.0.0.1:{free_port()}",  # nothing listens there
        "CONVEYOR_BOOTSTRAP_SERVERS": cluster.bootstrap,
    }
    done = subprocess.run(
        [sys.executable, "-c", SCRIPT],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    values = done.stdout.split()
    # each once (pulled ones were committed before the subscription joined), and per key
    # in push order
    assert sorted(values, key=lambda v: int(v[1:])) == [f"v{i}" for i in range(20)]
    for key in range(4):
        of_key = [int(v[1:]) for v in values if int(v[1:]) % 4 == key]
        assert of_key == sorted(of_key)
