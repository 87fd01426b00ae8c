"""A producer running in the background while a test injects faults, and a checker that
reads every partition back from its leader (binary fetch up to the high watermark)."""

from __future__ import annotations

import threading
import time
from collections import defaultdict
from typing import Any

import httpx

from conveyor.client import Producer
from conveyor.protocol.messages import BATCH_CONTENT_TYPE
from conveyor.protocol.records import decode_batches
from tests.integration.cluster import Cluster, wait_for


def describe(cluster: Cluster, topic: str) -> list[dict[str, Any]]:
    reply = httpx.get(f"{cluster.url}/v1/topics/{topic}", timeout=5)
    reply.raise_for_status()
    partitions: list[dict[str, Any]] = reply.json()["partitions"]
    return partitions


def read_partition(
    cluster: Cluster, topic: str, partition: int, timeout_s: float = 30.0
) -> list[tuple[int, bytes]]:
    """(offset, value) of every record below the leader's high watermark, once writes
    stopped and that high watermark reached the log end. While leadership is moving (the
    coordinator names a leader that has not heard yet), asks again."""
    wait_settled(cluster, topic, partition, timeout_s)
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            return _read_from_leader(cluster, topic, partition)
        except (httpx.HTTPStatusError, AssertionError):
            if time.monotonic() > deadline:
                raise
            time.sleep(0.2)


def _read_from_leader(cluster: Cluster, topic: str, partition: int) -> list[tuple[int, bytes]]:
    leader = describe(cluster, topic)[partition]["leader"]
    assert isinstance(leader, int), f"{topic}-{partition} has no leader"
    url = cluster.brokers[leader].url
    out: list[tuple[int, bytes]] = []
    offset = 0
    while True:
        reply = httpx.get(
            f"{url}/v1/topics/{topic}/partitions/{partition}/records",
            params={"offset": offset, "max_bytes": 4 << 20},
            headers={"Accept": BATCH_CONTENT_TYPE},
            timeout=10,
        )
        reply.raise_for_status()
        high_watermark = int(reply.headers["X-Conveyor-High-Watermark"])
        records = decode_batches(reply.content, start_offset=offset)
        out += [(r.offset, r.value or b"") for r in records]
        if records:
            offset = records[-1].offset + 1
        if offset >= high_watermark or not reply.content:
            return out


def wait_settled(cluster: Cluster, topic: str, partition: int, timeout_s: float = 30.0) -> None:
    """Until the partition's leader has its high watermark at its log end: a new leader's
    high watermark catches up with what its predecessor acknowledged only once the
    followers have fetched from it (as in Kafka), so a read right after a failover may
    not show everything yet."""

    def settled() -> bool:
        leader = describe(cluster, topic)[partition]["leader"]
        if not isinstance(leader, int):
            return False
        url = f"{cluster.brokers[leader].url}/v1/topics/{topic}/partitions/{partition}/offsets"
        reply = httpx.get(url, timeout=5)
        if reply.status_code != 200:
            return False
        offsets = reply.json()
        return bool(offsets["high_watermark"] == offsets["log_end_offset"])

    wait_for(settled, timeout_s, f"{topic}-{partition}: high watermark at the log end")


class BackgroundLoad:
    """Sends ``key-K:N`` values (16 keys) with acks=all until stopped; records what was
    acknowledged. ``check`` asserts that every acknowledged value is in the log exactly
    once and each key's values are in send order."""

    def __init__(self, cluster: Cluster, topic: str, keys: int = 16) -> None:
        self.cluster = cluster
        self.topic = topic
        self.keys = keys
        self.acked: list[bytes] = []
        self.failed = 0
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> BackgroundLoad:
        self._thread.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(120)

    def count(self) -> int:
        with self._lock:
            return len(self.acked)

    def _run(self) -> None:
        with Producer(self.cluster.url, acks="all", delivery_timeout_ms=60_000) as producer:
            n = 0
            while not self._stop.is_set():
                batch = []
                for _ in range(50):
                    value = f"key-{n % self.keys}:{n}".encode()
                    key = f"key-{n % self.keys}".encode()
                    batch.append((value, producer.send(self.topic, value, key=key)))
                    n += 1
                for value, future in batch:
                    try:
                        future.result(timeout=90)
                    except Exception:  # not acknowledged: may or may not be in the log
                        self.failed += 1
                        continue
                    with self._lock:
                        self.acked.append(value)

    def check(self, partitions: int) -> None:
        seen: dict[str, list[int]] = defaultdict(list)
        for partition in range(partitions):
            for _, value in read_partition(self.cluster, self.topic, partition):
                key, _, n = value.decode().partition(":")
                seen[key].append(int(n))
        for key, numbers in seen.items():
            assert len(numbers) == len(set(numbers)), f"{key}: duplicates in the log"
            assert numbers == sorted(numbers), f"{key}: out of order"
        stored = {f"{k}:{n}" for k, ns in seen.items() for n in ns}
        missing = [v for v in self.acked if v.decode() not in stored]
        assert not missing, f"{len(missing)} acknowledged writes lost, e.g. {missing[:3]}"
