"""DescribeLogDirs: this broker's one log directory (``--data``), its disk's total and
usable bytes (v4+), and the size of every replica it hosts (``BrokerService.hosted``, what
``GET /v1/partitions`` answers over HTTP). Conveyor keeps one directory per broker, so
there are no future replicas and no per-directory moves."""

from __future__ import annotations

import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

from conveyor.broker.kafka.auth import Authorizer
from conveyor.broker.kafka.registry import RequestContext
from conveyor.protocol.kafka.apis import SERVED, ApiKey
from conveyor.protocol.kafka.errors import KafkaError
from conveyor.protocol.messages import HostedPartitions


class DescribeLogDirsHandler:
    def __init__(
        self, hosted: Callable[[], HostedPartitions], data_dir: Path, authorizer: Authorizer
    ) -> None:
        self._hosted = hosted
        self._data_dir = data_dir
        self._authorizer = authorizer

    async def __call__(self, ctx: RequestContext, request: Any) -> Any:
        version = ctx.api_version
        response = SERVED[ApiKey.DESCRIBE_LOG_DIRS].response[version]
        extra = {"error_code": 0} if version >= 3 else {}
        if not await self._authorizer.allowed(ctx.principal, "describe", "cluster", "cluster"):
            if version >= 3:
                extra["error_code"] = KafkaError.CLUSTER_AUTHORIZATION_FAILED
            return response(throttle_time_ms=0, results=[], **extra)
        wanted: dict[str, set[int]] | None = None
        if request.topics is not None:
            wanted = {t.topic: set(t.partitions) for t in request.topics}
        result_cls = response.DescribeLogDirsResult
        topic_cls = result_cls.DescribeLogDirsTopic
        by_topic: dict[str, list[Any]] = {}
        for p in self._hosted().partitions:
            if wanted is not None and p.partition not in wanted.get(p.topic, ()):
                continue
            by_topic.setdefault(p.topic, []).append(
                topic_cls.DescribeLogDirsPartition(
                    partition_index=p.partition,
                    partition_size=p.size_bytes,
                    offset_lag=0,
                    is_future_key=False,
                )
            )
        fields: dict[str, Any] = {}
        if version >= 4:
            usage = shutil.disk_usage(self._data_dir)
            fields = {"total_bytes": usage.total, "usable_bytes": usage.free}
        result = result_cls(
            error_code=0,
            log_dir=str(self._data_dir.resolve()),
            topics=[topic_cls(name=name, partitions=ps) for name, ps in sorted(by_topic.items())],
            **fields,
        )
        return response(throttle_time_ms=0, results=[result], **extra)
