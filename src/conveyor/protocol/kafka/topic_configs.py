"""Kafka's topic config names over Conveyor's ``TopicConfig``: one table, pure conversions.

DescribeConfigs answers these names with their Kafka types, sources and read-only flags
(tools such as kafka-ui, kafdrop and ksqlDB read them); CreateTopics, AlterConfigs and
IncrementalAlterConfigs turn Kafka's string values into ``TopicConfig`` field changes that
the coordinator validates (``coordinator.state.alter_topic_config``: one implementation).

The mapping (Kafka name -> Conveyor setting):

* ``retention.ms``, ``retention.bytes``, ``segment.bytes``, ``max.message.bytes``,
  ``min.insync.replicas``, ``unclean.leader.election.enable``: the same setting, the same
  meaning (``min.insync.replicas`` unset means 2 when RF >= 3 else 1; it is answered as
  that effective value with source DEFAULT_CONFIG).
* ``flush.messages`` / ``flush.ms`` -> ``flush``: ``flush.messages=1`` is ``always`` (fsync
  before acknowledging); ``flush.ms=N`` is ``interval:N``; both at Long.MAX is ``never``.
  Other ``flush.messages`` counts have no Conveyor equivalent: INVALID_CONFIG.
* ``cleanup.policy`` (``delete``, ``compact``, ``compact,delete``),
  ``delete.retention.ms``, ``min.cleanable.dirty.ratio``: compaction, the same settings
  (docs/storage-format.md#compaction).
* ``compression.type=producer``, ``message.timestamp.type=CreateTime``: read-only, what
  Conveyor does (no broker-side recompression, no LogAppendTime). Setting them to that
  value is accepted as a no-op; any other value is INVALID_CONFIG.

Any other name is INVALID_CONFIG on create and alter (never silently ignored).
"""

from __future__ import annotations

import enum
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Final

import msgspec

from conveyor.protocol.errors import ErrorCode, InvalidRequestError
from conveyor.protocol.messages import ConfigValue, TopicConfig
from conveyor.protocol.topics import parse_cleanup_policy

LONG_MAX: Final = 2**63 - 1
FLUSH_FIELD: Final = "flush"


class ConfigType(enum.IntEnum):
    """DescribeConfigs v3+ ``ConfigType``."""

    UNKNOWN = 0
    BOOLEAN = 1
    STRING = 2
    INT = 3
    SHORT = 4
    LONG = 5
    DOUBLE = 6
    LIST = 7


class ConfigSource(enum.IntEnum):
    """DescribeConfigs v1+ ``ConfigSource`` (Kafka's DescribeConfigsResponse numbering)."""

    UNKNOWN = 0
    DYNAMIC_TOPIC_CONFIG = 1
    DYNAMIC_BROKER_CONFIG = 2
    DYNAMIC_DEFAULT_BROKER_CONFIG = 3
    STATIC_BROKER_CONFIG = 4
    DEFAULT_CONFIG = 5


@dataclass(frozen=True, slots=True)
class ConfigEntry:
    """One line of a DescribeConfigs answer."""

    name: str
    value: str | None
    config_type: ConfigType
    source: ConfigSource
    read_only: bool
    documentation: str


@dataclass(frozen=True, slots=True)
class TopicSetting:
    name: str  # Kafka's
    config_type: ConfigType
    field: str | None  # the TopicConfig field; None: a read-only fact of Conveyor
    documentation: str
    fixed: str | None = None  # the value of a read-only fact


_SETTINGS: Final = (
    TopicSetting(
        "retention.ms", ConfigType.LONG, "retention_ms", "Keep data this long (-1: ever)."
    ),
    TopicSetting(
        "retention.bytes", ConfigType.LONG, "retention_bytes", "Bytes kept per partition."
    ),
    TopicSetting("segment.bytes", ConfigType.INT, "segment_bytes", "Segment file size."),
    TopicSetting("max.message.bytes", ConfigType.INT, "max_message_bytes", "Largest batch taken."),
    TopicSetting("min.insync.replicas", ConfigType.INT, "min_insync_replicas", "ISR for acks=all."),
    TopicSetting(
        "unclean.leader.election.enable",
        ConfigType.BOOLEAN,
        "unclean_leader_election",
        "Elect an out-of-sync replica rather than stay offline.",
    ),
    TopicSetting("flush.messages", ConfigType.LONG, FLUSH_FIELD, "1: fsync before the ack."),
    TopicSetting("flush.ms", ConfigType.LONG, FLUSH_FIELD, "fsync on this timer."),
    TopicSetting("cleanup.policy", ConfigType.LIST, "cleanup_policy", "delete, compact or both."),
    TopicSetting(
        "delete.retention.ms",
        ConfigType.LONG,
        "delete_retention_ms",
        "How long a tombstone stays in a compacted log.",
    ),
    TopicSetting(
        "min.cleanable.dirty.ratio",
        ConfigType.DOUBLE,
        "min_cleanable_dirty_ratio",
        "Compact once this share of the log is dirty.",
    ),
    TopicSetting("compression.type", ConfigType.STRING, None, "As the producer sent.", "producer"),
    TopicSetting("message.timestamp.type", ConfigType.STRING, None, "Producer's.", "CreateTime"),
)
SETTINGS: Final[dict[str, TopicSetting]] = {s.name: s for s in _SETTINGS}
SETTABLE: Final[tuple[str, ...]] = tuple(s.name for s in _SETTINGS if s.field is not None)
_DEFAULT = TopicConfig()


