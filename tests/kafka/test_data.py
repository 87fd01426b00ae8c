"""Produce, Fetch, ListOffsets, OffsetForLeaderEpoch and InitProducerId through the Kafka
listener of a real broker: kcat (librdkafka) for the user's view, a raw socket with
kafka-python's encoder for exact fields and error codes."""

from __future__ import annotations

import subprocess
import threading
import time
import urllib.request
import uuid

import pytest
from prometheus_client.parser import text_string_to_metric_families

from conveyor.protocol.kafka.apis import SERVED, ApiKey
from conveyor.protocol.kafka.errors import KafkaError
from conveyor.protocol.kafka.produce_request import encode_produce_requests
from conveyor.protocol.partitioner import partition_for_key
from conveyor.protocol.records import decode_batches
from conveyor.protocol.txn import marker_batch
from tests.integration.cluster import Cluster
from tests.kafka.conftest import kcat_path
from tests.kafka.wire import (
    KafkaWire,
    encode_request,
    fetch_request,
    list_offsets_request,
    metadata_topics,
    produce_request,
    request_frame,
    sample_batch,
)
from tests.waiting import wait_for


def _wire(cluster: Cluster) -> KafkaWire:
    broker = cluster.brokers[1]
    assert broker.kafka_port is not None
    return KafkaWire("127.0.0.1", broker.kafka_port, broker.ssl_context())


def _topic(wire: KafkaWire, prefix: str) -> str:
    """A new topic (auto-created with 8 partitions, waiting for its leaders)."""
    name = f"{prefix}-{uuid.uuid4().hex[:6]}"
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline:
        answer = wire.call(ApiKey.METADATA, 9, topics=metadata_topics(9, [name]))
        leaders = all(p.leader_id >= 0 for p in answer.topics[0].partitions)
        if leaders and _produce_ok(wire, name):
            return name
        time.sleep(0.1)
    raise TimeoutError(f"topic {name} has no leaders")


def _produce_ok(wire: KafkaWire, topic: str) -> bool:
    """Partition 7 serves produces (the topic's replicas are open)."""
    answer = wire.call(ApiKey.PRODUCE, 9, **produce_request(9, topic, 7, sample_batch(1)))
    return bool(answer.responses[0].partition_responses[0].error_code == 0)


def _kcat(cluster: Cluster, *args: str, stdin: str | None = None) -> str:
    argv = [kcat_path(), "-b", cluster.bootstrap, *args]
    if cluster.ca is not None:
        argv += ["-X", "security.protocol=ssl", "-X", f"ssl.ca.location={cluster.ca}"]
    done = subprocess.run(
        argv, input=stdin, capture_output=True, text=True, timeout=60, check=False
    )
    assert done.returncode == 0, done.stderr
    return done.stdout


def test_kcat_produces_with_keys_on_conveyors_partitions_and_consumes(
    kafka_cluster: Cluster,
) -> None:
    with _wire(kafka_cluster) as wire:
        topic = _topic(wire, "kcat-data")
    lines = [f"user-{i % 5}:value-{i}" for i in range(40)]
    _kcat(
        kafka_cluster,
        "-t",
        topic,
        "-P",
        "-K:",
        "-X",
        "topic.partitioner=murmur2_random",
        "-X",
        "enable.idempotence=true",
        stdin="\n".join(lines) + "\n",
    )
    out = _kcat(kafka_cluster, "-t", topic, "-C", "-e", "-o", "beginning", "-f", "%p %o %k %s\n")
    got = [line.split(" ") for line in out.splitlines()]
    got = [g for g in got if g[2].startswith("user-")]  # not _topic's probe record
    assert sorted(g[3] for g in got) == sorted(line.split(":")[1] for line in lines)
    for partition, _, key, _ in got:  # the same partition as Conveyor's own client picks
        assert int(partition) == partition_for_key(key.encode(), 8)
    per_key = {}
    for _, offset, key, value in got:  # per key, in the order produced
        per_key.setdefault(key, []).append((int(offset), int(value.split("-")[1])))
    for pairs in per_key.values():
        assert [v for _, v in sorted(pairs)] == sorted(v for _, v in pairs)
    # from an offset of one partition, and from a timestamp
    partition = partition_for_key(b"user-1", 8)
    tail = _kcat(
        kafka_cluster, "-t", topic, "-C", "-e", "-p", str(partition), "-o", "2", "-f", "%o\n"
    )
    offsets = [int(x) for x in tail.split()]
    assert offsets and offsets[0] == 2
    future = int(time.time() * 1000) + 3_600_000
    empty = _kcat(kafka_cluster, "-t", topic, "-C", "-e", "-o", f"s@{future}", "-f", "%o\n")
    assert empty.split() == []
    past = _kcat(kafka_cluster, "-t", topic, "-C", "-e", "-o", "s@0", "-f", "%k\n")
    assert sorted(k for k in past.split() if k.startswith("user-")) == sorted(
        line.split(":")[0] for line in lines
    )


