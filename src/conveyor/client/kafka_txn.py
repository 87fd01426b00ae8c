"""A transactional producer's steps over the Kafka protocol (``transport="kafka"``).

The :class:`~conveyor.client.transactions.TxnTransport` of the Kafka transport: the
state machine (``transactions.py``: retries, abort-only and fatal errors) is the one
the HTTP transport uses; this module only says how a step is sent, as Kafka's producer
sends it:

- **FindCoordinator** (v1-4) with key type 1 (the transactional id) for the transaction
  steps, key type 0 (the group) for TxnOffsetCommit; the answer is kept until a step is
  answered NOT_COORDINATOR / COORDINATOR_NOT_AVAILABLE or its connection fails, then
  asked again (every Conveyor broker answers for itself: it forwards to the one
  coordinator; a Kafka cluster would name another broker). The steps go on a connection
  of their own to it (a lane of ``KafkaConnections``), not behind Produce requests;
- **InitProducerId** (v0-4) with the transactional id and ``transaction.timeout.ms``;
- **AddPartitionsToTxn** (v0-3), **AddOffsetsToTxn** (v0-3), **EndTxn** (v0-3) to the
  transaction coordinator, **TxnOffsetCommit** (v0-3; v3 carries the consumer's member
  id, generation and instance id, KIP-447) to the group's.

Answers become the coordinator's own wire types with ``ErrorCode`` names
(``protocol/kafka/errors.conveyor_code``: PRODUCER_FENCED and INVALID_PRODUCER_EPOCH are
PRODUCER_FENCED; COORDINATOR_LOAD_IN_PROGRESS, COORDINATOR_NOT_AVAILABLE and
NOT_COORDINATOR are NOT_COORDINATOR, retried; TRANSACTIONAL_ID_AUTHORIZATION_FAILED is
FORBIDDEN), so both transports' answers mean the same to the state machine.
"""

from __future__ import annotations

from typing import Any, Final

from conveyor.client.kafka_metadata import KafkaMetadataClient
from conveyor.protocol.errors import ConveyorError, RetriableError
from conveyor.protocol.kafka.apis import SERVED, ApiKey
from conveyor.protocol.kafka.codec import new_request
from conveyor.protocol.kafka.errors import KafkaError, conveyor_code, conveyor_error
from conveyor.protocol.txn import (
    TxnAddOffsetsRequest,
    TxnAddPartitionsRequest,
    TxnAddPartitionsResponse,
    TxnEndRequest,
    TxnInitRequest,
    TxnInitResponse,
    TxnOffsetCommitRequest,
    TxnOffsetCommitResponse,
    TxnPartitionResult,
    TxnResult,
)
from conveyor.transport.kafka_client import KafkaConnection

FIND_COORDINATOR_VERSIONS: Final = (1, 4)  # v1: key type; v4: batched keys (KIP-699)
INIT_PRODUCER_ID_VERSIONS: Final = (0, 4)
TXN_VERSIONS: Final = (0, 3)  # AddPartitionsToTxn, AddOffsetsToTxn, EndTxn, TxnOffsetCommit
TXN_LANE: Final = "txn"  # KafkaConnections' lane for the coordinator steps
GROUP_KEY: Final = 0
TRANSACTION_KEY: Final = 1
# answers after which the coordinator is looked up again
_MOVED: Final = frozenset(
    {
        KafkaError.NOT_COORDINATOR,
        KafkaError.COORDINATOR_NOT_AVAILABLE,
        KafkaError.COORDINATOR_LOAD_IN_PROGRESS,
    }
)


def error_name(code: int) -> str | None:
    """A Kafka error code in an answer as the ``ErrorCode`` name the coordinator would
    have answered over HTTP (None: no error)."""
    return None if code == KafkaError.NONE else conveyor_code(code).name


