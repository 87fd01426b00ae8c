"""KIP-447 fencing in Conveyor's own client, against real coordinator and broker
processes, over the brokers' Kafka listeners: a consume-transform-produce processor that the group
has moved on from (paused past its session timeout while another member took its
partitions) sends its offsets with its ``group_metadata()``; the coordinator refuses
them (UNKNOWN_MEMBER, or ILLEGAL_GENERATION once it rejoined with its Kafka member id),
the transaction aborts, and nothing of it is visible to
read_committed readers, nor is any offset committed. The live member's transaction, with
its own metadata, commits.
"""

from __future__ import annotations

import asyncio
import json
import os
import queue
import signal
import subprocess
import sys
import threading
from collections.abc import Iterator
from typing import Any

import pytest

import conveyor
from tests.integration.cluster import Cluster, wait_for
from tests.integration.test_client import consume, make_topic
from tests.integration.txn_zombie import SESSION_TIMEOUT_MS

RECORDS = 6


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    # a member's session timeout is the coordinator's (KIP-848): the zombie's 1.5 s
    c = Cluster(
        tmp_path_factory.mktemp("txn-fencing"),
        broker_count=1,
        coordinator_args=["--group-consumer-session-timeout-ms", str(SESSION_TIMEOUT_MS)],
    ).start()
    try:
        yield c
    finally:
        c.stop()


