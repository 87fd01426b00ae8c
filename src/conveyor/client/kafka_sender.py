"""The producer's Produce and InitProducerId requests and answers, as Kafka wire values
(pure: the I/O is ``sender.py``'s).

One request per broker carries every partition ready for it (``sender.py``), as Kafka's
producer sends; its answer gives each partition its base offset or its error.

``acks`` -1/1/0 for "all"/"1"/"0"; the broker's timeout is the producer's
``request_timeout_ms``. A partition's error code becomes Conveyor's typed error
(``protocol/kafka/errors.py``), so the sender's retry rules apply: NOT_LEADER_OR_FOLLOWER,
a closed connection or an unknown partition refresh the metadata (``kafka_metadata.py``)
and retry; a KIP-951 hint (v10+: the new leader and its endpoint) moves the route at once.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any, Final

from conveyor.protocol.errors import ConveyorError
from conveyor.protocol.kafka.codec import decode_response
from conveyor.protocol.kafka.errors import KafkaError, conveyor_error
from conveyor.protocol.kafka.produce_request import encode_produce_request, encode_produce_requests
from conveyor.protocol.kafka.produce_response import read_produce_offsets

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


def produce_requests(
    version: int,
    batches: Iterable[tuple[str, int, bytes]],
    acks: int,
    timeout_ms: int,
    *,
    transactional_id: str | None = None,
) -> Any:
    """A Produce of each (topic, partition, payload), grouped by topic (each partition
    once: the sender holds a partition's turn until its request is written)."""
    topics: dict[str, list[tuple[int, bytes]]] = {}
    for topic, partition, payload in batches:
        partitions = topics.get(topic)
        if partitions is None:
            topics[topic] = [(partition, payload)]
        else:
            partitions.append((partition, payload))
    return encode_produce_requests(
        version, list(topics.items()), acks, timeout_ms, transactional_id
    )


ProduceResults = Mapping[tuple[str, int], int | ConveyorError]


def produce_answer(api_key: int, api_version: int, frame: bytes) -> ProduceResults:
    """:func:`produce_results` of the Produce answer ``frame``, read by the connection
    (``KafkaConnection.start_call``'s ``decode``): by hand when every partition succeeded
    (2 us for one partition, against 9.6 with kafka-python's decoder and
    :func:`produce_results`), else by kafka-python, whose message carries the errors'
    details. An answer neither can read breaks the connection (``Decoder``)."""
    offsets = read_produce_offsets(frame, api_version)
    if offsets is not None:
        return offsets
    return produce_results(decode_response(api_key, api_version, frame))


def produce_results(reply: Any) -> dict[tuple[str, int], int | ConveyorError]:
    """Each partition's base offset in a Produce answer, or its typed error (with the
    KIP-951 leader hint as ``leader_url``/``leader_epoch`` details when sent)."""
    results: dict[tuple[str, int], int | ConveyorError] = {}
    for answer_topic in reply.responses:
        topic = answer_topic.name
        for answer in answer_topic.partition_responses:
            if answer.error_code == KafkaError.NONE:
                results[topic, answer.index] = int(answer.base_offset)
            else:
                results[topic, answer.index] = _partition_error(reply, answer, topic, answer.index)
    return results


def partition_result(results: ProduceResults, topic: str, partition: int) -> int:
    """``topic[partition]``'s base offset in :func:`produce_results`, or its typed error
    (an answer that leaves the partition out is an error too)."""
    result = results.get((topic, partition))
    if result is None:
        raise ConveyorError(f"Produce answer without {topic}[{partition}]")
    if isinstance(result, ConveyorError):
        raise result
    return result


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
