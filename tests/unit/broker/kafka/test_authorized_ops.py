"""Authorized operations in Kafka's terms from Conveyor's rules (authorized_ops.py)."""

from __future__ import annotations

from dataclasses import dataclass

from conveyor.broker.kafka.acl_mapping import Operation
from conveyor.broker.kafka.auth import Authorizer
from conveyor.broker.kafka.authorized_ops import cluster_operations, topic_operations
from conveyor.protocol.security import AclRule, SecuritySnapshot


@dataclass
class Source:
    snapshot: SecuritySnapshot | None

    async def catch_up(self) -> bool:
        return False


def _authorizer(*rules: AclRule) -> Authorizer:
    return Authorizer(Source(SecuritySnapshot(version=1, enabled=True, acls=list(rules))), True)


def _rule(operation: str, resource_type: str = "topic", name: str = "t") -> AclRule:
    return AclRule(principal="user:a", operation=operation, resource_type=resource_type, name=name)  # type: ignore[arg-type]


def test_auth_off_allows_everything() -> None:
    off = Authorizer(Source(None), False)
    assert len(cluster_operations(off, None)) == 7
    assert len(topic_operations(off, None, "t")) == 8


def test_rules_map_to_kafka_operations() -> None:
    authorizer = _authorizer(_rule("consume"), _rule("describe"))
    assert topic_operations(authorizer, "user:a", "t") == {
        Operation.READ,
        Operation.DESCRIBE,
        Operation.DESCRIBE_CONFIGS,
    }
    assert topic_operations(authorizer, "user:a", "other") == set()
    assert cluster_operations(authorizer, "user:a") == set()
    producer = _authorizer(_rule("produce"))  # KIP-679: WRITE on a topic implies it
    assert cluster_operations(producer, "user:a") == {Operation.IDEMPOTENT_WRITE}
    admin = _authorizer(_rule("admin", "cluster", "cluster"))
    assert len(topic_operations(admin, "user:a", "anything")) == 8
    assert len(cluster_operations(admin, "user:a")) == 7