class Zombie:
    """``txn_zombie.py`` as a process, its JSON lines read on a thread."""

    def __init__(self, argv: list[str]) -> None:
        self.process = subprocess.Popen(
            [sys.executable, "-m", "tests.integration.txn_zombie", *argv],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        self._lines: queue.Queue[dict[str, Any]] = queue.Queue()
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.process.stdout is not None
        for line in self.process.stdout:
            self._lines.put(json.loads(line))

    def next_line(self, timeout_s: float = 60) -> dict[str, Any]:
        return self._lines.get(timeout=timeout_s)

    def resume(self) -> None:
        os.kill(self.process.pid, signal.SIGCONT)
        assert self.process.stdin is not None
        self.process.stdin.write("go\n")
        self.process.stdin.flush()

    def stop(self) -> None:
        if self.process.poll() is None:
            os.kill(self.process.pid, signal.SIGCONT)
            self.process.kill()
        self.process.wait(timeout=10)
        self._reader.join(timeout=10)  # it reads to the end of the exited process's output
        for pipe in (self.process.stdin, self.process.stdout):
            if pipe is not None:
                pipe.close()


def _values(cluster: Cluster, topic: str, isolation: str, expected: int) -> list[bytes | None]:
    """Everything in ``topic`` with ``isolation``: ``expected`` records, then 1 s of
    nothing more (an extra record would show)."""
    with conveyor.Consumer(cluster.url, topic, isolation=isolation) as consumer:
        values = [m.value for m in consume(consumer, expected, timeout_s=30)]
        values += [m.value for m in consume(consumer, 1, timeout_s=1.0)]
    return values


def test_a_zombie_processor_cannot_commit_offsets_in_a_transaction(cluster: Cluster) -> None:
    source, sink, group = "zin-kafka", "zout-kafka", "zgroup-kafka"
    make_topic(cluster, source, partitions=2)
    make_topic(cluster, sink, partitions=1)
    with conveyor.Producer(cluster.url) as producer:
        for i in range(RECORDS):
            producer.send(source, f"r{i}".encode(), partition=i % 2)
    zombie = Zombie([cluster.url, source, sink, group, "zombie-kafka"])
    try:
        ready = zombie.next_line()
        generation, member_id = ready["ready"]
        assert member_id and generation >= 0, ready  # a member: fenced by these
        os.kill(zombie.process.pid, signal.SIGSTOP)  # its session runs out meanwhile

        live = conveyor.Consumer(
            cluster.url, source, group_id=group,
            enable_auto_commit=False, isolation="read_committed", heartbeat_interval_ms=200,
        )  # fmt: skip
        with live:
            polled: dict[tuple[int, int], bytes | None] = {}

            def owns_both() -> bool:
                polled.update({(m.partition, m.offset): m.value for m in live.poll(timeout=0.2)})
                return len(live.assignment()) == 2

            wait_for(owns_both, timeout_s=30)  # the zombie was removed from the group
            assert live.group_metadata().member_id != member_id

            zombie.resume()
            # UNKNOWN_MEMBER: its member id is gone. Over Kafka (KIP-848) a member keeps
            # its id across a rejoin, so once the resumed process rejoined (epoch 0, then
            # a new epoch) the old generation is ILLEGAL_GENERATION instead: both Kafka's.
            refused = zombie.next_line()
            assert refused["refused"] in {"UNKNOWN_MEMBER", "ILLEGAL_GENERATION"}, refused
            assert zombie.next_line() == {"aborted": True}
            assert zombie.process.wait(timeout=30) == 0

            # the zombie's transaction: written, aborted, never visible; no offset moved
            written = ready["records"]
            assert len(_values(cluster, sink, "read_uncommitted", written)) == written
            assert _values(cluster, sink, "read_committed", 0) == []
            tps = [conveyor.TopicPartition(source, p) for p in range(2)]
            assert set(live.committed(tps).values()) == {None}

            # the live member's own transaction, with its own metadata, commits (once the
            # resumed zombie, which rejoined for a moment before it closed, is gone)
            wait_for(lambda: owns_both() and len(polled) == RECORDS, timeout_s=30)
            with (
                conveyor.Producer(cluster.url, transactional_id="live-kafka") as producer,
                producer.transaction(),
            ):
                for value in polled.values():
                    producer.send(sink, (value or b"").upper())
                offsets = {(source, p): RECORDS // 2 for p in range(2)}
                producer.send_offsets_to_transaction(offsets, live.group_metadata())
            assert set(live.committed(tps).values()) == {RECORDS // 2}
        committed = _values(cluster, sink, "read_committed", RECORDS)
        assert sorted(committed) == sorted(f"R{i}".encode() for i in range(RECORDS))
    finally:
        zombie.stop()


def test_group_metadata_before_and_without_membership(cluster: Cluster) -> None:
    """Not a member yet: the unfenced values (Kafka's); no group: a usage error."""
    make_topic(cluster, "zmeta", partitions=1)
    with (
        conveyor.Consumer(cluster.url, "zmeta") as loner,
        pytest.raises(conveyor.InvalidRequestError, match="group_id"),
    ):
        loner.group_metadata()
    with conveyor.Consumer(cluster.url, group_id="zmeta-group", group_instance_id="i-1") as idle:
        assert idle.group_metadata() == conveyor.ConsumerGroupMetadata("zmeta-group", -1, "", "i-1")


def test_the_async_twins_commit_a_members_offsets_in_a_transaction(cluster: Cluster) -> None:
    """``AsyncConsumer.group_metadata()`` and ``AsyncProducer`` over Kafka: a live
    member's offsets commit with the transaction; taken after another member replaced
    it (a stale member id), the same call is refused and the transaction aborts."""
    source, sink, group = "zasync-in", "zasync-out", "zasync-group"
    make_topic(cluster, source, partitions=1)
    make_topic(cluster, sink, partitions=1)
    with conveyor.Producer(cluster.url) as plain:
        plain.send(source, b"a")

    async def run() -> tuple[conveyor.ConsumerGroupMetadata, str]:
        async with (
            conveyor.AsyncConsumer(
                cluster.url, source, group_id=group, enable_auto_commit=False
            ) as consumer,
            conveyor.AsyncProducer(cluster.url, transactional_id="zasync") as producer,
        ):
            messages: list[conveyor.Message] = []
            async with asyncio.timeout(30):
                while not messages:
                    messages = await consumer.poll(timeout=0.5)
            metadata = consumer.group_metadata()
            async with producer.transaction():
                await producer.send(sink, b"A")
                await producer.send_offsets_to_transaction({(source, 0): 1}, metadata)
            committed = await consumer.committed([(source, 0)])
            assert committed == {conveyor.TopicPartition(source, 0): 1}
        # the consumer left: its metadata now names a member the group does not have
        async with conveyor.AsyncProducer(cluster.url, transactional_id="zasync") as producer:
            await producer.begin_transaction()
            try:
                await producer.send_offsets_to_transaction({(source, 0): 1}, metadata)
            except conveyor.ConveyorError as exc:
                await producer.abort_transaction()
                return metadata, exc.code.name
        return metadata, "committed"

    metadata, stale = asyncio.run(run())
    assert metadata.group_id == group and metadata.member_id and metadata.generation_id >= 0
    assert stale in {"UNKNOWN_MEMBER", "ILLEGAL_GENERATION"}
    assert _values(cluster, sink, "read_committed", 1) == [b"A"]