class KafkaTxnTransport:
    """The five steps as Kafka requests (module docstring); shares the producer's
    connections (its metadata client's), which the sender closes."""

    def __init__(self, metadata: KafkaMetadataClient, request_timeout_ms: int) -> None:
        self._metadata = metadata
        self._connections = metadata.connections
        self._timeout_ms = request_timeout_ms
        self._coordinators: dict[tuple[int, str], str] = {}  # (key type, key) -> address

    # ---- finding the coordinator -------------------------------------------------------------

    async def _coordinator(self, key_type: int, key: str) -> KafkaConnection:
        address = self._coordinators.get((key_type, key))
        if address is None:
            address = await self._find(key_type, key)
            self._coordinators[(key_type, key)] = address
        # its own connection: a broker answers one connection's requests in order, so a
        # step would otherwise wait behind the produce requests in flight (acks=all)
        return await self._connections.get(address, lane=TXN_LANE)

    async def _find(self, key_type: int, key: str) -> str:
        connection = await self._metadata.any_connection()
        version = connection.version(ApiKey.FIND_COORDINATOR, *FIND_COORDINATOR_VERSIONS)
        fields: dict[str, Any] = {"key_type": key_type}
        fields |= {"coordinator_keys": [key]} if version >= 4 else {"key": key}
        request = new_request(ApiKey.FIND_COORDINATOR, version, **fields)
        reply = await connection.call(
            ApiKey.FIND_COORDINATOR, version, request, timeout_ms=self._timeout_ms
        )
        found = reply.coordinators[0] if version >= 4 and reply.coordinators else reply
        if found.error_code:
            raise _coordinator_error(found.error_code, key_type, key)
        return f"{found.host}:{found.port}"

    async def _send(self, key_type: int, key: str, api: ApiKey, fields: dict[str, Any]) -> Any:
        """One request to the coordinator for ``key``; a failed connection forgets it."""
        connection = await self._coordinator(key_type, key)
        versions = INIT_PRODUCER_ID_VERSIONS if api is ApiKey.INIT_PRODUCER_ID else TXN_VERSIONS
        version = connection.version(api, *versions)
        request = new_request(api, version, **_for_version(api, version, fields))
        try:
            return await connection.call(api, version, request, timeout_ms=self._timeout_ms)
        except RetriableError:
            self._coordinators.pop((key_type, key), None)
            raise

    def _answered(self, key_type: int, key: str, code: int) -> str | None:
        if code in _MOVED:
            self._coordinators.pop((key_type, key), None)
        return error_name(code)

    # ---- the steps ---------------------------------------------------------------------------

    async def init(self, request: TxnInitRequest) -> TxnInitResponse:
        tid = request.transactional_id
        fields = {
            "transactional_id": tid,
            "transaction_timeout_ms": request.transaction_timeout_ms,
            "producer_id": request.producer_id,
            "producer_epoch": request.producer_epoch,
        }
        reply = await self._send(TRANSACTION_KEY, tid, ApiKey.INIT_PRODUCER_ID, fields)
        return TxnInitResponse(
            error=self._answered(TRANSACTION_KEY, tid, reply.error_code),
            producer_id=reply.producer_id,
            producer_epoch=reply.producer_epoch,
        )

    async def add_partitions(self, request: TxnAddPartitionsRequest) -> TxnAddPartitionsResponse:
        producer, tid = request.producer, request.producer.transactional_id
        topic_cls = SERVED[ApiKey.ADD_PARTITIONS_TO_TXN].request[3].AddPartitionsToTxnTopic
        by_topic: dict[str, list[int]] = {}
        for p in request.partitions:
            by_topic.setdefault(p.topic, []).append(p.partition)
        fields = {
            "v3_and_below_transactional_id": tid,
            "v3_and_below_producer_id": producer.producer_id,
            "v3_and_below_producer_epoch": producer.producer_epoch,
            "v3_and_below_topics": [topic_cls(name=t, partitions=ps) for t, ps in by_topic.items()],
        }
        reply = await self._send(TRANSACTION_KEY, tid, ApiKey.ADD_PARTITIONS_TO_TXN, fields)
        results = [
            TxnPartitionResult(
                topic.name,
                answer.partition_index,
                self._answered(TRANSACTION_KEY, tid, answer.partition_error_code),
            )
            for topic in reply.results_by_topic_v3_and_below
            for answer in topic.results_by_partition
        ]
        return TxnAddPartitionsResponse(partitions=results)

    async def add_offsets(self, request: TxnAddOffsetsRequest) -> TxnResult:
        tid = request.producer.transactional_id
        fields = {**_producer_fields(request.producer), "group_id": request.group}
        reply = await self._send(TRANSACTION_KEY, tid, ApiKey.ADD_OFFSETS_TO_TXN, fields)
        return TxnResult(self._answered(TRANSACTION_KEY, tid, reply.error_code))

    async def offset_commit(self, request: TxnOffsetCommitRequest) -> TxnOffsetCommitResponse:
        """To the group's coordinator (Kafka's rule), with the KIP-447 member fields."""
        topic_cls = SERVED[ApiKey.TXN_OFFSET_COMMIT].request[3].TxnOffsetCommitRequestTopic
        partition_cls = topic_cls.TxnOffsetCommitRequestPartition
        by_topic: dict[str, list[Any]] = {}
        for o in request.offsets:
            by_topic.setdefault(o.topic, []).append(
                partition_cls(
                    partition_index=o.partition,
                    committed_offset=o.offset,
                    committed_leader_epoch=-1,
                    committed_metadata=None,
                )
            )
        fields = {
            **_producer_fields(request.producer),
            "group_id": request.group,
            "generation_id": request.generation,
            "member_id": request.member_id,
            "group_instance_id": request.instance_id,
            "topics": [topic_cls(name=t, partitions=ps) for t, ps in by_topic.items()],
        }
        reply = await self._send(GROUP_KEY, request.group, ApiKey.TXN_OFFSET_COMMIT, fields)
        results = [
            TxnPartitionResult(
                topic.name,
                answer.partition_index,
                self._answered(GROUP_KEY, request.group, answer.error_code),
            )
            for topic in reply.topics
            for answer in topic.partitions
        ]
        return TxnOffsetCommitResponse(partitions=results)

    async def end(self, request: TxnEndRequest) -> TxnResult:
        tid = request.producer.transactional_id
        fields = {**_producer_fields(request.producer), "committed": request.commit}
        reply = await self._send(TRANSACTION_KEY, tid, ApiKey.END_TXN, fields)
        return TxnResult(self._answered(TRANSACTION_KEY, tid, reply.error_code))


def _producer_fields(producer: Any) -> dict[str, Any]:
    return {
        "transactional_id": producer.transactional_id,
        "producer_id": producer.producer_id,
        "producer_epoch": producer.producer_epoch,
    }


def _for_version(api: ApiKey, version: int, fields: dict[str, Any]) -> dict[str, Any]:
    """Leave out the fields ``version`` does not have: InitProducerId's producer id and
    epoch (v3+, KIP-360), TxnOffsetCommit's member fields (v3+, KIP-447: a broker that
    only speaks v0-2 cannot fence a zombie consumer)."""
    dropped: set[str] = set()
    if api is ApiKey.INIT_PRODUCER_ID and version < 3:
        dropped = {"producer_id", "producer_epoch"}
    elif api is ApiKey.TXN_OFFSET_COMMIT and version < 3:
        dropped = {"generation_id", "member_id", "group_instance_id"}
    return {k: v for k, v in fields.items() if k not in dropped}


def _coordinator_error(code: int, key_type: int, key: str) -> ConveyorError:
    kind = "transaction" if key_type == TRANSACTION_KEY else "group"
    return conveyor_error(code, f"FindCoordinator for {kind} {key!r}")