def test_produce_then_fetch_whole_batches_from_mid_batch(kafka_cluster: Cluster) -> None:
    with _wire(kafka_cluster) as wire:
        topic = _topic(wire, "wire-data")
        first = wire.call(ApiKey.PRODUCE, 9, **produce_request(9, topic, 2, sample_batch(5)))
        partition = first.responses[0].partition_responses[0]
        assert (partition.error_code, partition.base_offset) == (0, 0)
        second = wire.call(ApiKey.PRODUCE, 3, **produce_request(3, topic, 2, sample_batch(2)))
        assert second.responses[0].partition_responses[0].base_offset == 5
        fetched = wire.call(ApiKey.FETCH, 12, **fetch_request(12, topic, 2, 3))
        data = fetched.responses[0].partitions[0]
        assert (data.error_code, data.high_watermark, data.log_start_offset) == (0, 7, 0)
        assert fetched.session_id == 0 and data.preferred_read_replica == -1
        records = decode_batches(data.records)
        assert records[0].offset == 0  # the whole batch holding offset 3
        assert [r.offset for r in records] == list(range(7))
        old = wire.call(ApiKey.FETCH, 4, **fetch_request(4, topic, 2, 5))
        assert [r.offset for r in decode_batches(old.responses[0].partitions[0].records)] == [5, 6]


def test_fetch_long_polls_until_data_arrives(kafka_cluster: Cluster) -> None:
    with _wire(kafka_cluster) as wire, _wire(kafka_cluster) as producer:
        topic = _topic(wire, "wire-poll")
        started = time.monotonic()
        empty = wire.call(ApiKey.FETCH, 11, **fetch_request(11, topic, 3, 0, max_wait_ms=400))
        assert time.monotonic() - started >= 0.35
        assert empty.responses[0].partitions[0].records in (b"", None)

        def produce_later() -> None:
            time.sleep(0.3)
            producer.call(ApiKey.PRODUCE, 9, **produce_request(9, topic, 3, sample_batch(1)))

        thread = threading.Thread(target=produce_later)
        thread.start()
        started = time.monotonic()
        answer = wire.call(ApiKey.FETCH, 11, **fetch_request(11, topic, 3, 0, max_wait_ms=10_000))
        elapsed = time.monotonic() - started
        thread.join()
        assert 0.2 < elapsed < 5
        assert len(decode_batches(answer.responses[0].partitions[0].records)) == 1


