"""Kafka ACL bindings over Conveyor's allow rules (``protocol/security.AclRule``): pure.

Conveyor's model is smaller than Kafka's: allow rules only (deny by default), any host, a
principal, one of eight operations on a topic, group, transactional id or the cluster,
matched literally or by prefix. A Kafka binding maps onto it when it can be expressed
exactly; anything else is refused with a message saying why, never approximated:

| Kafka resource | Kafka operation | Conveyor rule |
|---|---|---|
| TOPIC | WRITE, READ | produce, consume |
| TOPIC | CREATE, DELETE, DESCRIBE | create_topic, delete_topic, describe |
| TOPIC | ALL | those five rules |
| GROUP | READ, DESCRIBE, ALL | group, describe, both |
| TRANSACTIONAL_ID | WRITE, DESCRIBE, ALL | produce, describe, both |
| CLUSTER (``kafka-cluster``) | ALL, DESCRIBE | admin, describe |
| CLUSTER (``kafka-cluster``) | IDEMPOTENT_WRITE | idempotent_write |

Principals: Kafka's ``User:alice`` is Conveyor's ``user:alice`` (a SASL or certificate
user), ``User:*`` is ``*``; a token's own principal name ``svc`` is ``Service:svc``.
Patterns: LITERAL and PREFIXED. Refused: DENY, a host other than ``*``, a LITERAL ``*``
resource (no wildcard names in Conveyor: use PREFIXED), delegation tokens, users, and the
other operations (ALTER, ALTER_CONFIGS, DESCRIBE_CONFIGS, CLUSTER_ACTION...), which have
no Conveyor rule of the same meaning.

Describe and delete filters are matched on the Kafka form of each stored rule, so what
DescribeAcls shows is exactly what a DeleteAcls with the same filter removes.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass
from typing import Final

import msgspec

from conveyor.protocol.errors import InvalidRequestError
from conveyor.protocol.security import ANY_PRINCIPAL, CLUSTER_RESOURCE, USER_PREFIX, AclRule

KAFKA_CLUSTER: Final = "kafka-cluster"
ANY_HOST: Final = "*"


class ResourceType(enum.IntEnum):
    UNKNOWN = 0
    ANY = 1
    TOPIC = 2
    GROUP = 3
    CLUSTER = 4
    TRANSACTIONAL_ID = 5
    DELEGATION_TOKEN = 6
    USER = 7


class PatternType(enum.IntEnum):
    UNKNOWN = 0
    ANY = 1
    MATCH = 2
    LITERAL = 3
    PREFIXED = 4


class Operation(enum.IntEnum):
    UNKNOWN = 0
    ANY = 1
    ALL = 2
    READ = 3
    WRITE = 4
    CREATE = 5
    DELETE = 6
    ALTER = 7
    DESCRIBE = 8
    CLUSTER_ACTION = 9
    DESCRIBE_CONFIGS = 10
    ALTER_CONFIGS = 11
    IDEMPOTENT_WRITE = 12


class Permission(enum.IntEnum):
    UNKNOWN = 0
    ANY = 1
    DENY = 2
    ALLOW = 3


@dataclass(frozen=True, slots=True)
class Binding:
    """A Kafka ACL binding (or, with ANY/None fields, a filter)."""

    resource_type: int
    resource_name: str | None
    pattern_type: int
    principal: str | None
    host: str | None
    operation: int
    permission: int


_TOPIC_OPS: Final = {
    Operation.WRITE: "produce",
    Operation.READ: "consume",
    Operation.CREATE: "create_topic",
    Operation.DELETE: "delete_topic",
    Operation.DESCRIBE: "describe",
}
_GROUP_OPS: Final = {Operation.READ: "group", Operation.DESCRIBE: "describe"}
_TXN_OPS: Final = {Operation.WRITE: "produce", Operation.DESCRIBE: "describe"}
_CLUSTER_OPS: Final = {
    Operation.ALL: "admin",
    Operation.DESCRIBE: "describe",
    Operation.IDEMPOTENT_WRITE: "idempotent_write",
}
_OPS: Final = {
    ResourceType.TOPIC: ("topic", _TOPIC_OPS),
    ResourceType.GROUP: ("group", _GROUP_OPS),
    ResourceType.TRANSACTIONAL_ID: ("transactional_id", _TXN_OPS),
    ResourceType.CLUSTER: ("cluster", _CLUSTER_OPS),
}
_KAFKA_TYPE: Final = {kind: rt for rt, (kind, _) in _OPS.items()}


def to_rules(binding: Binding) -> list[AclRule]:
    """The Conveyor rules a Kafka binding grants; InvalidRequestError when it has no exact
    Conveyor meaning (the message says why)."""
    if binding.permission != Permission.ALLOW:
        raise _refuse("only ALLOW bindings: Conveyor denies whatever no rule allows")
    if binding.host != ANY_HOST:
        raise _refuse("only host '*': Conveyor rules do not depend on the client's address")
    if binding.resource_type not in _OPS:
        raise _refuse(f"resource type {_name(ResourceType, binding.resource_type)} has no rules")
    kind, operations = _OPS[ResourceType(binding.resource_type)]
    pattern = _pattern(binding)
    name = binding.resource_name or ""
    if kind == "cluster":
        if name != KAFKA_CLUSTER or pattern != "literal":
            raise _refuse(f"the cluster resource is the literal {KAFKA_CLUSTER!r}")
        name = CLUSTER_RESOURCE
    elif not name or (name == "*" and pattern == "literal"):
        raise _refuse("no wildcard resource names: use a PREFIXED pattern")
    principal = conveyor_principal(binding.principal or "")
    if binding.operation == Operation.ALL and kind != "cluster":
        chosen = sorted(set(operations.values()))
    elif binding.operation in operations:
        chosen = [operations[Operation(binding.operation)]]
    else:
        raise _refuse(
            f"operation {_name(Operation, binding.operation)} on a {kind} has no Conveyor rule"
        )
    fields = {"principal": principal, "resource_type": kind, "name": name, "pattern": pattern}
    return [msgspec.convert({**fields, "operation": op}, AclRule) for op in chosen]


def to_binding(rule: AclRule) -> Binding:
    """The Kafka binding of one stored Conveyor rule."""
    resource_type = _KAFKA_TYPE[rule.resource_type]
    operations = _OPS[resource_type][1]
    operation = next(op for op, name in operations.items() if name == rule.operation)
    return Binding(
        resource_type=resource_type,
        resource_name=KAFKA_CLUSTER if rule.resource_type == "cluster" else rule.name,
        pattern_type=PatternType.PREFIXED if rule.pattern == "prefix" else PatternType.LITERAL,
        principal=kafka_principal(rule.principal),
        host=ANY_HOST,
        operation=operation,
        permission=Permission.ALLOW,
    )


def matches(binding: Binding, flt: Binding) -> bool:
    """Does a binding match a DescribeAcls/DeleteAcls filter (ANY and None match all)?"""
    if flt.resource_type not in (ResourceType.ANY, binding.resource_type):
        return False
    if flt.operation not in (Operation.ANY, binding.operation):
        return False
    if flt.permission not in (Permission.ANY, binding.permission):
        return False
    if flt.principal is not None and flt.principal != binding.principal:
        return False
    if flt.host is not None and flt.host != binding.host:
        return False
    return _name_matches(binding, flt)


def _name_matches(binding: Binding, flt: Binding) -> bool:
    name = binding.resource_name or ""
    if flt.pattern_type == PatternType.MATCH:
        if flt.resource_name is None:
            return True
        if binding.pattern_type == PatternType.PREFIXED:
            return flt.resource_name.startswith(name)
        return name in (flt.resource_name, "*")
    if flt.pattern_type not in (PatternType.ANY, binding.pattern_type):
        return False
    return flt.resource_name is None or flt.resource_name == name


def conveyor_principal(kafka: str) -> str:
    kind, sep, name = kafka.partition(":")
    if not sep or not name:
        raise _refuse(f"principal {kafka!r} is not TYPE:NAME (e.g. User:alice)")
    if kind == "User":
        return ANY_PRINCIPAL if name == "*" else USER_PREFIX + name
    if kind == "Service":
        return name
    raise _refuse(f"principal type {kind!r}: Conveyor has User: (users) and Service: (tokens)")


def kafka_principal(principal: str) -> str:
    if principal == ANY_PRINCIPAL:
        return "User:*"
    if principal.startswith(USER_PREFIX):
        return "User:" + principal.removeprefix(USER_PREFIX)
    return "Service:" + principal


def _pattern(binding: Binding) -> str:
    if binding.pattern_type == PatternType.LITERAL:
        return "literal"
    if binding.pattern_type == PatternType.PREFIXED:
        return "prefix"
    raise _refuse("pattern must be LITERAL or PREFIXED to create a binding")


def _name(enum_type: type[enum.IntEnum], value: int) -> str:
    try:
        return enum_type(value).name
    except ValueError:
        return str(value)


def _refuse(message: str) -> InvalidRequestError:
    return InvalidRequestError(message)
