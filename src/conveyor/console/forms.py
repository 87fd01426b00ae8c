"""Form and query input of the console's pages -> typed requests, or a clear error. Pure.

Every field is bounded and checked here; what the API checks again (topic names, config
ranges, ACL rules) it answers with its own typed error, which the page shows as is.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, Final, Literal

import msgspec

from conveyor.protocol.errors import InvalidRequestError
from conveyor.protocol.messages import (
    AddPartitionsRequest,
    AlterTopicConfigRequest,
    ConfigValue,
    CreateTopicRequest,
    JsonRecord,
    TopicConfig,
)
from conveyor.protocol.security import OPERATIONS, RESOURCE_TYPES, AclRule, TokenCreateRequest

if TYPE_CHECKING:  # the client package is imported where a reset needs it
    from conveyor.client.group import ResetTarget

FIELD_CHARS_MAX: Final = 1_000
VALUE_CHARS_MAX: Final = 1024 * 1024  # a produced value; the topic's own limit still applies
HEADERS_MAX: Final = 100
INT_DIGITS_MAX: Final = 19
# TopicConfig fields the create form offers, with their types.
CONFIG_FIELDS: Final = (
    ("retention_ms", int),
    ("retention_bytes", int),
    ("segment_bytes", int),
    ("max_message_bytes", int),
    ("min_insync_replicas", int),
    ("flush", str),
    ("unclean_leader_election", bool),
)
Form = Mapping[str, str]


def text(form: Form, name: str, limit: int = FIELD_CHARS_MAX, required: bool = False) -> str:
    value = form.get(name, "")
    if len(value) > limit:
        raise InvalidRequestError(f"{name} is longer than {limit} characters")
    if required and not value.strip():
        raise InvalidRequestError(f"{name} is required")
    return value


def integer(
    form: Form, name: str, low: int = 0, high: int | None = None, default: int | None = None
) -> int | None:
    raw = form.get(name, "").strip()
    if not raw:
        return default
    sign, digits = (raw[0], raw[1:]) if raw[0] in "+-" else ("", raw)
    # ASCII digits only: str.isdigit() also takes '²', which int() refuses
    if not (digits.isascii() and digits.isdigit()) or len(digits) > INT_DIGITS_MAX:
        raise InvalidRequestError(f"{name} must be a whole number, not {raw[:40]!r}")
    value = -int(digits) if sign == "-" else int(digits)
    if value < low or (high is not None and value > high):
        bound = f"{low}..{high}" if high is not None else f">= {low}"
        raise InvalidRequestError(f"{name} must be in {bound}, not {value}")
    return value


def moment_ms(raw: str, name: str = "time") -> int:
    """An ISO 8601 time; without a zone it is UTC (the pages say so)."""
    raw = raw.strip()
    try:
        moment = datetime.fromisoformat(raw.replace("Z", "+00:00"))
    except ValueError:
        raise InvalidRequestError(f"{name} must be an ISO 8601 time, not {raw[:40]!r}") from None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return int(moment.timestamp() * 1000)


def create_topic(form: Form) -> CreateTopicRequest:
    name = text(form, "name", 249, required=True).strip()
    partitions = integer(form, "partitions", 1, 10_000, default=1)
    replication_factor = integer(form, "replication_factor", 1, 100)
    config: dict[str, Any] = {}
    for field, kind in CONFIG_FIELDS:
        raw = form.get(field, "").strip()
        if not raw:
            continue
        if kind is int:
            config[field] = integer(form, field, -1)
        elif kind is bool:
            config[field] = raw.lower() in ("1", "true", "on", "yes")
        else:
            config[field] = text(form, field, 100)
    try:
        topic_config = msgspec.convert(config, TopicConfig) if config else None
    except msgspec.ValidationError as exc:
        raise InvalidRequestError(f"invalid topic config: {exc}") from None
    assert partitions is not None
    return CreateTopicRequest(
        name=name,
        partitions=partitions,
        replication_factor=replication_factor,
        config=topic_config,
    )


# Every TopicConfig setting, in the order the topic page lists them, with its type: the
# edit form offers all of them (the coordinator changes any without a restart).
EDITABLE_CONFIGS: Final = tuple((f.name, f.type) for f in msgspec.structs.fields(TopicConfig))
ORIGINAL_PREFIX: Final = "was_"  # hidden fields: the values the form was drawn with


def config_text(value: object) -> str:
    """A setting's value as the edit form shows it ("" for None: the automatic default)."""
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def _config_value(form: Form, name: str, kind: Any) -> ConfigValue:
    raw = form.get(name, "").strip()
    if kind is bool:
        if raw.lower() not in ("true", "false"):
            raise InvalidRequestError(f"{name} must be true or false, not {raw[:40]!r}")
        return raw.lower() == "true"
    if kind is float:
        try:
            ratio = float(raw)
        except ValueError:
            raise InvalidRequestError(f"{name} must be a number, not {raw[:40]!r}") from None
        if not math.isfinite(ratio):
            raise InvalidRequestError(f"{name} must be a finite number")
        return ratio
    if kind is str:
        return text(form, name, 100).strip()
    number = integer(form, name, -1, 2**63 - 1)  # int, or int | None (blank: reset)
    assert number is not None  # blank was handled by the caller
    return number