def test_produce_refusals_store_nothing(kafka_cluster: Cluster) -> None:
    with _wire(kafka_cluster) as wire:
        topic = _topic(wire, "wire-refused")
        cases = [
            (
                produce_request(9, topic, 1, sample_batch(1), acks=2),
                KafkaError.INVALID_REQUIRED_ACKS,
            ),
            (  # transaction markers are the coordinator's to write (issue 21)
                produce_request(9, topic, 1, marker_batch(5, 0, True, 0, 1)),
                KafkaError.INVALID_RECORD,
            ),
            (produce_request(9, topic, 1, b"\x00" * 70), KafkaError.UNSUPPORTED_FOR_MESSAGE_FORMAT),
            (produce_request(9, topic, 1, _bad_crc(sample_batch(2))), KafkaError.CORRUPT_MESSAGE),
            (produce_request(9, topic, 99, sample_batch(1)), KafkaError.UNKNOWN_TOPIC_OR_PARTITION),
        ]
        for fields, code in cases:
            answer = wire.call(ApiKey.PRODUCE, 9, **fields)
            partition = answer.responses[0].partition_responses[0]
            assert partition.error_code == code, (fields, partition)
            assert partition.error_message
        latest = wire.call(ApiKey.LIST_OFFSETS, 5, **list_offsets_request(5, topic, 1, -1))
        assert latest.topics[0].partitions[0].offset == 0


def _bad_crc(batch: bytes) -> bytes:
    damaged = bytearray(batch)
    damaged[-1] ^= 0xFF  # in the records: the CRC no longer matches
    return bytes(damaged)


def test_acks_zero_sends_no_answer(kafka_cluster: Cluster) -> None:
    with _wire(kafka_cluster) as wire:
        topic = _topic(wire, "wire-acks0")
        body = produce_request(9, topic, 4, sample_batch(2), acks=0)
        from tests.kafka.wire import encode_request

        wire.send_raw(
            request_frame(ApiKey.PRODUCE, 9, encode_request(ApiKey.PRODUCE, 9, **body), 500)
        )
        # the next answer on the connection is the next request's: nothing was sent for acks=0

        def latest() -> int:
            answer = wire.call(ApiKey.LIST_OFFSETS, 5, **list_offsets_request(5, topic, 4, -1))
            return int(answer.topics[0].partitions[0].offset)

        # The latest offset is the high watermark: the write counts once it is durable
        # (fsync before the high watermark moves), which the unanswered produce cannot tell.
        wait_for(lambda: latest() == 2, 10, "the acks=0 write durable")


def test_list_offsets_and_offset_for_leader_epoch(kafka_cluster: Cluster) -> None:
    with _wire(kafka_cluster) as wire:
        topic = _topic(wire, "wire-offsets")
        before_ms = int(time.time() * 1000) - 1000
        wire.call(ApiKey.PRODUCE, 9, **produce_request(9, topic, 0, sample_batch(3)))
        time.sleep(0.01)
        later_ms = int(time.time() * 1000) + 1
        wire.call(
            ApiKey.PRODUCE,
            9,
            **produce_request(9, topic, 0, sample_batch(2, timestamp_ms=later_ms)),
        )

        def offset(timestamp: int) -> int:
            answer = wire.call(
                ApiKey.LIST_OFFSETS, 6, **list_offsets_request(6, topic, 0, timestamp)
            )
            found = answer.topics[0].partitions[0]
            assert found.error_code == 0 and found.leader_epoch == 0
            return int(found.offset)

        assert (offset(-2), offset(-1)) == (0, 5)
        largest = wire.call(ApiKey.LIST_OFFSETS, 7, **list_offsets_request(7, topic, 0, -3))
        found = largest.topics[0].partitions[0]
        assert (found.offset, found.timestamp) == (3, later_ms)  # first record of the later batch
        assert offset(before_ms) == 0
        assert offset(later_ms) == 3
        assert offset(later_ms + 3_600_000) == -1
        request = ApiKey.OFFSET_FOR_LEADER_EPOCH
        cls = (
            __import__("conveyor.protocol.kafka.apis", fromlist=["SERVED"])
            .SERVED[request]
            .request[4]
        )
        topic_cls = cls.OffsetForLeaderTopic
        answer = wire.call(
            request,
            4,
            replica_id=-1,
            topics=[
                topic_cls(
                    topic=topic,
                    partitions=[
                        topic_cls.OffsetForLeaderPartition(
                            partition=0, current_leader_epoch=0, leader_epoch=0
                        )
                    ],
                )
            ],
        )
        end = answer.topics[0].partitions[0]
        assert (end.error_code, end.leader_epoch, end.end_offset) == (0, 0, 5)