def describe_topic(
    config: TopicConfig, replication_factor: int, names: Iterable[str] | None = None
) -> list[ConfigEntry]:
    """Every mapped setting of a topic (or only ``names``, unknown ones left out as Kafka
    does), with its source: DYNAMIC_TOPIC_CONFIG when set on the topic, else DEFAULT."""
    wanted = list(SETTINGS) if names is None else [n for n in names if n in SETTINGS]
    return [_entry(SETTINGS[n], config, replication_factor) for n in wanted]


def _entry(setting: TopicSetting, config: TopicConfig, replication_factor: int) -> ConfigEntry:
    if setting.field is None:
        return ConfigEntry(
            setting.name,
            setting.fixed,
            setting.config_type,
            ConfigSource.DEFAULT_CONFIG,
            True,
            setting.documentation,
        )
    value = getattr(config, setting.field)
    explicit = value != getattr(_DEFAULT, setting.field)
    if setting.field == FLUSH_FIELD:
        text = _flush_value(setting.name, str(value))
    elif setting.field == "min_insync_replicas" and value is None:
        text = str(2 if replication_factor >= 3 else 1)
    elif isinstance(value, bool):
        text = "true" if value else "false"
    else:
        text = str(value)
    source = ConfigSource.DYNAMIC_TOPIC_CONFIG if explicit else ConfigSource.DEFAULT_CONFIG
    return ConfigEntry(
        setting.name, text, setting.config_type, source, False, setting.documentation
    )


def _flush_value(name: str, flush: str) -> str:
    if name == "flush.messages":
        return "1" if flush == "always" else str(LONG_MAX)
    if flush.startswith("interval:"):
        return flush.removeprefix("interval:")
    return str(LONG_MAX)


def changes(
    values: Mapping[str, str | None], deletes: Iterable[str] = ()
) -> tuple[dict[str, ConfigValue], list[str]]:
    """Kafka ``name -> value`` sets and names to delete -> (TopicConfig fields to set,
    fields to reset). A value of None deletes too. Raises INVALID_CONFIG naming the
    setting for an unknown name, a bad value, or a read-only one set to another value."""
    values = dict(values)
    deletes = [*deletes, *(n for n, v in values.items() if v is None)]
    sets = {n: v for n, v in values.items() if v is not None}
    for name in (*sets, *deletes):
        if name not in SETTINGS:
            raise invalid(f"unknown topic config {name!r}; Conveyor maps {sorted(SETTINGS)}")
    fields: dict[str, ConfigValue] = {}
    reset: list[str] = []
    for name, text in sets.items():
        setting = SETTINGS[name]
        if setting.field is None:
            if text.strip() != setting.fixed:
                raise invalid(f"{name} is fixed at {setting.fixed!r} in Conveyor, not {text!r}")
        elif setting.field != FLUSH_FIELD:
            fields[setting.field] = _parse(setting, text)
    flush = _flush(sets)
    if flush is not None:
        fields[FLUSH_FIELD] = flush
    for name in deletes:
        field = SETTINGS[name].field
        if field is not None and field not in fields and field not in reset:
            reset.append(field)
    return fields, reset


def replacement(values: Mapping[str, str | None]) -> tuple[dict[str, ConfigValue], list[str]]:
    """AlterConfigs (not incremental): the given settings, every other one back to its
    default, as Kafka replaces a topic's whole config."""
    fields, reset = changes(values)
    others = {SETTINGS[n].field for n in SETTABLE if n not in values} - set(fields)
    return fields, sorted({*reset, *(f for f in others if f is not None)})


