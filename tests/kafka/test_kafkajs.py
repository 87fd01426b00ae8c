"""kafkajs (Node) against the Kafka listener: its admin client creates a topic and reads
offsets and metadata, its producer writes keyed records with headers, and Conveyor's own
consumer reads them back on the partitions Java's murmur2 puts the keys on. The kafkajs
consumer (always in a consumer group: it has no manual assignment) runs the seed's group
scenario in test_group_clients.py.

Node and kafkajs come from scripts/system-deps/61-kafkajs.sh (npm ci from the committed
lock file); without them the test skips saying so."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import pytest

import conveyor
from conveyor.protocol.partitioner import partition_for_key
from tests.integration.cluster import Cluster
from tests.kafka.conftest import unique_topic

NODE_DIR = Path(__file__).parent / "node"
_COUNT = 40


def _node() -> str:
    node = shutil.which("node")
    if node is None or not (NODE_DIR / "node_modules" / "kafkajs").is_dir():
        pytest.skip("node or kafkajs missing (scripts/system-deps/61-kafkajs.sh installs them)")
    return node


def test_kafkajs_admin_and_producer(kafka_cluster: Cluster) -> None:
    node = _node()
    topic = unique_topic("js")
    result = subprocess.run(
        [node, str(NODE_DIR / "kafkajs_check.js"), kafka_cluster.bootstrap, topic, str(_COUNT)],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    report = json.loads(result.stdout.strip().splitlines()[-1])
    assert report["created"] is True
    assert [p["partitionId"] for p in report["metadata"]["topics"][0]["partitions"]] == [0, 1, 2]
    high = {int(o["partition"]): int(o["high"]) for o in report["offsets"]}
    assert sum(high.values()) == _COUNT
    assert all(ack["errorCode"] == 0 for ack in report["acks"])

    consumer = conveyor.Consumer(kafka_cluster.url, topic, enable_auto_commit=False)
    messages = []
    try:
        for _ in range(60):
            messages += consumer.poll(timeout=0.5)
            if len(messages) >= _COUNT:
                break
    finally:
        consumer.close()
    assert sorted(m.value for m in messages) == sorted(f"js-{i}".encode() for i in range(_COUNT))
    for m in messages:
        assert m.key is not None
        assert m.partition == partition_for_key(m.key, 3)  # kafkajs's murmur2 = Conveyor's
        i = int(m.value.removeprefix(b"js-"))
        assert m.headers == (("n", str(i).encode()),)
        assert m.timestamp_ms == 1_700_000_000_000 + i
    assert {p: sum(1 for m in messages if m.partition == p) for p in high} == high