@pytest.mark.parametrize("version", [0, 4])
def test_init_producer_id(kafka_cluster: Cluster, version: int) -> None:
    with _wire(kafka_cluster) as wire:
        fields = {"transactional_id": None, "transaction_timeout_ms": 60_000}
        if version >= 3:
            fields.update(producer_id=-1, producer_epoch=-1)
        first = wire.call(ApiKey.INIT_PRODUCER_ID, version, **fields)
        second = wire.call(ApiKey.INIT_PRODUCER_ID, version, **fields)
        assert first.error_code == 0 and first.producer_id >= 0
        assert second.producer_id != first.producer_id
        fields["transactional_id"] = f"orders-tx-{version}"
        transactional = wire.call(ApiKey.INIT_PRODUCER_ID, version, **fields)
        again = wire.call(ApiKey.INIT_PRODUCER_ID, version, **fields)
        assert transactional.error_code == again.error_code == 0
        assert again.producer_id == transactional.producer_id
        assert again.producer_epoch == transactional.producer_epoch + 1  # the first is fenced


def test_idempotent_retries_and_sequence_gaps(kafka_cluster: Cluster) -> None:
    """The broker's idempotent-producer state through Kafka: a retried batch is answered
    with its original offset and not stored again; a gap is OUT_OF_ORDER_SEQUENCE_NUMBER."""
    with _wire(kafka_cluster) as wire:
        topic = _topic(wire, "wire-idempotent")
        ids = wire.call(
            ApiKey.INIT_PRODUCER_ID,
            4,
            transactional_id=None,
            transaction_timeout_ms=60_000,
            producer_id=-1,
            producer_epoch=-1,
        )
        batch = {"producer_id": ids.producer_id, "producer_epoch": ids.producer_epoch}

        def produce(sequence: int) -> tuple[int, int]:
            records = sample_batch(2, base_sequence=sequence, **batch)
            answer = wire.call(ApiKey.PRODUCE, 9, **produce_request(9, topic, 5, records))
            result = answer.responses[0].partition_responses[0]
            return int(result.error_code), int(result.base_offset)

        assert produce(0) == (0, 0)
        assert produce(0) == (0, 0)  # a retry: the same offset, nothing new stored
        assert produce(2) == (0, 2)
        assert produce(7)[0] == KafkaError.OUT_OF_ORDER_SEQUENCE_NUMBER
        latest = wire.call(ApiKey.LIST_OFFSETS, 7, **list_offsets_request(7, topic, 5, -1))
        assert latest.topics[0].partitions[0].offset == 4


def test_list_offsets_answers_the_record_not_its_batch(kafka_cluster: Cluster) -> None:
    """One batch of records stamped 1000, 2000, 3000: by time 1500 is the second record
    (its own timestamp answered), MAX_TIMESTAMP the third, as Kafka answers."""
    from kafka.record.default_records import DefaultRecordBatchBuilder

    import conveyor.protocol.kafka.apis  # noqa: F401 -- kafka-python without its warning

    builder = DefaultRecordBatchBuilder(
        magic=2,
        compression_type=0,
        is_transactional=0,
        producer_id=-1,
        producer_epoch=-1,
        base_sequence=-1,
        batch_size=1 << 20,
    )
    for index, timestamp in enumerate((1000, 2000, 3000)):
        builder.append(index, timestamp, None, b"v%d" % index, [])
    batch = bytes(builder.build())
    with _wire(kafka_cluster) as wire:
        topic = _topic(wire, "wire-by-time")
        wire.call(ApiKey.PRODUCE, 9, **produce_request(9, topic, 6, batch))

        def lookup(timestamp: int) -> tuple[int, int]:
            answer = wire.call(
                ApiKey.LIST_OFFSETS, 7, **list_offsets_request(7, topic, 6, timestamp)
            )
            found = answer.topics[0].partitions[0]
            return int(found.offset), int(found.timestamp)

        assert lookup(500) == (0, 1000)
        assert lookup(1500) == (1, 2000)
        assert lookup(3000) == (2, 3000)
        assert lookup(-3) == (2, 3000)
        assert lookup(3001) == (-1, -1)


