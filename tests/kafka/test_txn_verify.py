"""KIP-890 part 1 against real coordinator and broker processes, over the raw Kafka protocol
(kafka-python's wire classes): a transactional batch for a partition that is not in its
producer's ongoing transaction is refused with INVALID_TXN_STATE and changes nothing
(no record, no open transaction holding back the last stable offset), whether the
partition was never added or its transaction already ended (a late write)."""

from __future__ import annotations

import urllib.request
from typing import Any

import msgspec
import pytest

from conveyor.protocol.kafka.apis import SERVED, ApiKey
from conveyor.protocol.kafka.errors import KafkaError
from conveyor.protocol.records import BatchBuilder
from conveyor.protocol.txn import (
    PUBLIC_PREFIX,
    TxnAddPartitionsRequest,
    TxnAddPartitionsResponse,
    TxnPartition,
    TxnProducer,
    TxnRoute,
)
from tests.integration.cluster import Cluster
from tests.kafka.wire import KafkaWire, list_offsets_request, metadata_topics, produce_request
from tests.waiting import wait_for

pytest.importorskip("kafka")
PARTITIONS = 3


def _txn_batch(producer_id: int, producer_epoch: int, sequence: int, count: int = 2) -> bytes:
    builder = BatchBuilder()
    builder.set_producer(producer_id, producer_epoch, sequence, transactional=True)
    for i in range(count):
        builder.append(b"v%d" % i, timestamp_ms=1)
    return builder.build()


class _Producer:
    """One transactional producer speaking the raw protocol."""

    def __init__(self, wire: KafkaWire, transactional_id: str, topic: str) -> None:
        self.wire, self.tid, self.topic = wire, transactional_id, topic
        ids = wire.call(
            ApiKey.INIT_PRODUCER_ID, 4, transactional_id=transactional_id,
            transaction_timeout_ms=60_000, producer_id=-1, producer_epoch=-1,
        )  # fmt: skip
        assert ids.error_code == 0
        self.producer_id, self.epoch = ids.producer_id, ids.producer_epoch
        self.sequences = [0] * PARTITIONS

    def add(self, partition: int) -> int:
        request = SERVED[ApiKey.ADD_PARTITIONS_TO_TXN].request[3]
        answer = self.wire.call(
            ApiKey.ADD_PARTITIONS_TO_TXN, 3,
            v3_and_below_transactional_id=self.tid, v3_and_below_producer_id=self.producer_id,
            v3_and_below_producer_epoch=self.epoch,
            v3_and_below_topics=[request.AddPartitionsToTxnTopic(
                name=self.topic, partitions=[partition])],
        )  # fmt: skip
        return int(
            answer.results_by_topic_v3_and_below[0].results_by_partition[0].partition_error_code
        )

    def produce(self, partition: int) -> int:
        batch = _txn_batch(self.producer_id, self.epoch, self.sequences[partition])
        fields = produce_request(9, self.topic, partition, batch, transactional_id=self.tid)
        answer = self.wire.call(ApiKey.PRODUCE, 9, **fields)
        error = int(answer.responses[0].partition_responses[0].error_code)
        if error == 0:
            self.sequences[partition] += 2
        return error

    def end(self, commit: bool) -> int:
        answer = self.wire.call(
            ApiKey.END_TXN, 3, transactional_id=self.tid, producer_id=self.producer_id,
            producer_epoch=self.epoch, committed=commit,
        )  # fmt: skip
        return int(answer.error_code)


def _offsets(wire: KafkaWire, topic: str, partition: int) -> tuple[int, int]:
    """(log end offset, last stable offset)."""
    found = []
    for isolation in (0, 1):
        fields = list_offsets_request(7, topic, partition, -1)
        answer = wire.call(ApiKey.LIST_OFFSETS, 7, **{**fields, "isolation_level": isolation})
        found.append(int(answer.topics[0].partitions[0].offset))
    return found[0], found[1]


def _add_over_http(cluster: Cluster, producer: _Producer, partition: int) -> None:
    """AddPartitionsToTxn through the coordinator's own route (Conveyor's client's way):
    the broker hears nothing of it, so it must ask the coordinator before the append."""
    body = TxnAddPartitionsRequest(
        TxnProducer(producer.tid, producer.producer_id, producer.epoch),
        [TxnPartition(producer.topic, partition)],
    )
    request = urllib.request.Request(
        f"{cluster.url}{PUBLIC_PREFIX}/{TxnRoute.ADD_PARTITIONS}",
        data=msgspec.json.encode(body),
        headers={"Content-Type": "application/json"},
    )
    context = cluster.coordinator.ssl_context()
    with urllib.request.urlopen(request, timeout=30, context=context) as response:
        answer = msgspec.json.decode(response.read(), type=TxnAddPartitionsResponse)
    assert [r.error for r in answer.partitions] == [None]


def _topic(wire: KafkaWire, name: str) -> None:
    request: Any = SERVED[ApiKey.CREATE_TOPICS].request[4]
    answer = wire.call(
        ApiKey.CREATE_TOPICS, 4, timeout_ms=30_000, validate_only=False,
        topics=[request.CreatableTopic(name=name, num_partitions=PARTITIONS,
                                       replication_factor=1, assignments=[], configs=[])],
    )  # fmt: skip
    assert answer.topics[0].error_code == 0

    def led() -> bool:
        found = wire.call(ApiKey.METADATA, 9, topics=metadata_topics(9, [name])).topics[0]
        return len(found.partitions) == PARTITIONS and all(
            p.error_code == 0 and p.leader_id >= 0 for p in found.partitions
        )

    wait_for(led, 15, f"leaders of topic {name}")


def test_a_transactional_write_outside_the_transaction_is_refused(kafka_cluster: Cluster) -> None:
    broker = next(iter(kafka_cluster.brokers.values()))
    assert broker.kafka_port is not None
    with KafkaWire("127.0.0.1", broker.kafka_port, broker.ssl_context()) as wire:
        topic = f"verify-{broker.kafka_port}"
        _topic(wire, topic)
        producer = _Producer(wire, f"tx-{topic}", topic)
        assert producer.add(0) == 0  # through this broker: it learns partition 0 at once
        _add_over_http(kafka_cluster, producer, 1)  # this broker must ask the coordinator

        # partition 2 was never added: refused, nothing written, no transaction left open
        assert producer.produce(2) == KafkaError.INVALID_TXN_STATE
        assert _offsets(wire, topic, 2) == (0, 0)

        assert producer.produce(0) == 0
        assert producer.produce(1) == 0
        assert _offsets(wire, topic, 1) == (2, 0)  # open: the LSO waits at its first offset
        assert producer.end(commit=True) == 0  # answered once decided: the markers follow
        wait_for(lambda: _offsets(wire, topic, 0) == (3, 3), 30, "the COMMIT marker")

        # a late write of the ended transaction (same epoch, next sequence): refused
        assert producer.produce(0) == KafkaError.INVALID_TXN_STATE
        assert _offsets(wire, topic, 0) == (3, 3)
        # the next transaction adds partition 0 again and writes there
        assert producer.add(0) == 0
        assert producer.produce(0) == 0
        assert producer.end(commit=False) == 0
        wait_for(lambda: _offsets(wire, topic, 0) == (6, 6), 30, "the ABORT marker")
