"""ApiVersions: the served APIs and their version ranges (``protocol/kafka/apis.py``).

A version this broker does not serve never reaches this handler: the session answers it
with UNSUPPORTED_VERSION and the ranges in a v0 body (``codec.api_versions_error``).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from conveyor.broker.kafka.registry import RequestContext
from conveyor.protocol.kafka.apis import SERVED, ApiKey


class ApiVersionsHandler:
    def __init__(self, version_ranges: Callable[[], list[tuple[int, int, int]]]) -> None:
        self._ranges = version_ranges

    async def __call__(self, ctx: RequestContext, request: Any) -> Any:
        response = SERVED[ApiKey.API_VERSIONS].response[ctx.api_version]
        return response(
            error_code=0,
            api_keys=[
                response.ApiVersion(api_key=key, min_version=low, max_version=high)
                for key, low, high in self._ranges()
            ],
            throttle_time_ms=0,
        )
