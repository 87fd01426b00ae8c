"""The metrics modules in-process: names, labels and values, without Prometheus."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from pathlib import Path

from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer
from prometheus_client import CollectorRegistry
from prometheus_client.parser import text_string_to_metric_families

from conveyor.broker.http import broker_routes
from conveyor.broker.metrics import REQUEST_KINDS, count_records
from conveyor.broker.service import BrokerService
from conveyor.client import metrics as client_metrics
from conveyor.client.metrics import PrometheusClientMetrics
from conveyor.coordinator import state as core
from conveyor.coordinator.metrics import CoordinatorMetrics
from conveyor.coordinator.model import ClusterState
from conveyor.coordinator.service import CoordinatorService, CoordinatorSettings
from conveyor.protocol.errors import ErrorCode, InvalidRequestError
from conveyor.protocol.messages import (
    BrokerHeartbeat,
    BrokerId,
    Epoch,
    OffsetCommitRequest,
    PartitionOffset,
    PartitionReport,
)
from conveyor.protocol.records import encode_batch
from conveyor.transport.client import CLIENT_ID_HEADER
from conveyor.transport.metrics import REGISTRY_KEY, TableFamily, label_text, render
from conveyor.transport.server import Route, build_app, json_response
from tests.clock import ManualClock
from tests.unit.broker.conftest import FakeNetwork, brokers, heartbeat_answer
from tests.unit.coordinator.helpers import INTERVAL_MS, with_brokers, with_topic

Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]


def samples(text: bytes) -> Samples:
    found: Samples = {}
    for family in text_string_to_metric_families(text.decode()):
        for sample in family.samples:
            found[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return found


def value(found: Samples, name: str, **labels: str) -> float | None:
    return found.get((name, tuple(sorted(labels.items()))))


def batch(*values: bytes) -> bytes:
    return encode_batch([(None, v) for v in values], timestamp_ms=1_700_000_000_000)


# ---- broker ----------------------------------------------------------------------------


def test_count_records_reads_headers_and_skips_a_partial_batch() -> None:
    data = batch(b"a", b"b", b"c") + batch(b"d")
    assert count_records(data) == 4
    assert count_records(data + batch(b"e", b"f")[:30]) == 4
    assert count_records(b"") == 0


def _collect(service: BrokerService) -> Samples:
    registry = CollectorRegistry()
    registry.register(service.metrics)
    return samples(render(registry))


def test_broker_counts_traffic_and_reads_partition_state(tmp_path: Path) -> None:
    async def body() -> None:
        async with brokers(tmp_path, FakeNetwork()) as (broker,):
            answer = heartbeat_answer(1, "t", [1, 1], replicas={0: [1, 2, 3]}, isr={0: [1]})
            await broker.apply_heartbeat_response(answer)
            data = batch(b"a", b"b", b"c")
            await broker.produce("t", 0, data, acks="1")  # ISR [1] < min ISR 2: not all
            await broker.produce("t", 1, batch(b"x"), acks="all")  # waits for its fsync
            # a long-poll: answers once the high watermark covers the write (after its fsync)
            await broker.fetch("t", 0, 0, max_wait_ms=10_000)
            await broker.refresh_round()  # each heartbeat round measures the disk (off-loop)
            found = _collect(broker)
            tp0 = {"topic": "t", "partition": "0"}
            assert value(found, "conveyor_broker_messages_in_total", **tp0) == 3
            assert value(found, "conveyor_broker_bytes_in_total", **tp0) == len(data)
            assert value(found, "conveyor_broker_messages_out_total", **tp0) == 3
            assert value(found, "conveyor_broker_bytes_out_total", **tp0) == len(data)
            assert value(found, "conveyor_broker_partition_log_end_offset", **tp0) == 3
            assert value(found, "conveyor_broker_partition_high_watermark", **tp0) == 3
            assert value(found, "conveyor_broker_partition_segments", **tp0) == 1
            # followers 2 and 3 reported nothing: they are the whole log behind
            assert value(found, "conveyor_broker_replica_lag_messages", follower="2", **tp0) == 3
            assert value(found, "conveyor_broker_partitions", role="leader") == 2
            assert value(found, "conveyor_broker_under_replicated_partitions") == 1
            assert value(found, "conveyor_broker_under_min_isr_partitions") == 1
            assert value(found, "conveyor_broker_isr_shrinks_total") == 0
            flushes = value(found, "conveyor_broker_flush_duration_seconds_count")
            assert flushes is not None and flushes >= 1
            rounds = value(found, "conveyor_broker_flush_round_logs_count")
            assert rounds is not None and 1 <= rounds <= flushes
            inline = value(found, "conveyor_broker_flush_rounds_inline_total")
            assert inline is not None and 0 <= inline <= rounds
            assert (value(found, "conveyor_broker_disk_free_bytes") or 0) > 0
            # a replica moved away: its counters end with it
            await broker.apply_heartbeat_response(heartbeat_answer(1, "t", [2, 1]))
            found = _collect(broker)
            assert value(found, "conveyor_broker_messages_in_total", **tp0) is None
            assert value(found, "conveyor_broker_messages_in_total", topic="t", partition="1") == 1

    asyncio.run(body())


def test_every_data_route_has_a_request_kind(tmp_path: Path) -> None:
    async def body() -> None:
        async with brokers(tmp_path, FakeNetwork()) as (broker,):
            for route in broker_routes(broker):
                assert (route.method, route.path) in REQUEST_KINDS, route.path

    asyncio.run(body())


# ---- transport -------------------------------------------------------------------------


async def _with_client(
    app: web.Application,
    body: Callable[[TestClient[web.Request, web.Application]], Awaitable[None]],
) -> None:
    client = TestClient(TestServer(app))
    await client.start_server()
    try:
        await body(client)
    finally:
        await client.close()


def _test_app() -> web.Application:
    async def thing(request: web.Request) -> web.Response:
        if request.match_info["name"] == "missing":
            raise InvalidRequestError("no such thing", code=ErrorCode.UNKNOWN_TOPIC)
        return json_response({"name": request.match_info["name"]})

    return build_app("test", [Route("GET", "/v1/things/{name}", thing, "a thing")])


def test_requests_are_labelled_by_route_template_and_error_code() -> None:
    app = _test_app()
    other = _test_app()  # a second app in the same process: its own registry, no clash

    async def body(client: TestClient[web.Request, web.Application]) -> None:
        for name in ("a", "b", "missing"):
            await client.get(f"/v1/things/{name}")
        await client.get("/no/such/route")
        response = await client.get("/metrics")
        assert response.status == 200
        assert response.headers["Content-Type"].startswith("text/plain; version=0.0.4")
        found = samples(await response.read())
        route = "/v1/things/{name}"
        assert (
            value(found, "conveyor_http_requests_total", method="GET", route=route, status="200")
            == 2
        )
        assert (
            value(found, "conveyor_http_requests_total", method="GET", route=route, status="404")
            == 1
        )
        assert (
            value(
                found,
                "conveyor_http_request_errors_total",
                method="GET",
                route=route,
                code="UNKNOWN_TOPIC",
            )
            == 1
        )
        assert (
            value(
                found, "conveyor_http_requests_total", method="GET", route="unmatched", status="404"
            )
            == 1
        )
        assert not any("/v1/things/a" in str(key) for key in found)
        assert (value(found, "conveyor_http_connections_open") or 0) >= 1
        assert (
            value(
                found, "conveyor_build_info", service="test", version=_version(), python=_python()
            )
            == 1
        )
        assert value(found, "process_open_fds") is not None
        assert any(name.startswith("python_gc_") for name, _ in found)
        assert not any(name.endswith("_created") for name, _ in found)

    asyncio.run(_with_client(app, body))
    assert b"conveyor_http_requests_total{" not in render(other[REGISTRY_KEY])


def _version() -> str:
    from conveyor._version import __version__

    return __version__


def _python() -> str:
    import platform

    return platform.python_version()


# ---- coordinator -----------------------------------------------------------------------


def _metrics(
    tmp_path: Path, state: ClusterState, now_ms: int
) -> tuple[CoordinatorMetrics, CoordinatorService]:
    service = CoordinatorService(CoordinatorSettings(data_dir=tmp_path), ManualClock(now_ms))
    service._writer.state = state  # a unit test of the collector alone
    return service.metrics, service


def test_leader_election_counted_with_the_time_the_partition_had_no_leader(tmp_path: Path) -> None:
    state = with_topic(with_brokers([1, 2], now_ms=0), "t", partitions=2, replication_factor=2)
    metrics, service = _metrics(tmp_path, state, now_ms=0)
    # broker 2 keeps heartbeating; broker 1 (leader of one partition) goes silent at 0
    state = core.handle_heartbeat(
        state, BrokerHeartbeat(broker_id=BrokerId(2), url="http://b2"), 5000, INTERVAL_MS
    ).state
    result = core.expire_brokers(state, 7000, 6000)
    service._writer.state = result.state
    metrics.on_transition(state, result, 7000)
    found = samples(render(_registry(metrics)))
    assert value(found, "conveyor_coordinator_leader_elections_total") == 1
    assert value(found, "conveyor_coordinator_isr_shrinks_total") == 2
    assert value(found, "conveyor_coordinator_broker_expirations_total") == 1
    assert value(found, "conveyor_coordinator_leader_election_duration_seconds_sum") == 7.0
    assert value(found, "conveyor_coordinator_brokers_alive") == 1
    assert value(found, "conveyor_coordinator_broker_alive", broker="1") == 0


def test_heartbeat_misses_counted_from_the_gap(tmp_path: Path) -> None:
    state = with_brokers([1], now_ms=0)
    metrics, _ = _metrics(tmp_path, state, now_ms=0)
    heartbeat = BrokerHeartbeat(broker_id=BrokerId(1), url="http://127.0.0.1:9001")
    result = core.handle_heartbeat(state, heartbeat, 3500, INTERVAL_MS)  # 1000 ms interval
    metrics.on_transition(state, result, 3500)
    found = samples(render(_registry(metrics)))
    assert value(found, "conveyor_coordinator_broker_heartbeat_misses_total", broker="1") == 2


def test_lag_is_the_reported_log_end_minus_the_committed_offset(tmp_path: Path) -> None:
    state = with_topic(with_brokers([1]), "t", partitions=2, replication_factor=1)
    report = PartitionReport(
        topic="t",
        partition=0,
        leader_epoch=Epoch(0),
        log_start_offset=0,
        log_end_offset=120,
        high_watermark=120,
    )
    heartbeat = BrokerHeartbeat(
        broker_id=BrokerId(1), url="http://127.0.0.1:9001", partitions=[report]
    )
    state = core.handle_heartbeat(state, heartbeat, 10, INTERVAL_MS).state
    commit = OffsetCommitRequest(offsets=[PartitionOffset(topic="t", partition=0, offset=100)])
    state = core.commit_offsets(state, "billing", commit, 20).state
    metrics, _ = _metrics(tmp_path, state, now_ms=30)
    found = samples(render(_registry(metrics)))
    labels = {"group": "billing", "topic": "t", "partition": "0"}
    assert value(found, "conveyor_coordinator_group_committed_offset", **labels) == 100
    assert value(found, "conveyor_coordinator_group_lag_messages", **labels) == 20
    assert (
        value(found, "conveyor_coordinator_partition_log_end_offset", topic="t", partition="0")
        == 120
    )
    assert value(found, "conveyor_coordinator_groups") == 1
    assert value(found, "conveyor_coordinator_rebalances_total", group="billing") == 0
    assert value(found, "conveyor_coordinator_partitions") == 2


def test_consumers_counted_by_client_id(tmp_path: Path) -> None:
    settings = CoordinatorSettings(data_dir=tmp_path)
    from conveyor.coordinator.http import build_coordinator_app

    app = build_coordinator_app(settings)

    async def body(client: TestClient[web.Request, web.Application]) -> None:
        for client_id in ("c1", "c2", "c2"):
            await client.get("/v1/groups/billing/offsets", headers={CLIENT_ID_HEADER: client_id})
        found = samples(await (await client.get("/metrics")).read())
        assert value(found, "conveyor_coordinator_group_members", group="billing") == 2
        assert value(found, "conveyor_coordinator_consumers_active") == 2

    asyncio.run(_with_client(app, body))


def _registry(metrics: CoordinatorMetrics) -> CollectorRegistry:
    registry = CollectorRegistry()
    registry.register(metrics)
    return registry


# ---- client hooks ----------------------------------------------------------------------


def test_client_hooks_export_into_the_users_registry() -> None:
    registry = CollectorRegistry()
    hooks = PrometheusClientMetrics(registry).enable()
    try:
        client_metrics.batch_sent("orders", 10, 2048, 0.004)
        client_metrics.batch_retried("orders", "NOT_LEADER")
        client_metrics.batch_failed("orders", 3, "REQUEST_TIMED_OUT")
        client_metrics.records_fetched("orders", 7, 900)
    finally:
        hooks.disable()
    client_metrics.batch_sent("orders", 99, 1, 0.1)  # disabled: not counted
    get = registry.get_sample_value
    assert get("conveyor_client_records_sent_total", {"topic": "orders"}) == 10
    assert get("conveyor_client_batch_size_bytes_sum", {"topic": "orders"}) == 2048
    assert get("conveyor_client_produce_request_duration_seconds_count", {"topic": "orders"}) == 1
    assert (
        get("conveyor_client_produce_retries_total", {"topic": "orders", "code": "NOT_LEADER"}) == 1
    )
    assert (
        get(
            "conveyor_client_records_failed_total", {"topic": "orders", "code": "REQUEST_TIMED_OUT"}
        )
        == 3
    )
    assert get("conveyor_client_records_fetched_total", {"topic": "orders"}) == 7
    assert get("conveyor_client_fetched_bytes_total", {"topic": "orders"}) == 900


def test_fast_rendering_matches_prometheus_client(tmp_path: Path) -> None:
    """TableFamily rows rendered directly read back the same as prometheus_client's own
    exposition of the same registry (which goes through their ``samples``)."""
    from prometheus_client import generate_latest

    async def body() -> None:
        async with brokers(tmp_path, FakeNetwork()) as (broker,):
            answer = heartbeat_answer(1, "t.x-1", [1, 1], replicas={0: [1, 2]})
            await broker.apply_heartbeat_response(answer)
            await broker.produce("t.x-1", 1, batch(b"a"), acks="all")
            registry = CollectorRegistry()
            registry.register(broker.metrics)
            fast, reference = samples(render(registry)), samples(generate_latest(registry))
            for found in (fast, reference):  # free space moves between two collections
                for key in [k for k in found if k[0].startswith("conveyor_broker_disk_")]:
                    del found[key]
            assert fast == reference

    asyncio.run(body())


def test_table_family_escapes_label_values() -> None:
    from prometheus_client import generate_latest

    family = TableFamily("conveyor_test", "doc", "counter", ("a", "b"))
    values = ('we"ird\\', "new\nline")
    family.add_row(label_text(("a", "b"), values), values, 3)
    family.add_row(label_text(("a", "b"), ("x", "y")), ("x", "y"), 0.5)
    registry = CollectorRegistry()

    class One:
        def collect(self) -> list[TableFamily]:
            return [family]

    registry.register(One())
    assert samples(render(registry)) == samples(generate_latest(registry))
    assert value(samples(render(registry)), "conveyor_test_total", a=values[0], b=values[1]) == 3
