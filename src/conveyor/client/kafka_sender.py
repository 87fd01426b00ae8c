"""The producer's Produce and InitProducerId requests and answers, as Kafka wire values
(pure: the I/O is ``sender.py``'s).

``acks`` -1/1/0 for "all"/"1"/"0"; the broker's timeout is the producer's
``request_timeout_ms``. A partition's error code becomes Conveyor's typed error
(``protocol/kafka/errors.py``), so the sender's retry rules apply: NOT_LEADER_OR_FOLLOWER,
a closed connection or an unknown partition refresh the metadata (``kafka_metadata.py``)
and retry; a KIP-951 hint (v10+: the new leader and its endpoint) moves the route at once.
"""

from __future__ import annotations

from typing import Any, Final

from conveyor.protocol.errors import ConveyorError
from conveyor.protocol.kafka.errors import KafkaError, conveyor_error
from conveyor.protocol.kafka.produce_request import encode_produce_request

PRODUCE_VERSIONS: Final = (3, 11)  # v3: record batches (magic 2); v11: Conveyor's top
INIT_PRODUCER_ID_VERSIONS: Final = (0, 4)
KAFKA_ACKS: Final = {"all": -1, "1": 1, "0": 0}


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
