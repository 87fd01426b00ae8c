"""The producer's send path over the Kafka protocol (``transport="kafka"``).

The :class:`Sender` drain loop, batching, retries, backoff and idempotence rules are the
HTTP path's, unchanged; what differs is the two requests that leave the process:

- each drained batch is one Produce request (v3-11, the highest the leader serves) on the
  leader's Kafka connection, ``acks`` -1/1/0 for "all"/"1"/"0", the broker's timeout the
  producer's ``request_timeout_ms``. Requests to one broker are pipelined on one
  connection (up to ``max_in_flight``); the accumulator keeps one batch per partition in
  flight, so per-partition order holds as over HTTP;
- the producer id and epoch come from InitProducerId (v0-4) to any broker, which asks the
  coordinator: the same ids, sequences and epoch bumps as the HTTP path.

A partition's error code becomes Conveyor's typed error (``protocol/kafka/errors.py``), so
the sender's retry rules apply as they are: NOT_LEADER_OR_FOLLOWER, a closed connection
or an unknown partition refresh the metadata (over Kafka too, ``kafka_metadata.py``) and
retry; a KIP-951 hint (v10+: the new leader and its endpoint) moves the route at once.
A transactional producer's batches carry its ``transactional_id``; its producer id and
epoch, and its transaction's steps, come from the transaction coordinator over Kafka
(``kafka_txn.py``).
"""

from __future__ import annotations

from typing import Any, Final

from conveyor.client.accumulator import ProducerBatch
from conveyor.client.futures import BatchCompletion
from conveyor.client.kafka_metadata import KafkaMetadataClient
from conveyor.client.sender import REQUEST_TIMEOUT_MARGIN_S, Sender
from conveyor.protocol.errors import ConveyorError
from conveyor.protocol.kafka.apis import ApiKey
from conveyor.protocol.kafka.codec import new_request
from conveyor.protocol.kafka.errors import KafkaError, conveyor_error
from conveyor.protocol.kafka.produce_request import encode_produce_request
from conveyor.transport.kafka_client import KafkaConnection

PRODUCE_VERSIONS: Final = (3, 11)  # v3: record batches (magic 2); v11: Conveyor's top
INIT_PRODUCER_ID_VERSIONS: Final = (0, 4)
KAFKA_ACKS: Final = {"all": -1, "1": 1, "0": 0}


class KafkaSender(Sender):
    """A :class:`Sender` whose produce and InitProducerId requests go over Kafka."""

    def __init__(self, *, metadata: KafkaMetadataClient, **rest: Any) -> None:
        """The :class:`Sender`'s arguments; ``metadata`` also holds the connections the
        requests go on (its ``coordinator_url`` goes unused: InitProducerId goes to a
        broker)."""
        super().__init__(metadata=metadata, **rest)
        self._kafka_metadata = metadata
        self._connections = metadata.connections
        self._kafka_acks = KAFKA_ACKS[self._acks]

    async def _send_batch(
        self, leader_url: str, batch: ProducerBatch[BatchCompletion], payload: bytes
    ) -> int:
        connection = await self._connections.get(leader_url)
        version = connection.version(ApiKey.PRODUCE, *PRODUCE_VERSIONS)
        txn = self.transaction
        request = produce_request(
            version,
            batch.topic,
            batch.partition,
            payload,
            self._kafka_acks,
            self._request_timeout_ms,
            transactional_id=None if txn is None else txn.transactional_id,
        )
        if self._kafka_acks == 0:
            await connection.send(ApiKey.PRODUCE, version, request)
            return -1
        timeout_ms = self._request_timeout_ms + int(REQUEST_TIMEOUT_MARGIN_S * 1000)
        reply = await connection.call(ApiKey.PRODUCE, version, request, timeout_ms=timeout_ms)
        return produce_result(reply, batch.topic, batch.partition)

    async def _init_producer_id(self, producer_id: int, epoch: int) -> tuple[int, int]:
        connection = await self._any_connection()
        version = connection.version(ApiKey.INIT_PRODUCER_ID, *INIT_PRODUCER_ID_VERSIONS)
        fields: dict[str, Any] = {"transactional_id": None, "transaction_timeout_ms": -1}
        if version >= 3:  # v3+ (KIP-360): bump the epoch of the id we hold
            fields |= {"producer_id": producer_id, "producer_epoch": epoch}
        request = new_request(ApiKey.INIT_PRODUCER_ID, version, **fields)
        reply = await connection.call(ApiKey.INIT_PRODUCER_ID, version, request)
        if reply.error_code:
            raise conveyor_error(reply.error_code, "InitProducerId")
        return reply.producer_id, reply.producer_epoch

    async def _any_connection(self) -> KafkaConnection:
        return await self._kafka_metadata.any_connection()

    async def close_transport(self) -> None:
        await self._connections.close()


def produce_request(  # noqa: PLR0917 -- the request's own fields
    version: int,
    topic: str,
    partition: int,
    payload: bytes,
    acks: int,
    timeout_ms: int,
    *,
    transactional_id: str | None = None,
) -> Any:
    """A one-partition Produce of ``payload`` (one encoded record batch); a
    transactional producer's names its ``transactional_id`` (Kafka's brokers authorize
    the write by it). Encoded by hand (``protocol/kafka/produce_request.py``: a few
    microseconds where kafka-python's classes took 34 us)."""
    return encode_produce_request(
        version, topic, partition, payload, acks, timeout_ms, transactional_id
    )


def produce_result(reply: Any, topic: str, partition: int) -> int:
    """The base offset a one-partition Produce answer gives, or its typed error (with
    the KIP-951 leader hint as ``leader_url``/``leader_epoch`` details when sent)."""
    for answer_topic in reply.responses:
        for answer in answer_topic.partition_responses:
            if answer_topic.name != topic or answer.index != partition:
                continue
            if answer.error_code == KafkaError.NONE:
                return int(answer.base_offset)
            raise _partition_error(reply, answer, topic, partition)
    raise ConveyorError(f"Produce answer without {topic}[{partition}]")


def _partition_error(reply: Any, answer: Any, topic: str, partition: int) -> ConveyorError:
    details: dict[str, object] = {}
    leader = getattr(answer, "current_leader", None)
    endpoints = {e.node_id: e for e in getattr(reply, "node_endpoints", None) or ()}
    if leader is not None and leader.leader_id in endpoints:
        endpoint = endpoints[leader.leader_id]
        details = {
            "leader_url": f"{endpoint.host}:{endpoint.port}",
            "leader_epoch": leader.leader_epoch,
        }
    message = answer.error_message or f"produce to {topic}[{partition}]"
    return conveyor_error(answer.error_code, message, **details)
