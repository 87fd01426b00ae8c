"""DescribeConfigs, AlterConfigs and IncrementalAlterConfigs for topics and brokers.

Topic settings are Conveyor's ``TopicConfig`` under Kafka's names (``topic_configs.py``);
changes go through the coordinator's alter-config operation (the HTTP route's), which
validates all of a resource's changes together, so a refused resource changes nothing,
and brokers apply the result without a restart. Broker settings are answered read-only
(a broker's settings are its flags: a restart changes them); altering one is
INVALID_CONFIG. Other resource types (broker loggers, groups, client metrics) are
INVALID_REQUEST. Permissions as HTTP: ``describe`` on the topic or the cluster to read,
cluster ``admin`` to change (the alter-config route's policy).
"""

from __future__ import annotations

import enum
from collections.abc import Mapping
from typing import Any, Final

from conveyor.broker.kafka.admin_topics import TopicOps, failure
from conveyor.broker.kafka.auth import Authorizer
from conveyor.broker.kafka.registry import RequestContext
from conveyor.protocol.errors import ConveyorError
from conveyor.protocol.kafka import topic_configs
from conveyor.protocol.kafka.apis import SERVED, ApiKey
from conveyor.protocol.kafka.errors import KafkaError
from conveyor.protocol.kafka.topic_configs import ConfigEntry, ConfigSource, ConfigType
from conveyor.protocol.messages import AlterTopicConfigRequest
from conveyor.protocol.topics import parse_cleanup_policy


class ResourceType(enum.IntEnum):
    TOPIC = 2
    BROKER = 4


class Operation(enum.IntEnum):
    """IncrementalAlterConfigs' ``ConfigOperation``."""

    SET = 0
    DELETE = 1
    APPEND = 2
    SUBTRACT = 3


BrokerFacts = Mapping[str, tuple[ConfigType, str | None]]
Answer = tuple[KafkaError, str | None, list[ConfigEntry]]
_INCREMENTAL: Final = "incremental"


class DescribeConfigsHandler:
    def __init__(
        self, topics: TopicOps, authorizer: Authorizer, broker_id: int, facts: BrokerFacts
    ) -> None:
        self._topics = topics
        self._authorizer = authorizer
        self._broker_id = broker_id
        self._facts = facts

    async def __call__(self, ctx: RequestContext, request: Any) -> Any:
        response = SERVED[ApiKey.DESCRIBE_CONFIGS].response[ctx.api_version]
        results = []
        for resource in request.resources:  # never null: decode_request refuses it
            error, message, entries = await self._one(ctx, resource)
            results.append(
                response.DescribeConfigsResult(
                    error_code=error,
                    error_message=message,
                    resource_type=resource.resource_type,
                    resource_name=resource.resource_name,
                    configs=[
                        _config(response, e, ctx.api_version, bool(request.include_synonyms))
                        for e in entries
                    ],
                )
            )
        return response(throttle_time_ms=0, results=results)

    async def _one(self, ctx: RequestContext, resource: Any) -> Answer:
        keys = resource.configuration_keys
        name = resource.resource_name
        if resource.resource_type == ResourceType.TOPIC:
            return await self._topic(ctx, name, keys)
        if resource.resource_type == ResourceType.BROKER:
            if not await self._authorizer.allowed(ctx.principal, "describe", "cluster", "cluster"):
                return KafkaError.CLUSTER_AUTHORIZATION_FAILED, "describe not allowed", []
            refusal = self._wrong_broker(name)
            if refusal is not None:
                return KafkaError.INVALID_REQUEST, refusal, []
            return KafkaError.NONE, None, self._broker_entries(keys)
        return KafkaError.INVALID_REQUEST, _unsupported(resource.resource_type), []

    async def _topic(self, ctx: RequestContext, name: str, keys: list[str] | None) -> Answer:
        if not await self._authorizer.allowed(ctx.principal, "describe", "topic", name):
            return KafkaError.TOPIC_AUTHORIZATION_FAILED, "describe not allowed", []
        try:
            described = await self._topics.describe(name)
        except ConveyorError as exc:
            outcome = failure(exc)
            return outcome.error, outcome.message, []
        config, rf = described.config, described.replication_factor
        return KafkaError.NONE, None, topic_configs.describe_topic(config, rf, keys)

    def _wrong_broker(self, name: str) -> str | None:
        if name in ("", str(self._broker_id)):
            return None
        return f"this is broker {self._broker_id}: ask broker {name!r} for its settings"

    def _broker_entries(self, keys: list[str] | None) -> list[ConfigEntry]:
        names = list(self._facts) if keys is None else [k for k in keys if k in self._facts]
        return [
            ConfigEntry(
                n, self._facts[n][1], self._facts[n][0], ConfigSource.STATIC_BROKER_CONFIG, True, ""
            )
            for n in names
        ]


