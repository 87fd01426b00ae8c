"""DescribeCluster: the cluster id, the controller and every live broker with a Kafka
listener, from the coordinator's cluster status (the ``GET /v1/cluster`` operation); the
same brokers and controller as Metadata answers (``metadata.kafka_nodes``). Asked for,
the principal's authorized cluster operations in Kafka's terms: every one with cluster
``admin`` (or auth off), DESCRIBE and DESCRIBE_CONFIGS with ``describe``, and
IDEMPOTENT_WRITE with ``idempotent_write`` or ``produce`` on some topic (KIP-679)."""

from __future__ import annotations

from typing import Any

from conveyor.broker.kafka.admin_topics import TopicOps
from conveyor.broker.kafka.auth import Authorizer
from conveyor.broker.kafka.authorized_ops import cluster_operations
from conveyor.broker.kafka.metadata import kafka_nodes
from conveyor.broker.kafka.registry import RequestContext
from conveyor.protocol.errors import ConveyorError
from conveyor.protocol.kafka.apis import SERVED, ApiKey
from conveyor.protocol.kafka.errors import KafkaError, kafka_error

_BROKERS_ENDPOINT = 1  # EndpointType: 1 brokers, 2 controllers


class DescribeClusterHandler:
    def __init__(self, topics: TopicOps, authorizer: Authorizer) -> None:
        self._topics = topics
        self._authorizer = authorizer

    async def __call__(self, ctx: RequestContext, request: Any) -> Any:
        response = SERVED[ApiKey.DESCRIBE_CLUSTER].response[ctx.api_version]
        extra: dict[str, Any] = {}
        if ctx.api_version >= 1:
            extra["endpoint_type"] = _BROKERS_ENDPOINT
        error, message, cluster_id, nodes = KafkaError.NONE, None, "", []
        if ctx.api_version >= 1 and request.endpoint_type != _BROKERS_ENDPOINT:
            error = KafkaError.UNSUPPORTED_ENDPOINT_TYPE
            message = "Conveyor has no separate controller endpoints"
        elif not await self._authorizer.allowed(ctx.principal, "describe", "cluster", "cluster"):
            error, message = KafkaError.CLUSTER_AUTHORIZATION_FAILED, "describe not allowed"
        else:
            try:
                status = await self._topics.cluster()
                cluster_id, nodes = status.cluster_id, kafka_nodes(status.brokers)
            except ConveyorError as exc:
                error, message = kafka_error(exc.code, "cluster"), exc.message
        operations = None  # omitted (kafka-python's bitfield: a set of operation numbers)
        if request.include_cluster_authorized_operations:
            operations = cluster_operations(self._authorizer, ctx.principal)
        broker_cls = response.DescribeClusterBroker
        fenced = {"is_fenced": False} if ctx.api_version >= 2 else {}
        return response(
            throttle_time_ms=0,
            error_code=error,
            error_message=message,
            cluster_id=cluster_id,
            controller_id=min((n.node_id for n in nodes), default=-1),
            brokers=[
                broker_cls(broker_id=n.node_id, host=n.host, port=n.port, rack=None, **fenced)
                for n in nodes
            ],
            authorized_operations=operations,
            **extra,
        )
