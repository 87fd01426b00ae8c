"""A leader killed while the producer has several batches in flight per partition
(``max_in_flight_requests_per_connection``, issue 19): every acknowledged record is read
back exactly once, and each key's records in the order sent.

The producer sends without waiting, in small batches (so full batches pile up behind the
acks=all round trip: only full ones pipeline), the test waits until the partition the
victim leads has at least two batches in flight, then kills the leader (SIGKILL): the
batches in flight fail (lost connection), come back OUT_OF_ORDER_SEQUENCE or were written
without their answer arriving, and are resent in order to the new leader.
"""

from __future__ import annotations

import threading
import time
from collections import defaultdict
from concurrent.futures import Future

from conveyor.client import Consumer, Producer
from tests.integration.cluster import Cluster, wait_for
from tests.integration.test_failover import (  # cluster3: its fixture, short sessions
    RECOVERY_S,
    cluster3,  # noqa: F401
    create,
    describe,
    wait_isr_full,
)

TOPIC = "pipelined"
KEYS = 16
PARTITIONS = 2


def test_leader_killed_with_batches_in_flight_loses_nothing_and_keeps_key_order(
    cluster3: Cluster,  # noqa: F811 -- test_failover's fixture, imported above
) -> None:
    create(cluster3, TOPIC, partitions=PARTITIONS)
    acked: list[bytes] = []
    failed: list[BaseException] = []
    stop = threading.Event()
    with Producer(
        cluster3.url,
        acks="all",
        linger_ms=1,
        batch_size=256,  # only full batches pipeline: small ones fill every few records
        delivery_timeout_ms=60_000,
        max_in_flight_requests_per_connection=5,
    ) as producer:
        accumulator = producer._core.accumulator  # the test's one look inside

        def produce() -> None:
            pending: list[tuple[bytes, Future[object]]] = []
            n = 0
            while not stop.is_set():
                for _ in range(20):
                    key = n % KEYS
                    value = f"{key}|{n // KEYS}".encode()
                    pending.append((value, producer.send(TOPIC, value, key=f"k{key}".encode())))
                    n += 1
                time.sleep(0.002)  # a steady load, not a condition wait
                still: list[tuple[bytes, Future[object]]] = []
                for value, future in pending:
                    if not future.done():
                        still.append((value, future))
                    elif future.exception() is None:
                        acked.append(value)
                    else:
                        failed.append(future.exception())  # type: ignore[arg-type]
                pending = still
            producer.flush(60)
            for value, future in pending:
                if future.exception() is None:
                    acked.append(value)
                else:
                    failed.append(future.exception())  # type: ignore[arg-type]

        thread = threading.Thread(target=produce, daemon=True)
        thread.start()
        wait_for(lambda: len(acked) >= 500, 30, "first acknowledged writes")
        leader = describe(cluster3, TOPIC)[0]["leader"]
        assert isinstance(leader, int)
        wait_for(lambda: accumulator.in_flight_count(TOPIC, 0) >= 2, 30, "two batches in flight")
        cluster3.brokers[leader].kill()  # SIGKILL, with batches of partition 0 in flight
        count = len(acked)
        wait_for(lambda: len(acked) > count + 500, RECOVERY_S + 20, "writes acknowledged again")
        stop.set()
        thread.join(90)
        assert not thread.is_alive()
    cluster3.add_broker(leader)
    wait_isr_full(cluster3, TOPIC)
    read = read_all(cluster3, set(acked))
    per_key: dict[str, list[int]] = defaultdict(list)
    for value in read:
        key, n = value.decode().split("|")
        per_key[key].append(int(n))
    for key, numbers in per_key.items():
        assert numbers == sorted(set(numbers)), f"key {key}: duplicated or out of order"
    missing = set(acked) - set(read)
    assert not missing, f"{len(missing)} acknowledged records lost, e.g. {sorted(missing)[:5]}"


def read_all(cluster: Cluster, wanted: set[bytes]) -> list[bytes]:
    """Every record of the topic, in each partition's order, until all of ``wanted`` are
    read and a poll then finds nothing more."""
    read: list[bytes] = []
    seen: set[bytes] = set()
    with Consumer(cluster.url, topics=TOPIC) as consumer:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            messages = consumer.poll(timeout=1.0)
            for message in messages:
                if message.value is not None:
                    read.append(message.value)
                    seen.add(message.value)
            if not messages and wanted <= seen:
                break
    return read