def _config(response: Any, entry: ConfigEntry, version: int, synonyms: bool) -> Any:
    config_cls = response.DescribeConfigsResult.DescribeConfigsResourceResult
    fields: dict[str, Any] = {}
    if version >= 1:
        fields["config_source"] = int(entry.source)
        fields["synonyms"] = (
            [
                config_cls.DescribeConfigsSynonym(
                    name=entry.name, value=entry.value, source=int(entry.source)
                )
            ]
            if synonyms
            else []
        )
    if version >= 3:
        fields["config_type"] = int(entry.config_type)
        fields["documentation"] = entry.documentation or None
    return config_cls(
        name=entry.name,
        value=entry.value,
        read_only=entry.read_only,
        is_sensitive=False,
        **fields,
    )


def _unsupported(resource_type: int) -> str:
    return f"config resource type {resource_type} is not supported (topics: 2, brokers: 4)"


class AlterConfigsHandler:
    """AlterConfigs (a resource's whole config replaced) or, with ``mode="incremental"``,
    IncrementalAlterConfigs (SET/DELETE per setting; APPEND/SUBTRACT only apply to list
    settings: Conveyor's one list is ``cleanup.policy``)."""

    def __init__(
        self, topics: TopicOps, authorizer: Authorizer, broker_id: int, mode: str = ""
    ) -> None:
        self._topics = topics
        self._authorizer = authorizer
        self._broker_id = broker_id
        self._incremental = mode == _INCREMENTAL
        self._key = ApiKey.INCREMENTAL_ALTER_CONFIGS if self._incremental else ApiKey.ALTER_CONFIGS

    async def __call__(self, ctx: RequestContext, request: Any) -> Any:
        admin = await self._authorizer.allowed(ctx.principal, "admin", "cluster", "cluster")
        validate_only = bool(request.validate_only)
        response = SERVED[self._key].response[ctx.api_version]
        results = []
        for resource in request.resources:  # never null: decode_request refuses it
            error, message = await self._one(resource, admin, validate_only)
            results.append(
                response.AlterConfigsResourceResponse(
                    error_code=error,
                    error_message=message,
                    resource_type=resource.resource_type,
                    resource_name=resource.resource_name,
                )
            )
        return response(throttle_time_ms=0, responses=results)

    async def _one(
        self, resource: Any, admin: bool, validate_only: bool
    ) -> tuple[KafkaError, str | None]:
        if resource.resource_type == ResourceType.BROKER:
            if not admin:
                return KafkaError.CLUSTER_AUTHORIZATION_FAILED, "altering configs needs admin"
            return KafkaError.INVALID_CONFIG, "broker settings are static: restart with new flags"
        if resource.resource_type != ResourceType.TOPIC:
            return KafkaError.INVALID_REQUEST, _unsupported(resource.resource_type)
        if not admin:
            return KafkaError.TOPIC_AUTHORIZATION_FAILED, "altering configs needs admin"
        try:
            current = ""
            if self._incremental and any(
                c.config_operation in (Operation.APPEND, Operation.SUBTRACT)
                for c in resource.configs
            ):
                described = await self._topics.describe(resource.resource_name)
                current = described.config.cleanup_policy
            values, reset = self._changes(resource.configs, current)
            request = AlterTopicConfigRequest(set=values, reset=reset, validate_only=validate_only)
            await self._topics.alter_config(resource.resource_name, request)
        except ConveyorError as exc:
            outcome = failure(exc)
            return outcome.error, outcome.message
        return KafkaError.NONE, None

    def _changes(self, configs: list[Any], policy: str) -> tuple[dict[str, Any], list[str]]:
        if not self._incremental:
            return topic_configs.replacement({c.name: c.value for c in configs})
        sets: dict[str, str | None] = {}
        deletes: list[str] = []
        for config in configs:
            operation = config.config_operation
            if operation == Operation.SET:
                sets[config.name] = config.value
            elif operation == Operation.DELETE:
                deletes.append(config.name)
            elif operation in (Operation.APPEND, Operation.SUBTRACT):
                policy = _list_change(config.name, policy, config.value, operation)
                sets[config.name] = policy
            else:
                raise topic_configs.invalid(f"unknown config operation {operation}")
        return topic_configs.changes(sets, deletes)


def _list_change(name: str, current: str, value: str | None, operation: int) -> str:
    """APPEND / SUBTRACT ``value`` to / from ``cleanup.policy`` (the one list setting):
    ``delete`` + ``compact`` is ``compact,delete``; removing the last one is refused."""
    setting = topic_configs.SETTINGS.get(name)
    if setting is None or setting.config_type is not ConfigType.LIST:
        raise topic_configs.invalid(f"{name} is not a list setting: APPEND/SUBTRACT need one")
    items = {part.strip() for part in current.split(",") if part.strip()}
    given = {part.strip() for part in (value or "").split(",") if part.strip()}
    items = items | given if operation == Operation.APPEND else items - given
    if not items:
        raise topic_configs.invalid(f"{name} cannot become empty")
    return str(parse_cleanup_policy(",".join(sorted(items))))