def alter_config(form: Form) -> AlterTopicConfigRequest:
    """The settings whose field differs from the value the form was drawn with: a value
    is set, a blank one goes back to its default. Nothing changed is an error."""
    values: dict[str, ConfigValue] = {}
    reset: list[str] = []
    for name, kind in EDITABLE_CONFIGS:
        if name not in form:
            continue
        raw = form.get(name, "").strip()
        if raw == form.get(ORIGINAL_PREFIX + name, "").strip():
            continue
        if not raw:
            reset.append(name)
        else:
            values[name] = _config_value(form, name, kind)
    if not values and not reset:
        raise InvalidRequestError("nothing changed: edit a value first")
    return AlterTopicConfigRequest(set=values, reset=reset)


def add_partitions(form: Form, current: int) -> AddPartitionsRequest:
    count = integer(form, "partitions", 1, 10_000)
    if count is None:
        raise InvalidRequestError("give the new number of partitions")
    if count <= current:
        raise InvalidRequestError(
            f"the topic has {current} partitions: the new count must be larger (partitions "
            "are never removed)"
        )
    return AddPartitionsRequest(partitions=count)


def headers(raw: str) -> dict[str, str]:
    """One ``name: value`` per line (blank lines ignored)."""
    out: dict[str, str] = {}
    for number, line in enumerate(raw.splitlines(), 1):
        if not line.strip():
            continue
        name, sep, value = line.partition(":")
        if not sep or not name.strip():
            raise InvalidRequestError(f"header line {number}: write it as 'name: value'")
        out[name.strip()] = value.strip()
        if len(out) > HEADERS_MAX:
            raise InvalidRequestError(f"at most {HEADERS_MAX} headers")
    return out


@dataclass(frozen=True, slots=True)
class ProduceForm:
    record: JsonRecord
    routing: str  # how the partition is chosen, for the answer's text


def produce(form: Form) -> ProduceForm:
    key = text(form, "key", FIELD_CHARS_MAX)
    value = text(form, "value", VALUE_CHARS_MAX)
    encoding = form.get("value_encoding", "utf8")
    if encoding not in ("utf8", "base64"):
        raise InvalidRequestError("value_encoding must be utf8 or base64")
    partition = integer(form, "partition", 0, 9_999)
    record = JsonRecord(
        key=key or None,
        value=value,
        value_encoding="base64" if encoding == "base64" else "utf8",
        headers=headers(text(form, "headers", 64 * 1024)) or None,
        partition=partition,
    )
    if partition is not None:
        routing = f"partition {partition} (chosen)"
    elif key:
        routing = "partition by key (murmur2, as Kafka)"
    else:
        routing = "round-robin (no key)"
    return ProduceForm(record, routing)


ResetKind = Literal["earliest", "latest", "offset", "time"]


def reset_target(form: Form) -> tuple[str, ResetTarget]:
    """``topic`` and ``to`` (earliest, latest, offset with ``offset``, time with ``time``)."""
    topic = text(form, "topic", 249, required=True)
    to = form.get("to", "")
    if to in ("earliest", "latest"):
        return topic, "earliest" if to == "earliest" else "latest"
    if to == "offset":
        offset = integer(form, "offset", 0)
        if offset is None:
            raise InvalidRequestError("give the offset to reset to")
        return topic, offset
    if to == "time":
        # imported here: the client package is most of a coordinator's start-up imports
        # otherwise, for a page few visit (docs/testing.md, "Less CPU per process")
        from conveyor.client.group import Timestamp

        return topic, Timestamp(moment_ms(text(form, "time", 64, required=True)))
    raise InvalidRequestError("reset to earliest, latest, an offset or a time")


def acl_rule(form: Form) -> AclRule:
    operation = form.get("operation", "")
    resource_type = form.get("resource_type", "")
    if operation not in OPERATIONS or resource_type not in RESOURCE_TYPES:
        raise InvalidRequestError("unknown operation or resource type")
    pattern = form.get("pattern", "literal")
    if pattern not in ("literal", "prefix"):
        raise InvalidRequestError("pattern must be literal or prefix")
    name = text(form, "name", 249).strip() or ("cluster" if resource_type == "cluster" else "")
    return msgspec.convert(
        {
            "principal": text(form, "principal", 200, required=True).strip(),
            "operation": operation,
            "resource_type": resource_type,
            "name": name,
            "pattern": pattern,
        },
        AclRule,
    )


def token_request(form: Form) -> TokenCreateRequest:
    principal = text(form, "principal", 200, required=True).strip()
    hours = integer(form, "expires_in_hours", 1, 24 * 3650)
    return TokenCreateRequest(
        principal=principal, expires_in_ms=None if hours is None else hours * 3600 * 1000
    )
