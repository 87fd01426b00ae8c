"""CreateAcls, DescribeAcls and DeleteAcls over Conveyor's ACL rules: the coordinator's
``/v1/security/acls`` operations (``coordinator_admin.CoordinatorAcls``), with Kafka's
bindings translated by ``acl_mapping.py`` (what cannot be expressed exactly is refused
with INVALID_REQUEST and its reason). Managing ACLs is a cluster administrator's, as over
HTTP; a refused creation adds nothing (each binding's rules are checked before any is
added).
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any, Protocol

from conveyor.broker.kafka import acl_mapping
from conveyor.broker.kafka.acl_mapping import Binding
from conveyor.broker.kafka.auth import Authorizer
from conveyor.broker.kafka.registry import RequestContext
from conveyor.protocol.errors import ConveyorError
from conveyor.protocol.kafka.apis import SERVED, ApiKey
from conveyor.protocol.kafka.errors import KafkaError, kafka_error
from conveyor.protocol.security import AclRule

_NOT_ADMIN = "managing ACLs needs admin on the cluster"


class AclOps(Protocol):
    async def list(self) -> list[AclRule]: ...
    async def add(self, rule: AclRule) -> None: ...
    async def remove(self, rule: AclRule) -> None: ...


def _filter(f: Any) -> Binding:
    return Binding(
        resource_type=f.resource_type_filter,
        resource_name=f.resource_name_filter,
        pattern_type=f.pattern_type_filter,
        principal=f.principal_filter,
        host=f.host_filter,
        operation=f.operation,
        permission=f.permission_type,
    )


def _failure(exc: ConveyorError) -> tuple[KafkaError, str]:
    return kafka_error(exc.code, "cluster"), exc.message


class CreateAclsHandler:
    def __init__(self, acls: AclOps, authorizer: Authorizer) -> None:
        self._acls = acls
        self._authorizer = authorizer

    async def __call__(self, ctx: RequestContext, request: Any) -> Any:
        admin = await self._authorizer.allowed(ctx.principal, "admin", "cluster", "cluster")
        response = SERVED[ApiKey.CREATE_ACLS].response[ctx.api_version]
        results = []
        for creation in request.creations:
            error, message = await self._one(creation, admin)
            results.append(response.AclCreationResult(error_code=error, error_message=message))
        return response(throttle_time_ms=0, results=results)

    async def _one(self, creation: Any, admin: bool) -> tuple[KafkaError, str | None]:
        if not admin:
            return KafkaError.CLUSTER_AUTHORIZATION_FAILED, _NOT_ADMIN
        binding = Binding(
            resource_type=creation.resource_type,
            resource_name=creation.resource_name,
            pattern_type=creation.resource_pattern_type,
            principal=creation.principal,
            host=creation.host,
            operation=creation.operation,
            permission=creation.permission_type,
        )
        try:
            for rule in acl_mapping.to_rules(binding):
                await self._acls.add(rule)
        except ConveyorError as exc:
            return _failure(exc)
        return KafkaError.NONE, None


class DescribeAclsHandler:
    def __init__(self, acls: AclOps, authorizer: Authorizer) -> None:
        self._acls = acls
        self._authorizer = authorizer

    async def __call__(self, ctx: RequestContext, request: Any) -> Any:
        response = SERVED[ApiKey.DESCRIBE_ACLS].response[ctx.api_version]
        error, message, found = KafkaError.NONE, None, []
        if not await self._authorizer.allowed(ctx.principal, "admin", "cluster", "cluster"):
            error, message = KafkaError.CLUSTER_AUTHORIZATION_FAILED, _NOT_ADMIN
        else:
            try:
                flt = _filter(request)
                found = [
                    b for b in _bindings(await self._acls.list()) if acl_mapping.matches(b, flt)
                ]
            except ConveyorError as exc:
                error, message = _failure(exc)
        return response(
            throttle_time_ms=0,
            error_code=error,
            error_message=message,
            resources=_by_resource(response, found),
        )


def _bindings(rules: Iterable[AclRule]) -> list[Binding]:
    return [acl_mapping.to_binding(rule) for rule in rules]


def _by_resource(response: Any, bindings: list[Binding]) -> list[Any]:
    resource_cls = response.DescribeAclsResource
    grouped: dict[tuple[int, str | None, int], list[Any]] = {}
    for b in bindings:
        grouped.setdefault((b.resource_type, b.resource_name, b.pattern_type), []).append(
            resource_cls.AclDescription(
                principal=b.principal,
                host=b.host,
                operation=b.operation,
                permission_type=b.permission,
            )
        )
    return [
        resource_cls(resource_type=rt, resource_name=name, pattern_type=pt, acls=acls)
        for (rt, name, pt), acls in grouped.items()
    ]


class DeleteAclsHandler:
    def __init__(self, acls: AclOps, authorizer: Authorizer) -> None:
        self._acls = acls
        self._authorizer = authorizer

    async def __call__(self, ctx: RequestContext, request: Any) -> Any:
        response = SERVED[ApiKey.DELETE_ACLS].response[ctx.api_version]
        result_cls = response.DeleteAclsFilterResult
        admin = await self._authorizer.allowed(ctx.principal, "admin", "cluster", "cluster")
        results = []
        for f in request.filters:
            if not admin:
                results.append(
                    result_cls(
                        error_code=KafkaError.CLUSTER_AUTHORIZATION_FAILED,
                        error_message=_NOT_ADMIN,
                        matching_acls=[],
                    )
                )
                continue
            try:
                removed = await self._remove(_filter(f))
            except ConveyorError as exc:
                error, message = _failure(exc)
                results.append(
                    result_cls(error_code=error, error_message=message, matching_acls=[])
                )
                continue
            matching = [
                result_cls.DeleteAclsMatchingAcl(
                    error_code=0,
                    error_message=None,
                    resource_type=b.resource_type,
                    resource_name=b.resource_name,
                    pattern_type=b.pattern_type,
                    principal=b.principal,
                    host=b.host,
                    operation=b.operation,
                    permission_type=b.permission,
                )
                for b in removed
            ]
            results.append(result_cls(error_code=0, error_message=None, matching_acls=matching))
        return response(throttle_time_ms=0, filter_results=results)

    async def _remove(self, flt: Binding) -> list[Binding]:
        removed = []
        for rule in await self._acls.list():
            binding = acl_mapping.to_binding(rule)
            if acl_mapping.matches(binding, flt):
                await self._acls.remove(rule)
                removed.append(binding)
        return removed
