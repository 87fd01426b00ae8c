"""Kafka ACL bindings over Conveyor's allow rules (broker/kafka/acl_mapping.py)."""

from __future__ import annotations

from dataclasses import replace

import pytest

from conveyor.broker.kafka.acl_mapping import (
    Binding,
    Operation,
    PatternType,
    Permission,
    ResourceType,
    matches,
    to_binding,
    to_rules,
)
from conveyor.protocol.errors import InvalidRequestError
from conveyor.protocol.security import AclRule


def _binding(  # noqa: PLR0917 -- the seven fields of a Kafka binding, in Kafka's order
    resource_type: int = ResourceType.TOPIC,
    name: str | None = "orders",
    pattern: int = PatternType.LITERAL,
    principal: str | None = "User:alice",
    host: str | None = "*",
    operation: int = Operation.WRITE,
    permission: int = Permission.ALLOW,
) -> Binding:
    return Binding(resource_type, name, pattern, principal, host, operation, permission)


@pytest.mark.parametrize(
    ("binding", "rules"),
    [
        (_binding(), [("user:alice", "produce", "topic", "orders", "literal")]),
        (
            _binding(operation=Operation.READ, pattern=PatternType.PREFIXED, name="logs-"),
            [("user:alice", "consume", "topic", "logs-", "prefix")],
        ),
        (
            _binding(ResourceType.GROUP, "g", operation=Operation.READ, principal="User:*"),
            [("*", "group", "group", "g", "literal")],
        ),
        (
            _binding(ResourceType.CLUSTER, "kafka-cluster", operation=Operation.ALL),
            [("user:alice", "admin", "cluster", "cluster", "literal")],
        ),
        (
            _binding(principal="Service:ingest", operation=Operation.DESCRIBE),
            [("ingest", "describe", "topic", "orders", "literal")],
        ),
        (
            _binding(ResourceType.TRANSACTIONAL_ID, "etl-", PatternType.PREFIXED),
            [("user:alice", "produce", "transactional_id", "etl-", "prefix")],
        ),
        (
            _binding(ResourceType.TRANSACTIONAL_ID, "etl", operation=Operation.DESCRIBE),
            [("user:alice", "describe", "transactional_id", "etl", "literal")],
        ),
        (
            _binding(ResourceType.CLUSTER, "kafka-cluster", operation=Operation.IDEMPOTENT_WRITE),
            [("user:alice", "idempotent_write", "cluster", "cluster", "literal")],
        ),
    ],
)
def test_bindings_become_rules_and_back(
    binding: Binding, rules: list[tuple[str, str, str, str, str]]
) -> None:
    converted = to_rules(binding)
    assert [(r.principal, r.operation, r.resource_type, r.name, r.pattern) for r in converted] == (
        rules
    )
    assert [to_binding(r) for r in converted] == [binding]


def test_all_on_a_topic_is_every_topic_operation() -> None:
    rules = to_rules(_binding(operation=Operation.ALL))
    assert sorted(r.operation for r in rules) == [
        "consume",
        "create_topic",
        "delete_topic",
        "describe",
        "produce",
    ]


@pytest.mark.parametrize(
    ("binding", "fragment"),
    [
        (_binding(permission=Permission.DENY), "only ALLOW"),
        (_binding(host="10.0.0.1"), "host"),
        (_binding(name="*"), "wildcard"),
        (_binding(ResourceType.DELEGATION_TOKEN, "tx"), "DELEGATION_TOKEN"),
        (_binding(ResourceType.TRANSACTIONAL_ID, "tx", operation=Operation.READ), "READ"),
        (_binding(operation=Operation.ALTER_CONFIGS), "ALTER_CONFIGS"),
        (_binding(ResourceType.CLUSTER, "other", operation=Operation.ALL), "kafka-cluster"),
        (_binding(principal="Group:ops"), "principal type"),
        (_binding(principal="alice"), "TYPE:NAME"),
        (_binding(pattern=PatternType.MATCH), "LITERAL or PREFIXED"),
    ],
)
def test_bindings_without_an_exact_meaning_are_refused(binding: Binding, fragment: str) -> None:
    with pytest.raises(InvalidRequestError) as raised:
        to_rules(binding)
    assert fragment in raised.value.message


def test_all_on_a_transactional_id_is_produce_and_describe() -> None:
    rules = to_rules(_binding(ResourceType.TRANSACTIONAL_ID, "tx", operation=Operation.ALL))
    assert sorted(r.operation for r in rules) == ["describe", "produce"]
    assert {r.resource_type for r in rules} == {"transactional_id"}


def test_filters() -> None:
    stored = to_binding(
        AclRule(
            principal="user:bob", operation="consume", resource_type="topic", name="logs-",
            pattern="prefix",
        )
    )  # fmt: skip
    anything = Binding(ResourceType.ANY, None, PatternType.ANY, None, None, Operation.ANY, 1)
    assert matches(stored, anything)
    by_type = _binding(name=None, pattern=PatternType.ANY, principal=None, host=None)
    assert matches(stored, replace(by_type, operation=Operation.ANY, permission=Permission.ANY))
    match = Binding(ResourceType.TOPIC, "logs-app", PatternType.MATCH, None, None, Operation.ANY, 1)
    assert matches(stored, match)  # MATCH: the prefix covers the name
    assert not matches(stored, _binding(principal="User:alice", operation=Operation.ANY))
    assert not matches(stored, _binding(ResourceType.GROUP, None, PatternType.ANY, None))
