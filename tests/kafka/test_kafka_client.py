"""Conveyor's own Kafka connection (``transport/kafka_client.py``) against a real broker:
version negotiation, pipelined Produce answered in order, acks=0 sends, Fetch of what was
written, a connection reused by concurrent callers. SASL and TLS: test_security.py."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

from conveyor.protocol.kafka.apis import ApiKey
from conveyor.protocol.kafka.codec import new_request
from conveyor.protocol.records import decode_batches
from conveyor.transport.kafka_client import KafkaClientOptions, KafkaConnection
from tests.integration.cluster import Cluster
from tests.kafka.conftest import unique_topic
from tests.kafka.wire import fetch_request, metadata_topics, produce_request, sample_batch


def run(scenario: Callable[[], Awaitable[None]]) -> None:
    asyncio.run(asyncio.wait_for(scenario(), 60))


def test_negotiates_and_pipelines_produce_then_fetches(kafka_cluster: Cluster) -> None:
    topic = unique_topic("kc")

    async def scenario() -> None:
        connection = await KafkaConnection.open(kafka_cluster.bootstrap, KafkaClientOptions())
        try:
            metadata_v = connection.version(ApiKey.METADATA, 1, 12)
            produce_v = connection.version(ApiKey.PRODUCE, 3, 11)
            fetch_v = connection.version(ApiKey.FETCH, 4, 12)
            assert (metadata_v, produce_v, fetch_v) == (12, 11, 12)
            await _create(connection, topic)
            # 12 Produce requests on one connection, at most 5 in flight, answered in order
            replies = await asyncio.gather(
                *(
                    connection.call(
                        ApiKey.PRODUCE,
                        produce_v,
                        new_request(
                            ApiKey.PRODUCE,
                            produce_v,
                            **produce_request(produce_v, topic, 0, sample_batch(2)),
                        ),
                    )
                    for _ in range(12)
                )
            )
            answers = [r.responses[0].partition_responses[0] for r in replies]
            assert all(a.error_code == 0 for a in answers)
            assert [a.base_offset for a in answers] == list(range(0, 24, 2))
            # acks=0: nothing answered, and the next request's answer still matches (a
            # long poll from offset 24: requests of a connection run concurrently)
            fields = produce_request(produce_v, topic, 0, sample_batch(1), acks=0)
            await connection.send(
                ApiKey.PRODUCE, produce_v, new_request(ApiKey.PRODUCE, produce_v, **fields)
            )
            fetched = await connection.call(
                ApiKey.FETCH,
                fetch_v,
                new_request(
                    ApiKey.FETCH,
                    fetch_v,
                    **fetch_request(fetch_v, topic, 0, 24, max_wait_ms=10_000),
                ),
            )
            partition = fetched.responses[0].partitions[0]
            assert partition.error_code == 0 and partition.high_watermark == 25
            assert [r.offset for r in decode_batches(partition.records)] == [24]
        finally:
            await connection.close()

    run(scenario)


async def _create(connection: KafkaConnection, topic: str) -> None:
    """Metadata with auto-creation, until the partition has a leader."""
    version = connection.version(ApiKey.METADATA, 4, 12)
    for _ in range(100):
        request = new_request(
            ApiKey.METADATA,
            version,
            topics=metadata_topics(version, [topic]),
            allow_auto_topic_creation=True,
        )
        reply = await connection.call(ApiKey.METADATA, version, request)
        partitions = reply.topics[0].partitions
        if reply.topics[0].error_code == 0 and partitions and partitions[0].leader_id >= 0:
            return
        await asyncio.sleep(0.1)
    raise AssertionError(f"{topic} got no leader")
