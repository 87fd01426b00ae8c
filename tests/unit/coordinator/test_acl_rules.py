"""Which ACL rules the coordinator stores (coordinator/security.check_rule)."""

from __future__ import annotations

import pytest

from conveyor.coordinator.security import check_rule
from conveyor.protocol.errors import InvalidRequestError
from conveyor.protocol.security import AclRule


def _rule(operation: str, resource_type: str, name: str) -> AclRule:
    return AclRule(principal="user:a", operation=operation, resource_type=resource_type, name=name)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("operation", "resource_type", "name"),
    [
        ("produce", "transactional_id", "etl-"),
        ("describe", "transactional_id", "etl"),
        ("idempotent_write", "cluster", "cluster"),
        ("produce", "topic", "orders"),
    ],
)
def test_accepted(operation: str, resource_type: str, name: str) -> None:
    check_rule(_rule(operation, resource_type, name))


@pytest.mark.parametrize(
    ("operation", "resource_type", "name", "fragment"),
    [
        ("consume", "transactional_id", "etl", "a transactional id allows"),
        ("admin", "transactional_id", "etl", "a transactional id allows"),
        ("idempotent_write", "topic", "orders", "an operation on the cluster"),
        ("produce", "transactional_id", "", "resource name"),
    ],
)
def test_refused(operation: str, resource_type: str, name: str, fragment: str) -> None:
    with pytest.raises(InvalidRequestError) as raised:
        check_rule(_rule(operation, resource_type, name))
    assert fragment in raised.value.message
