"""Kafka transactions (issue 21) with confluent-kafka (librdkafka) against real coordinator
and broker processes: commits and aborts across partitions with consumed offsets, what
read_committed and read_uncommitted consumers see, the last stable offset held back by an
open transaction, and zombie fencing by a second producer with the same transactional id.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

import conveyor
from conveyor.protocol.kafka.apis import SERVED, ApiKey
from conveyor.protocol.kafka.errors import KafkaError
from conveyor.transport.tls import TLSConfig
from tests.integration.cluster import Cluster, wait_for
from tests.kafka.conftest import unique_topic
from tests.kafka.group_harness import KafkaMember, produce_keyed
from tests.kafka.wire import KafkaWire

confluent_kafka = pytest.importorskip("confluent_kafka")
from confluent_kafka.admin import AdminClient, NewTopic  # noqa: E402


def _config(cluster: Cluster, **extra: Any) -> dict[str, Any]:
    config: dict[str, Any] = {"bootstrap.servers": cluster.bootstrap, **extra}
    if cluster.ca is not None:
        config.update({"security.protocol": "ssl", "ssl.ca.location": str(cluster.ca)})
    return config


def _topic(cluster: Cluster, partitions: int, replication_factor: int = 1) -> str:
    name = unique_topic("txn")
    admin = AdminClient(_config(cluster))
    for future in admin.create_topics([NewTopic(name, partitions, replication_factor)]).values():
        future.result(30)
    return name


def _producer(cluster: Cluster, transactional_id: str) -> Any:
    producer = confluent_kafka.Producer(
        _config(cluster, **{"transactional.id": transactional_id, "transaction.timeout.ms": 60000})
    )
    producer.init_transactions(30)
    return producer


def _read(
    cluster: Cluster,
    topic: str,
    partitions: int,
    isolation: str,
    expected: int,
    *,
    wait_s: float = 30,
) -> list[str]:
    """Every value from the beginning, until ``expected`` arrived and 1 s passed without
    more (so an extra record would be seen), with the given isolation level."""
    consumer = confluent_kafka.Consumer(
        _config(
            cluster,
            **{
                "group.id": f"reader-{isolation}",
                "enable.auto.commit": False,
                "isolation.level": isolation,
            },
        )
    )
    values: list[str] = []
    try:
        consumer.assign(
            [
                confluent_kafka.TopicPartition(topic, p, confluent_kafka.OFFSET_BEGINNING)
                for p in range(partitions)
            ]
        )
        deadline = time.monotonic() + wait_s
        quiet_since = time.monotonic()
        while time.monotonic() < deadline:
            batch = consumer.consume(num_messages=500, timeout=0.2)
            for message in batch:
                assert message.error() is None, message.error()
                values.append(message.value().decode())
            if batch:
                quiet_since = time.monotonic()
            elif len(values) >= expected and time.monotonic() - quiet_since > 1.0:
                break
        return values
    finally:
        consumer.close()


def _send(producer: Any, topic: str, values: list[str], partitions: int) -> None:
    for i, value in enumerate(values):
        producer.produce(topic, value=value.encode(), partition=i % partitions)
    assert producer.flush(30) == 0


def test_commit_abort_and_offsets_across_partitions(kafka_cluster: Cluster) -> None:
    topic = _topic(kafka_cluster, 2)
    producer = _producer(kafka_cluster, f"tx-{topic}")
    consumer = confluent_kafka.Consumer(
        _config(kafka_cluster, **{"group.id": f"g-{topic}", "enable.auto.commit": False})
    )
    try:
        producer.begin_transaction()
        _send(producer, topic, [f"c1-{i}" for i in range(10)], 2)
        offsets = [confluent_kafka.TopicPartition(topic, 0, 5)]
        producer.send_offsets_to_transaction(offsets, consumer.consumer_group_metadata(), 30)
        producer.commit_transaction(30)

        producer.begin_transaction()
        _send(producer, topic, [f"a-{i}" for i in range(6)], 2)
        aborted = [confluent_kafka.TopicPartition(topic, 0, 9)]
        producer.send_offsets_to_transaction(aborted, consumer.consumer_group_metadata(), 30)
        producer.abort_transaction(30)

        producer.begin_transaction()
        _send(producer, topic, [f"c2-{i}" for i in range(3)], 2)
        producer.commit_transaction(30)

        committed = _read(kafka_cluster, topic, 2, "read_committed", 13)
        assert sorted(committed) == sorted(
            [f"c1-{i}" for i in range(10)] + [f"c2-{i}" for i in range(3)]
        )
        everything = _read(kafka_cluster, topic, 2, "read_uncommitted", 19)
        assert len(everything) == 19  # the aborted records are in the log
        # the offsets of the committed transaction are the group's, not the aborted one's
        [found] = consumer.committed([confluent_kafka.TopicPartition(topic, 0)], 30)
        assert found.offset == 5
    finally:
        consumer.close()


def test_open_transaction_holds_back_the_last_stable_offset(kafka_cluster: Cluster) -> None:
    topic = _topic(kafka_cluster, 1)
    before = _producer(kafka_cluster, f"plain-{topic}")  # a committed record first
    before.begin_transaction()
    _send(before, topic, ["first"], 1)
    before.commit_transaction(30)
    producer = _producer(kafka_cluster, f"tx-{topic}")
    producer.begin_transaction()
    _send(producer, topic, ["open-1", "open-2"], 1)
    consumer = confluent_kafka.Consumer(
        _config(kafka_cluster, **{"group.id": "lso", "isolation.level": "read_committed"})
    )
    try:
        partition = confluent_kafka.TopicPartition(topic, 0)

        def stable_offset() -> int:
            return int(consumer.get_watermark_offsets(partition, 30, cached=False)[1])

        # EndTxn answers once the commit is decided; its marker follows (as Kafka's)
        wait_for(lambda: stable_offset() == 2, timeout_s=30)  # the record and its marker
        assert consumer.get_watermark_offsets(partition, 30, cached=False) == (0, 2)
        assert _read(kafka_cluster, topic, 1, "read_committed", 1) == ["first"]
        assert stable_offset() == 2  # still held back by the open transaction at offset 2
        producer.commit_transaction(30)
        wait_for(lambda: stable_offset() == 5, timeout_s=30)  # 3 records, 2 markers
        assert _read(kafka_cluster, topic, 1, "read_committed", 3) == ["first", "open-1", "open-2"]
    finally:
        consumer.close()


def test_a_second_producer_fences_the_first(kafka_cluster: Cluster) -> None:
    topic = _topic(kafka_cluster, 2)
    zombie = _producer(kafka_cluster, f"tx-{topic}")
    zombie.begin_transaction()
    _send(zombie, topic, ["zombie-1", "zombie-2"], 2)
    successor = _producer(kafka_cluster, f"tx-{topic}")  # aborts the zombie's transaction
    with pytest.raises(confluent_kafka.KafkaException) as raised:
        zombie.commit_transaction(30)
    error = raised.value.args[0]
    assert error.fatal()
    assert error.code() in (
        confluent_kafka.KafkaError._FENCED,
        confluent_kafka.KafkaError.PRODUCER_FENCED,
        confluent_kafka.KafkaError.INVALID_PRODUCER_EPOCH,
    ), error
    successor.begin_transaction()
    _send(successor, topic, ["successor"], 2)
    successor.commit_transaction(30)
    assert _read(kafka_cluster, topic, 2, "read_committed", 1) == ["successor"]


def test_the_coordinator_aborts_a_transaction_past_its_timeout(kafka_cluster: Cluster) -> None:
    topic = _topic(kafka_cluster, 1)
    producer = confluent_kafka.Producer(
        _config(
            kafka_cluster, **{"transactional.id": f"tx-{topic}", "transaction.timeout.ms": 1500}
        )
    )
    producer.init_transactions(30)
    producer.begin_transaction()
    _send(producer, topic, ["left-open"], 1)
    consumer = confluent_kafka.Consumer(
        _config(kafka_cluster, **{"group.id": "timeout", "isolation.level": "read_committed"})
    )
    try:
        partition = confluent_kafka.TopicPartition(topic, 0)
        assert consumer.get_watermark_offsets(partition, 30, cached=False)[1] == 0
        # aborted by the coordinator: the ABORT marker moves the last stable offset past it
        wait_for(
            lambda: consumer.get_watermark_offsets(partition, 30, cached=False)[1] == 2,
            timeout_s=15,
        )
        with pytest.raises(confluent_kafka.KafkaException):
            producer.commit_transaction(30)
        assert _read(kafka_cluster, topic, 1, "read_committed", 0) == []
    finally:
        consumer.close()


def test_conveyor_consumer_and_cli_read_committed(kafka_cluster: Cluster) -> None:
    """What a Kafka transactional producer wrote, read by Conveyor's own consumer and
    ``conveyor consume --isolation read_committed``: aborted records never show, read
    uncommitted shows them all."""
    topic = _topic(kafka_cluster, 1)
    producer = _producer(kafka_cluster, f"tx-{topic}")
    for name, commit in (("c1", True), ("a1", False), ("c2", True), ("a2", False)):
        producer.begin_transaction()
        _send(producer, topic, [f"{name}-0", f"{name}-1"], 1)
        if commit:
            producer.commit_transaction(30)
        else:
            producer.abort_transaction(30)
    committed = ["c1-0", "c1-1", "c2-0", "c2-1"]

    def conveyor_values(isolation: str, count: int) -> list[str]:
        consumer = conveyor.Consumer(
            kafka_cluster.url, topic, enable_auto_commit=False, isolation=isolation
        )
        values: list[str] = []
        try:
            deadline = time.monotonic() + 30
            while len(values) < count and time.monotonic() < deadline:
                values += [m.value.decode() for m in consumer.poll(timeout=0.5)]
            values += [m.value.decode() for m in consumer.poll(timeout=0.5)]  # nothing more
        finally:
            consumer.close()
        return values

    assert conveyor_values("read_committed", 4) == committed
    assert len(conveyor_values("read_uncommitted", 8)) == 8
    result = subprocess.run(
        [sys.executable, "-m", "conveyor", "consume", topic, "--from-beginning",
         "--isolation", "read_committed", "--max", "4"],
        env=dict(os.environ, CONVEYOR_URL=kafka_cluster.url),
        capture_output=True, text=True, timeout=60, check=True,
    )  # fmt: skip
    assert result.stdout.split() == committed


def _conveyor_producer(cluster: Cluster, tid: str) -> conveyor.Producer:
    return conveyor.Producer(cluster.url, transactional_id=tid)


def test_conveyor_transactional_producer(kafka_cluster: Cluster) -> None:
    """Conveyor's own transactional producer (its steps are Kafka's transaction APIs on
    the brokers' listeners): commit, abort (the context
    manager aborts on an exception), offsets committed with the transaction, and fencing
    by a second producer with the same transactional id; read by both kinds of
    read_committed consumer."""
    topic = _topic(kafka_cluster, 2)
    tid = f"conveyor-tx-{topic}"
    with _conveyor_producer(kafka_cluster, tid) as producer:
        with pytest.raises(conveyor.ConveyorError):  # outside a transaction
            producer.send(topic, b"stray", partition=0)
        with producer.transaction():
            for i in range(4):
                producer.send(topic, f"c-{i}".encode(), partition=i % 2)
            producer.send_offsets_to_transaction({(topic, 1): 7}, f"g-{topic}")
        with pytest.raises(RuntimeError), producer.transaction():
            producer.send(topic, b"aborted", partition=0)
            producer.flush()
            raise RuntimeError("the processor failed")
        producer.begin_transaction()
        producer.send(topic, b"zombie", partition=1)
        producer.flush()
        with _conveyor_producer(kafka_cluster, tid) as successor:
            successor.init_transactions()  # aborts the open transaction, fences the first
            with pytest.raises(conveyor.ProducerFencedError) as fenced:
                producer.commit_transaction()
            assert fenced.value.code.name == "PRODUCER_FENCED"
            with pytest.raises(conveyor.ProducerFencedError):  # fatal: every later call
                producer.begin_transaction()
            with successor.transaction():
                successor.send(topic, b"successor", partition=0)
    expected = sorted([f"c-{i}" for i in range(4)] + ["successor"])
    assert sorted(_read(kafka_cluster, topic, 2, "read_committed", 5)) == expected
    consumer = conveyor.Consumer(kafka_cluster.url, group_id=f"g-{topic}")
    try:
        committed = consumer.committed([conveyor.TopicPartition(topic, 1)])
        assert committed[conveyor.TopicPartition(topic, 1)] == 7
    finally:
        consumer.close()


def test_a_transaction_after_a_failed_batch_writes_to_that_partition_again(
    kafka_cluster: Cluster,
) -> None:
    """A batch the leader refuses for good (here: too large) never records its sequence
    numbers at the partition, so the producer's next batches there would be refused
    OUT_OF_ORDER_SEQUENCE forever; after the abort the producer takes a new epoch
    (InitProducerId again, as Kafka's producer does after an abortable error, KIP-360),
    under which sequences restart. Found by the transactional chaos workload (seed 13: a
    500 during a full disk, then 44 transactions of one writer failed in a row)."""
    topic = unique_topic("txn")
    with conveyor.Admin(kafka_cluster.url) as admin:
        admin.create_topic(topic, partitions=1, config={"max_message_bytes": 1024})
    with _conveyor_producer(kafka_cluster, f"gap-{topic}") as producer:
        with producer.transaction():  # the partition knows this producer's sequences
            producer.send(topic, b"before", partition=0)
        producer.begin_transaction()
        refused = producer.send(topic, b"x" * 4096, partition=0)
        producer.flush()
        assert refused.exception(timeout=10) is not None
        with pytest.raises(conveyor.ConveyorError):
            producer.commit_transaction()
        producer.abort_transaction()
        for i in range(3):
            with producer.transaction():
                producer.send(topic, f"after-{i}".encode(), partition=0)
    values = _read(kafka_cluster, topic, 1, "read_committed", 4)
    assert values == ["before", "after-0", "after-1", "after-2"]


def test_consume_transform_produce_is_exactly_once_across_a_sigkill(
    kafka_cluster: Cluster, tmp_path: Path
) -> None:
    """Two processors (``txn_processor.py``: read_committed group member, transaction per
    batch with its consumed offsets); one is SIGKILLed inside a transaction and restarted
    with its transactional id (which aborts the open transaction). The output, read
    committed, holds each input record's result exactly once, in per-key order."""
    source, sink = _topic(kafka_cluster, 2), _topic(kafka_cluster, 2)
    group = f"etl-{source}"
    count, keys = 300, 12

    def processor(name: str) -> KafkaMember:
        argv = [sys.executable, "-m", "tests.kafka.txn_processor", kafka_cluster.bootstrap,
                source, sink, group, f"{group}-{name}"]  # fmt: skip
        return KafkaMember.start(argv, tmp_path / f"{name}-{time.monotonic_ns()}.jsonl")

    produce_keyed(kafka_cluster, source, count // 2, keys)
    first, second = processor("a"), processor("b")
    restarted = None
    try:
        wait_for(lambda: first.committed() > 0, timeout_s=60)
        first.kill()  # most likely inside a transaction (the processor pauses in each)
        produce_keyed(kafka_cluster, source, count - count // 2, keys, start=count // 2)
        restarted = processor("a")
        outputs = _read(kafka_cluster, sink, 2, "read_committed", count, wait_s=120)
    finally:
        for member in (first, second, restarted):
            if member is not None:
                member.kill()
    expected = [f"key-{i % keys}:{i // keys}".upper() for i in range(count)]
    assert sorted(outputs) == sorted(expected)  # every result once: no loss, no duplicate
    by_key: dict[str, list[int]] = {}
    for value in outputs:  # one key is on one output partition, read in offset order
        key, n = value.split(":")
        by_key.setdefault(key, []).append(int(n))
    assert all(ns == sorted(ns) for ns in by_key.values())


def test_describe_and_list_transactions(kafka_cluster: Cluster) -> None:
    """DescribeTransactions, ListTransactions and DescribeProducers (kafka-python's wire
    classes), while a transaction is open."""
    topic = _topic(kafka_cluster, 2)
    tid = f"tx-{topic}"
    producer = _producer(kafka_cluster, tid)
    producer.begin_transaction()
    _send(producer, topic, ["a", "b"], 2)
    broker = next(iter(kafka_cluster.brokers.values()))
    with KafkaWire("127.0.0.1", broker.kafka_port, broker.ssl_context()) as wire:
        described = wire.call(
            ApiKey.DESCRIBE_TRANSACTIONS, 0, transactional_ids=[tid, "no-such-id"]
        ).transaction_states
        listed = wire.call(
            ApiKey.LIST_TRANSACTIONS, 1, state_filters=["Ongoing"], producer_id_filters=[],
            duration_filter=-1,
        ).transaction_states  # fmt: skip
        request = SERVED[ApiKey.DESCRIBE_PRODUCERS].request[0]
        producers = wire.call(
            ApiKey.DESCRIBE_PRODUCERS, 0,
            topics=[request.TopicRequest(name=topic, partition_indexes=[0, 1])],
        ).topics[0].partitions  # fmt: skip
    ours, unknown = described
    for partition in producers:  # each partition's leader: the producer, its open transaction
        assert partition.error_code == 0
        [active] = [p for p in partition.active_producers if p.producer_id == ours.producer_id]
        assert (active.producer_epoch, active.current_txn_start_offset) == (
            ours.producer_epoch,
            0,
        )
    assert (ours.error_code, ours.transaction_state) == (0, "Ongoing")
    assert sorted((t.topic, sorted(t.partitions)) for t in ours.topics) == [(topic, [0, 1])]
    assert unknown.error_code == KafkaError.TRANSACTIONAL_ID_NOT_FOUND
    assert tid in {t.transactional_id for t in listed}
    producer.abort_transaction(30)


def test_a_restarted_coordinator_completes_a_prepared_commit(tmp_path: Path) -> None:
    """The commit is decided (prepare_commit durable) while the partition's leader is
    paused, so no marker can be written; the coordinator is SIGKILLed and started again:
    it loads the prepared transaction and writes the markers once the leader is back, and
    the records become visible to read_committed consumers. (The killed coordinator's
    marker request may still be in the paused broker's socket and land too: the second
    marker of a closed transaction changes nothing, which this also exercises.) The
    producer's transaction steps go to the broker it bootstraps from (FindCoordinator
    answers that broker, which forwards them): the other one, so that EndTxn is decided
    while the leader is paused."""
    cluster = Cluster(tmp_path / "restart", broker_count=2).start()
    try:
        topic = unique_topic("txn-restart")
        with conveyor.Admin(cluster.url) as admin:
            admin.create_topic(topic, partitions=1, replication_factor=1)
            leader = admin.describe_topic(topic).partitions[0].leader
        assert leader is not None
        broker = cluster.brokers[leader]
        other = cluster.brokers[3 - leader]
        assert broker.process is not None and cluster.coordinator is not None
        with conveyor.Producer(
            cluster.url,
            bootstrap_servers=f"127.0.0.1:{other.kafka_port}",
            tls=TLSConfig.from_env() if cluster.tls_dir is not None else None,
            transactional_id=f"tx-{topic}",
        ) as producer:
            producer.begin_transaction()
            for i in range(3):
                producer.send(topic, f"decided-{i}".encode(), partition=0)
            producer.flush()
            broker.process.send_signal(signal.SIGSTOP)
            try:
                producer.commit_transaction()  # decided; the markers cannot be written yet
                before = cluster.coordinator.log_path.read_text(errors="replace")
                assert "prepare_commit" in before and "complete_commit" not in before
                cluster.coordinator.kill()
                cluster.coordinator.start()
                cluster.coordinator.wait_ready()
            finally:
                broker.process.send_signal(signal.SIGCONT)
        consumer = conveyor.Consumer(
            cluster.url, topic, enable_auto_commit=False, isolation="read_committed"
        )
        try:
            seen: list[str] = []
            wait_for(
                lambda: (
                    bool(seen.extend(m.value.decode() for m in consumer.poll(timeout=0.5)))
                    or len(seen) >= 3
                ),
                timeout_s=60,
            )
            assert seen == [f"decided-{i}" for i in range(3)]
            log_path = cluster.coordinator.log_path
            wait_for(  # completed by the restarted coordinator (the markers written again)
                lambda: "complete_commit" in log_path.read_text(errors="replace")[len(before) :],
                timeout_s=30,
            )
        finally:
            consumer.close()
    finally:
        cluster.stop()


def test_offset_fetch_require_stable_waits_for_the_transaction(kafka_cluster: Cluster) -> None:
    """KIP-447: while an open transaction holds a group's offset of a partition, OffsetFetch
    with require_stable answers UNSTABLE_OFFSET_COMMIT (the client retries) instead of the
    older committed offset; once committed, the new offset."""
    topic = _topic(kafka_cluster, 1)
    group = f"stable-{topic}"
    producer = _producer(kafka_cluster, f"tx-{topic}")
    consumer = confluent_kafka.Consumer(_config(kafka_cluster, **{"group.id": group}))
    producer.begin_transaction()
    _send(producer, topic, ["x"], 1)
    offsets = [confluent_kafka.TopicPartition(topic, 0, 1)]
    producer.send_offsets_to_transaction(offsets, consumer.consumer_group_metadata(), 30)
    broker = next(iter(kafka_cluster.brokers.values()))

    def fetch(stable: bool) -> Any:
        with KafkaWire("127.0.0.1", broker.kafka_port, broker.ssl_context()) as wire:
            request = SERVED[ApiKey.OFFSET_FETCH].request[7]
            topics = [request.OffsetFetchRequestTopic(name=topic, partition_indexes=[0])]
            answer = wire.call(
                ApiKey.OFFSET_FETCH, 7, group_id=group, topics=topics, require_stable=stable
            )
        return answer.topics[0].partitions[0]

    try:
        assert fetch(True).error_code == KafkaError.UNSTABLE_OFFSET_COMMIT
        assert (fetch(False).error_code, fetch(False).committed_offset) == (0, -1)
        producer.commit_transaction(30)
        assert (fetch(True).error_code, fetch(True).committed_offset) == (0, 1)
    finally:
        consumer.close()


@pytest.mark.parametrize("victim", ["coordinator", "leader"])
def test_exactly_once_across_a_sigkill_of(victim: str, tmp_path: Path) -> None:
    """The consume-transform-produce run of the test above on a cluster of its own (two
    brokers, RF=2), with the coordinator or the broker leading the output's partition 0
    SIGKILLed and started again mid-run; processors whose transaction failed meanwhile
    exit and are restarted (a supervisor's job). The output, read committed, holds each
    input's result exactly once, in per-key order. (With two brokers a coordinator
    restart once made Metadata answer without brokers, and librdkafka's transactional
    producers then hung: broker/metadata.py.)"""
    brokers = 2
    cluster = Cluster(tmp_path / "cluster", broker_count=brokers).start()
    members: list[KafkaMember] = []
    try:
        source, sink = _topic(cluster, 2, brokers), _topic(cluster, 2, brokers)
        group, count, keys = f"etl-{source}", 200, 8

        def processor(name: str) -> KafkaMember:
            argv = [sys.executable, "-m", "tests.kafka.txn_processor", cluster.bootstrap,
                    source, sink, group, f"{group}-{name}"]  # fmt: skip
            member = KafkaMember.start(argv, tmp_path / f"{name}-{time.monotonic_ns()}.jsonl")
            members.append(member)
            return member

        running = {"a": processor("a"), "b": processor("b")}
        produce_keyed(cluster, source, count // 2, keys)
        wait_for(lambda: running["a"].committed() > 0, timeout_s=60)
        if victim == "coordinator":
            killed = cluster.coordinator
        else:
            with conveyor.Admin(cluster.url) as admin:
                leader = admin.describe_topic(sink).partitions[0].leader
            killed = cluster.brokers[int(leader)]
        assert killed is not None
        killed.kill()
        killed.start()
        killed.wait_ready()
        produce_keyed(cluster, source, count - count // 2, keys, start=count // 2)
        reader = confluent_kafka.Consumer(
            _config(cluster, **{"group.id": "check", "isolation.level": "read_committed"})
        )
        seen: list[str] = []
        try:
            reader.assign(
                [confluent_kafka.TopicPartition(sink, p, confluent_kafka.OFFSET_BEGINNING)
                 for p in range(2)]
            )  # fmt: skip

            def done() -> bool:
                for name, member in running.items():
                    if member.process.poll() is not None:  # failed its transaction: restart
                        running[name] = processor(name)
                seen.extend(m.value().decode() for m in reader.consume(500, 0.5) if not m.error())
                return len(seen) >= count

            try:
                wait_for(done, timeout_s=150, what=f"{count} records read committed")
            except TimeoutError as exc:  # say where it stands (a run stalled once, 2 brokers)
                raise TimeoutError(
                    f"{exc}; read {len(seen)}; {_diagnosis(cluster, sink)}"
                ) from None
        finally:
            reader.close()
        outputs = _read(cluster, sink, 2, "read_committed", count)  # and nothing more
    finally:
        for member in members:
            member.kill()
        cluster.stop()
    expected = [f"key-{i % keys}:{i // keys}".upper() for i in range(count)]
    assert sorted(outputs) == sorted(expected)
    by_key: dict[str, list[int]] = {}
    for value in outputs:
        key, n = value.split(":")
        by_key.setdefault(key, []).append(int(n))
    assert all(ns == sorted(ns) for ns in by_key.values())


def _diagnosis(cluster: Cluster, topic: str) -> str:
    """Why read_committed readers may not reach the end of ``topic``'s two partitions:
    each partition's high watermark and last stable offset, the producers with an open
    transaction on its leader, and the coordinator's transactions that are not complete."""
    lines = []
    for isolation in ("read_uncommitted", "read_committed"):  # ends: high watermark, LSO
        checker = confluent_kafka.Consumer(
            _config(cluster, **{"group.id": "diagnosis", "isolation.level": isolation})
        )
        try:
            for p in range(2):
                tp = confluent_kafka.TopicPartition(topic, p)
                ends = checker.get_watermark_offsets(tp, timeout=10)
                lines.append(f"{topic}-{p} {isolation} (start, end): {ends}")
        except confluent_kafka.KafkaException as exc:
            lines.append(f"watermarks: {exc}")
        finally:
            checker.close()
    request = SERVED[ApiKey.DESCRIBE_PRODUCERS].request[0]
    for broker_id, broker in cluster.brokers.items():
        try:
            with KafkaWire("127.0.0.1", broker.kafka_port, broker.ssl_context()) as wire:
                producers = wire.call(
                    ApiKey.DESCRIBE_PRODUCERS, 0,
                    topics=[request.TopicRequest(name=topic, partition_indexes=[0, 1])],
                ).topics[0].partitions  # fmt: skip
                listed = wire.call(ApiKey.LIST_TRANSACTIONS, 0, state_filters=[],
                                   producer_id_filters=[]).transaction_states  # fmt: skip
        except (OSError, ConnectionError) as exc:
            lines.append(f"broker {broker_id}: {exc!r}")
            continue
        for partition in producers:
            open_txns = [
                (a.producer_id, a.producer_epoch, a.current_txn_start_offset)
                for a in partition.active_producers
                if a.current_txn_start_offset >= 0
            ]
            if partition.error_code == 0:
                lines.append(
                    f"broker {broker_id} leads {topic}-{partition.partition_index}: open "
                    f"transactions (producer, epoch, first offset) {open_txns}"
                )
        if not any(line.startswith("coordinator") for line in lines):
            unfinished = [
                (t.transactional_id, t.producer_id, t.transaction_state)
                for t in listed
                if t.transaction_state not in ("CompleteCommit", "CompleteAbort", "Empty")
            ]
            lines.append(f"coordinator's unfinished transactions: {unfinished}")
    return "; ".join(lines)
