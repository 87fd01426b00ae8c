"""The Kafka operations a principal may perform, as ``authorized_operations`` sets
(DescribeCluster, Metadata v8+ when asked): Conveyor's rules read through the ACL mapping
(``acl_mapping.py``). Cluster ``admin`` (or auth off) allows every operation; otherwise
each Conveyor operation allows its Kafka ones; ALTER and ALTER_CONFIGS need ``admin``
(their HTTP routes' policy). IDEMPOTENT_WRITE on the cluster: an ``idempotent_write``
rule, or ``produce`` on any topic (KIP-679, ``protocol/security.authorize``)."""

from __future__ import annotations

from typing import Final

from conveyor.broker.kafka.acl_mapping import Operation
from conveyor.broker.kafka.auth import Authorizer

CLUSTER_OPERATIONS: Final = (
    Operation.ALTER,
    Operation.ALTER_CONFIGS,
    Operation.CLUSTER_ACTION,
    Operation.CREATE,
    Operation.DESCRIBE,
    Operation.DESCRIBE_CONFIGS,
    Operation.IDEMPOTENT_WRITE,
)
TOPIC_OPERATIONS: Final = (
    Operation.READ,
    Operation.WRITE,
    Operation.CREATE,
    Operation.DELETE,
    Operation.ALTER,
    Operation.DESCRIBE,
    Operation.DESCRIBE_CONFIGS,
    Operation.ALTER_CONFIGS,
)
_TOPIC_GRANTS: Final = {
    "consume": (Operation.READ,),
    "produce": (Operation.WRITE,),
    "create_topic": (Operation.CREATE,),
    "delete_topic": (Operation.DELETE,),
    "describe": (Operation.DESCRIBE, Operation.DESCRIBE_CONFIGS),
}


def _admin(authorizer: Authorizer, principal: str | None) -> bool:
    return authorizer.allowed_now(principal, "admin", "cluster", "cluster")


def cluster_operations(authorizer: Authorizer, principal: str | None) -> set[int]:
    if _admin(authorizer, principal):
        return {int(op) for op in CLUSTER_OPERATIONS}
    chosen: set[int] = set()
    if authorizer.allowed_now(principal, "idempotent_write", "cluster", "cluster"):
        chosen.add(int(Operation.IDEMPOTENT_WRITE))
    if authorizer.allowed_now(principal, "describe", "cluster", "cluster"):
        chosen |= {int(Operation.DESCRIBE), int(Operation.DESCRIBE_CONFIGS)}
    return chosen


def topic_operations(authorizer: Authorizer, principal: str | None, topic: str) -> set[int]:
    if _admin(authorizer, principal):
        return {int(op) for op in TOPIC_OPERATIONS}
    return {
        int(op)
        for operation, granted in _TOPIC_GRANTS.items()
        if authorizer.allowed_now(principal, operation, "topic", topic)
        for op in granted
    }