def creation(values: Mapping[str, str | None]) -> TopicConfig | None:
    """CreateTopics' configs -> the new topic's TopicConfig (None: the cluster defaults)."""
    if not values:
        return None
    fields, _ = changes(values)
    try:
        return msgspec.convert(fields, TopicConfig, strict=True)
    except msgspec.ValidationError as exc:
        raise invalid(f"invalid topic config: {exc}") from None


def _flush(sets: Mapping[str, str]) -> str | None:
    messages, interval = sets.get("flush.messages"), sets.get("flush.ms")
    if messages is None and interval is None:
        return None
    count = _long("flush.messages", messages) if messages is not None else None
    ms = _long("flush.ms", interval) if interval is not None else None
    if count == 1:
        return "always"
    if count is not None and count != LONG_MAX:
        raise invalid(
            f"flush.messages={count}: Conveyor flushes every write (1) or on a timer "
            "(flush.ms), never every N messages"
        )
    if ms is not None and ms != LONG_MAX:
        if ms < 1:
            raise invalid(f"flush.ms must be >= 1, not {ms}")
        return f"interval:{ms}"
    return "never"


def _parse(setting: TopicSetting, text: str) -> ConfigValue:
    text = text.strip()
    if setting.config_type is ConfigType.BOOLEAN:
        if text.lower() not in ("true", "false"):
            raise invalid(f"{setting.name} must be true or false, not {text!r}")
        return text.lower() == "true"
    if setting.config_type is ConfigType.LIST:
        return parse_cleanup_policy(text)
    if setting.config_type is ConfigType.DOUBLE:
        try:
            ratio = float(text)
        except ValueError:
            raise invalid(f"{setting.name} must be a number, not {text!r}") from None
        if not 0.0 <= ratio <= 1.0:
            raise invalid(f"{setting.name} must be between 0 and 1, not {text!r}")
        return ratio
    return _long(setting.name, text)


def _long(name: str, text: str) -> int:
    try:
        value = int(text.strip())
    except ValueError:
        raise invalid(f"{name} must be an integer, not {text!r}") from None
    if not -(2**63) <= value <= LONG_MAX:
        raise invalid(f"{name} is out of range: {text!r}")
    return value


def invalid(message: str) -> InvalidRequestError:
    return InvalidRequestError(message, code=ErrorCode.INVALID_CONFIG)


# ---- the client's side: TopicConfig fields -> Kafka names (the Kafka admin transport) --


def kafka_values(
    fields: Mapping[str, ConfigValue], reset: Iterable[str] = ()
) -> tuple[dict[str, str], list[str]]:
    """TopicConfig ``field -> value`` sets and fields to reset -> (Kafka ``name -> text``
    to set, Kafka names to delete): the inverse of :func:`changes`, what Conveyor's own
    client sends in CreateTopics and IncrementalAlterConfigs. ``flush`` becomes both
    ``flush.messages`` and ``flush.ms``; a None (``min_insync_replicas``) is a delete.
    Raises INVALID_CONFIG for a name that is not a TopicConfig field."""
    by_field: dict[str, list[TopicSetting]] = {}
    for setting in _SETTINGS:
        if setting.field is not None:
            by_field.setdefault(setting.field, []).append(setting)
    sets: dict[str, str] = {}
    deletes: list[str] = []
    for field, value in fields.items():
        if field not in by_field:
            raise invalid(f"unknown topic setting {field!r}; known: {sorted(by_field)}")
        for setting in by_field[field]:
            if value is None:
                deletes.append(setting.name)
            elif field == FLUSH_FIELD:
                sets[setting.name] = _flush_value(setting.name, str(value))
            elif isinstance(value, bool):
                sets[setting.name] = "true" if value else "false"
            else:
                sets[setting.name] = str(value)
    for field in reset:
        if field not in by_field:
            raise invalid(f"unknown topic setting {field!r}; known: {sorted(by_field)}")
        deletes += [s.name for s in by_field[field] if s.name not in deletes]
    return sets, deletes


def explicit_fields(config: TopicConfig) -> dict[str, ConfigValue]:
    """The fields of ``config`` that differ from the defaults (what a creation sends)."""
    return {
        name: value
        for name in config.__struct_fields__
        if (value := getattr(config, name)) != getattr(_DEFAULT, name)
    }


def from_described(dynamic: Mapping[str, str | None]) -> TopicConfig:
    """A topic's ``TopicConfig`` from the DescribeConfigs entries set on it (source
    DYNAMIC_TOPIC_CONFIG; the others are the defaults), the inverse of
    :func:`describe_topic`."""
    settable = {n: v for n, v in dynamic.items() if n in SETTABLE}
    return creation(settable) or TopicConfig()