def test_pipelined_produces_append_a_partition_in_the_order_sent(kafka_cluster: Cluster) -> None:
    """A request for three partitions, then one for a partition of it, written at once on
    one connection: partition 0's batches are appended in the order sent. The broker
    appends a request's partitions before the next request starts (a producer sending one
    request per broker with batches in flight relies on it; Kafka's brokers handle a
    connection's requests one at a time)."""
    with _wire(kafka_cluster) as wire:
        topic = _topic(wire, "order")
        first = [(topic, [(1, sample_batch(1)), (2, sample_batch(1)), (0, sample_batch(2))])]
        second = [(topic, [(0, sample_batch(1))])]
        wire.send_raw(
            request_frame(ApiKey.PRODUCE, 9, encode_produce_requests(9, first, -1, 10_000), 101)
            + request_frame(ApiKey.PRODUCE, 9, encode_produce_requests(9, second, -1, 10_000), 102)
        )
        replies = []
        for _ in range(2):
            frame = wire.read_frame()
            reply = SERVED[ApiKey.PRODUCE].response[9].decode(memoryview(frame[5:]), version=9)
            replies.append({p.index: p for p in reply.responses[0].partition_responses})
    assert [p.error_code for p in replies[0].values()] == [0, 0, 0]
    assert replies[0][0].base_offset == 0
    assert replies[1][0].error_code == 0 and replies[1][0].base_offset == 2


def _inline_rounds(cluster: Cluster) -> float:
    url = cluster.brokers[1].url + "/metrics"
    with urllib.request.urlopen(url, timeout=10) as answer:
        text = answer.read().decode()
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == "conveyor_broker_flush_rounds_inline_total":
                return float(sample.value)
    raise AssertionError("no conveyor_broker_flush_rounds_inline_total in /metrics")


def test_a_parked_consumer_fetch_does_not_keep_a_lone_produce_off_the_inline_flush(
    kafka_cluster: Cluster,
) -> None:
    """A consumer's long-poll at the log's end is not work the broker has to serve: while
    one is parked, a lone small acks=all produce still fsyncs on the loop (an inline flush
    round, storage/flusher.py), and the fetch still wakes for its partition's data."""
    with _wire(kafka_cluster) as consumer, _wire(kafka_cluster) as producer:
        topic = _topic(consumer, "parked")
        producer.call(ApiKey.PRODUCE, 9, **produce_request(9, topic, 5, sample_batch(1)))
        consumer.send_raw(
            request_frame(
                ApiKey.FETCH,
                11,
                encode_request(
                    ApiKey.FETCH, 11, **fetch_request(11, topic, 3, 0, max_wait_ms=20_000)
                ),
                7,
            )
        )
        before = _inline_rounds(kafka_cluster)
        for _ in range(5):
            answer = producer.call(
                ApiKey.PRODUCE, 9, **produce_request(9, topic, 5, sample_batch(1))
            )
            assert answer.responses[0].partition_responses[0].error_code == 0
        inline = _inline_rounds(kafka_cluster) - before
        # The fetch is still parked (partition 3 has no data yet): it wakes for its data.
        producer.call(ApiKey.PRODUCE, 9, **produce_request(9, topic, 3, sample_batch(2)))
        frame = consumer.read_frame()
        reply = SERVED[ApiKey.FETCH].response[11].decode(memoryview(frame[4:]), version=11)
        assert len(decode_batches(reply.responses[0].partitions[0].records)) == 2  # its 2 records
    assert inline >= 1, "every produce handed its fsync to the flush threads"
