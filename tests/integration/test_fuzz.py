"""Fuzz every public endpoint of the coordinator and a broker from their OpenAPI documents
(schemathesis, bounded examples): no 5xx, no crash, nothing unreadable stored."""

from __future__ import annotations

import json
import urllib.request
from collections.abc import Iterator
from typing import Any

import pytest

schemathesis = pytest.importorskip("schemathesis")

from hypothesis import HealthCheck, given, settings  # noqa: E402

import conveyor  # noqa: E402
from tests.integration.cluster import Cluster  # noqa: E402

EXAMPLES_PER_OPERATION = 12


@pytest.fixture(scope="module")
def fuzz_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    cluster = Cluster(tmp_path_factory.mktemp("fuzz"), broker_count=1).start()
    try:
        yield cluster
    finally:
        cluster.stop()


def document(url: str) -> dict[str, Any]:
    with urllib.request.urlopen(url + "/openapi.json") as response:
        return dict(json.load(response))


def fuzz(base_url: str, doc: dict[str, Any]) -> tuple[list[str], int]:
    """Every public operation; returns the 5xx answers found and the requests made."""
    schema = schemathesis.openapi.from_dict(doc)
    problems: list[str] = []
    calls = [0]
    for result in schema.get_all_operations():
        operation = result.ok()
        if "internal" in (operation.tags or []) or operation.path == "/metrics":
            continue

        @settings(
            max_examples=EXAMPLES_PER_OPERATION,
            deadline=None,
            derandomize=True,
            suppress_health_check=list(HealthCheck),
            database=None,
        )
        @given(operation.as_strategy())
        def run(case: Any) -> None:
            response = case.call(base_url=base_url, timeout=15)
            calls[0] += 1
            if response.status_code >= 500:
                problems.append(
                    f"{case.method} {case.formatted_path} -> {response.status_code} "
                    f"{response.text[:200]}"
                )

        run()
    return problems, calls[0]


def test_public_endpoints_never_answer_5xx(fuzz_cluster: Cluster) -> None:
    services = [fuzz_cluster.coordinator, fuzz_cluster.brokers[1]]
    problems: list[str] = []
    for service in services:
        assert service is not None
        found, calls = fuzz(service.url, document(service.url))
        assert calls >= 40, calls  # the operations were exercised
        problems += found
        assert service.alive(), service.log()
    assert problems == []
    with conveyor.Admin(fuzz_cluster.url) as admin:  # what was stored reads back
        for topic in admin.list_topics():
            assert admin.describe_topic(topic.name).name == topic.name
