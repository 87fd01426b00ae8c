"""Compacted topics on a real three-broker cluster, through the CLI and the library: the
latest value per key survives with its offset, every replica compacts on its own, a
topic switched to ``compact`` at run time is cleaned without a restart, and a keyless
record is refused with INVALID_RECORD."""

from __future__ import annotations

from collections.abc import Iterator

import httpx
import pytest

from conveyor import Admin, Consumer, Message, Producer
from tests.integration.cluster import Cluster, wait_for
from tests.integration.test_cli import conveyor

KEYS, ROUNDS = 20, 15
VALUE_BYTES = 96
WRITTEN_BYTES = KEYS * ROUNDS * VALUE_BYTES  # values alone, without keys and headers


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    """Three brokers whose cleaners look for work every 100 ms."""
    shared = Cluster(
        tmp_path_factory.mktemp("compaction"),
        broker_count=3,
        broker_args=["--cleaner-backoff-ms", "100"],
    ).start()
    try:
        yield shared
    finally:
        shared.stop()


def write_rounds(url: str, topic: str) -> dict[bytes, tuple[int, bytes]]:
    """ROUNDS values of each of KEYS keys; the latest (offset, value) per key."""
    latest = {}
    with Producer(url, linger_ms=0) as producer:
        for round_ in range(ROUNDS):
            futures = {}
            for k in range(KEYS):
                key, value = f"key-{k}".encode(), f"round {round_:>3} ".ljust(12).encode() * 8
                futures[key] = (producer.send(topic, value, key=key), value)
            for key, (future, value) in futures.items():
                latest[key] = (future.result(timeout=30).offset, value)
    return latest


def replica_sizes(cluster: Cluster, topic: str) -> dict[int, int]:
    """Bytes of ``topic``'s partition 0 on each broker."""
    sizes = {}
    for broker_id, broker in cluster.brokers.items():
        hosted = httpx.get(f"{broker.url}/v1/partitions", verify=broker.ssl_context() or True)
        for p in hosted.json()["partitions"]:
            if p["topic"] == topic:
                sizes[broker_id] = p["size_bytes"]
    return sizes


def read_all(url: str, topic: str) -> list[Message]:
    out: list[Message] = []
    with Consumer(url, topic, auto_offset_reset="earliest", enable_auto_commit=False) as consumer:
        wait_for(
            lambda: bool(out.extend(consumer.poll(timeout=0.2)) or consumer.caught_up()),
            30,
            "the consumer to read the topic to its end",
        )
        out += consumer.poll(timeout=0.1)
    return out


def test_compacted_topic_keeps_the_latest_value_per_key_on_every_replica(
    cluster: Cluster,
) -> None:
    created = conveyor(
        cluster.url,
        "topic",
        "create",
        "facts",
        "--partitions",
        "1",
        "--replication-factor",
        "3",
        "--config",
        "cleanup_policy=compact",
        "--config",
        "segment_bytes=1024",
        "--config",
        "min_cleanable_dirty_ratio=0.01",
    )
    assert created.returncode == 0, created.stderr
    latest = write_rounds(cluster.url, "facts")
    # every replica cleans its own log (nothing is shipped between brokers)
    wait_for(
        lambda: all(size < WRITTEN_BYTES / 3 for size in replica_sizes(cluster, "facts").values()),
        60,
        "every replica of facts-0 to hold under a third of what was written",
    )
    messages = read_all(cluster.url, "facts")
    assert len(messages) < KEYS * ROUNDS / 3
    seen = {}
    for message in messages:
        assert message.key is not None
        seen[message.key] = (message.offset, message.value)
    assert seen == latest  # each key's latest value, at the offset it was written at
    with Admin(cluster.url) as admin:
        assert admin.describe_topic("facts").config.cleanup_policy == "compact"


def test_a_keyless_record_is_refused_by_a_compacted_topic(cluster: Cluster) -> None:
    with Admin(cluster.url) as admin:  # its own topic: tests of a module may run apart
        admin.create_topic("keyed", partitions=1, config={"cleanup_policy": "compact"})
    refused = conveyor(cluster.url, "produce", "keyed", "no key here")
    assert refused.returncode == 1
    assert "INVALID_RECORD" in refused.stderr
    keyed = conveyor(cluster.url, "produce", "keyed", "--key", "key-0", "with a key")
    assert keyed.returncode == 0, keyed.stderr


def test_switching_a_topic_to_compact_cleans_it_without_a_restart(cluster: Cluster) -> None:
    with Admin(cluster.url) as admin:
        admin.create_topic(
            "switch", partitions=1, replication_factor=1, config={"segment_bytes": 1024}
        )
    latest = write_rounds(cluster.url, "switch")
    before = replica_sizes(cluster, "switch")
    assert all(size > WRITTEN_BYTES for size in before.values())  # nothing cleaned yet
    pids = {b: s.process.pid for b, s in cluster.brokers.items() if s.process is not None}
    changed = conveyor(
        cluster.url,
        "topic",
        "alter-config",
        "switch",
        "--set",
        "cleanup_policy=compact",
        "--set",
        "min_cleanable_dirty_ratio=0.01",
    )
    assert changed.returncode == 0, changed.stderr
    wait_for(
        lambda: all(replica_sizes(cluster, "switch")[b] < size / 3 for b, size in before.items()),
        60,
        "the switched topic to be compacted",
    )
    assert {m.key: (m.offset, m.value) for m in read_all(cluster.url, "switch")} == latest
    assert pids == {b: s.process.pid for b, s in cluster.brokers.items() if s.process}
    bad = conveyor(cluster.url, "topic", "alter-config", "switch", "--set", "cleanup_policy=shred")
    assert bad.returncode == 1 and "INVALID_CONFIG" in bad.stderr
