"""Metrics every HTTP service exports: requests by route template, errors by code, latency,
connections, and the process itself. Service metrics plug in here (``install``).

Each application gets its own :class:`CollectorRegistry` (``REGISTRY_KEY``), never the
process-global one, so tests that run several services in one process do not collide.
``GET /metrics`` renders it in Prometheus's text format (see ``build_app``).

Requests are labelled by the *route template* (``/v1/topics/{topic}/records``), never the
raw path, so a client cannot grow the number of series; requests that match no route share
the label ``unmatched``. The hot path costs two clock reads and three cached-child updates
per request. Metric names and labels are documented in docs/monitoring.md.
"""

from __future__ import annotations

import math
import platform
import time
from collections.abc import Callable, Iterable, Mapping
from typing import Final, Protocol

from aiohttp import web
from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    disable_created_metrics,
    generate_latest,
)
from prometheus_client.exposition import CONTENT_TYPE_PLAIN_0_0_4
from prometheus_client.gc_collector import GCCollector
from prometheus_client.metrics_core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.platform_collector import PlatformCollector
from prometheus_client.process_collector import ProcessCollector
from prometheus_client.samples import Sample

from conveyor._version import __version__
from conveyor.transport.limits import ConnectionLimiter

METRICS_PATH: Final = "/metrics"
UNMATCHED_ROUTE: Final = "unmatched"
# Request latency buckets (seconds): from a page-cache append (~100 us) to a long-poll that
# waited its full 30 s (fetch max_wait_ms is capped there).
LATENCY_BUCKETS_S: Final = (
    0.0005,
    0.001,
    0.0025,
    0.005,
    0.01,
    0.025,
    0.05,
    0.1,
    0.25,
    0.5,
    1.0,
    2.5,
    5.0,
    10.0,
    30.0,
)

# (request, its route template, HTTP status, error code name or None, seconds)
RequestObserver = Callable[[web.Request, str, int, str | None, float], None]


class ServiceMetrics(Protocol):
    """What a service hands to :func:`install`: a collector, and optionally a per-request
    observer (for labels only the service understands, such as a produce's ``acks``)."""

    def collect(self) -> Iterable[Metric]: ...

    def observe_request(
        self,
        request: web.Request,
        route: str,
        status: int,
        error_code: str | None,
        seconds: float,
    ) -> None: ...


class HttpMetrics:
    """The transport's own metrics, on one application's registry."""

    def __init__(self, registry: CollectorRegistry, service: str) -> None:
        self.requests = Counter(
            "conveyor_http_requests",
            "HTTP requests answered, by route template, method and status",
            ("method", "route", "status"),
            registry=registry,
        )
        self.errors = Counter(
            "conveyor_http_request_errors",
            "HTTP requests answered with an error, by route template and error code",
            ("method", "route", "code"),
            registry=registry,
        )
        self.duration = Histogram(
            "conveyor_http_request_duration_seconds",
            "Time from the request reaching the router to the handler's answer",
            ("method", "route"),
            buckets=LATENCY_BUCKETS_S,
            registry=registry,
        )
        self.in_flight = Gauge(
            "conveyor_http_requests_in_flight",
            "HTTP requests being handled now",
            registry=registry,
        )
        info = Gauge(
            "conveyor_build_info",
            "Always 1; the labels say which service and version this process is",
            ("service", "version", "python"),
            registry=registry,
        )
        info.labels(service, __version__, platform.python_version()).set(1)
        self.auth_failures = Counter(
            "conveyor_auth_failures",
            "Requests refused 401 for wrong credentials (not for missing ones), by scheme",
            ("scheme",),
            registry=registry,
        )
        self.auth_throttled = Counter(
            "conveyor_auth_throttled",
            "Authentications refused 429 THROTTLED unchecked, by the limit that applied: "
            "too many recent failures for the principal or from the client address",
            ("scope",),
            registry=registry,
        )
        self.observers: list[RequestObserver] = []
        self._server_connections: Callable[[], int] | None = None
        self._refused: Callable[[], Mapping[str, int]] | None = None
        self._children: dict[tuple[str, str, int, str | None], _Children] = {}
        registry.register(_ConnectionsCollector(self))

    def watch_connections(self, request: web.Request) -> None:
        """Learn the aiohttp server from a request, to count its open connections.

        aiohttp keeps no public link from an application to its server; the protocol's
        ``_manager`` is that server (tested in tests/monitoring/test_metrics_unit.py, so an
        aiohttp upgrade that moves it fails a test instead of silently exporting 0)."""
        server = getattr(request.protocol, "_manager", None)
        if server is not None and hasattr(server, "connections"):
            self._server_connections = lambda: len(server.connections)

    def watch_limiter(self, limiter: ConnectionLimiter) -> None:
        """Count open and refused connections from the listener's limiter (exact from the
        start, unlike :meth:`watch_connections`, which it supersedes)."""
        self._server_connections = lambda: limiter.open_count
        self._refused = lambda: limiter.refused_count

    def refused_connections(self) -> Mapping[str, int]:
        return {} if self._refused is None else self._refused()

    def open_connections(self) -> int | None:
        count = self._server_connections
        return None if count is None else count()

    def observe(
        self, request: web.Request, route: str, status: int, error_code: str | None, seconds: float
    ) -> None:
        method = request.method
        key = (route, method, status, error_code)
        children = self._children.get(key)
        if children is None:
            children = self._children[key] = _Children(self, route, method, status, error_code)
        children.requests.inc()
        children.duration.observe(seconds)
        if children.errors is not None:
            children.errors.inc()
        for observer in self.observers:
            observer(request, route, status, error_code, seconds)


class _Children:
    """The label children of one (route, method, status, code): ``labels()`` is a few
    microseconds, a dict hit is tens of nanoseconds."""

    __slots__ = ("duration", "errors", "requests")

    def __init__(
        self, metrics: HttpMetrics, route: str, method: str, status: int, code: str | None
    ) -> None:
        self.requests = metrics.requests.labels(method, route, str(status))
        self.duration = metrics.duration.labels(method, route)
        self.errors = None if code is None else metrics.errors.labels(method, route, code)


class _ConnectionsCollector:
    def __init__(self, metrics: HttpMetrics) -> None:
        self._metrics = metrics

    def collect(self) -> Iterable[Metric]:
        count = self._metrics.open_connections()
        gauge = GaugeMetricFamily(
            "conveyor_http_connections_open",
            "TCP connections open to this service's HTTP server",
        )
        gauge.add_metric((), float(count or 0))
        yield gauge
        refused = CounterMetricFamily(
            "conveyor_http_connections_refused",
            "Connections refused 503 TOO_MANY_CONNECTIONS before their request was read, by "
            "reason: listener_full (connections_max) or address_full "
            "(connections_per_address_max)",
            labels=("reason",),
        )
        for reason, total in sorted(self._metrics.refused_connections().items()):
            refused.add_metric((reason,), float(total))
        yield refused


def new_registry(service: str) -> tuple[CollectorRegistry, HttpMetrics]:
    """A registry with the process (CPU, RSS, fds), GC and platform collectors and the
    HTTP metrics.

    Also turns off prometheus_client's ``*_created`` series process-wide: a service
    process has no use for them and they would double the series of every counter."""
    disable_created_metrics()  # type: ignore[no-untyped-call]
    registry = CollectorRegistry()
    ProcessCollector(registry=registry)
    GCCollector(registry=registry)
    PlatformCollector(registry=registry)
    return registry, HttpMetrics(registry, service)


REGISTRY_KEY: Final = web.AppKey("conveyor_metrics_registry", CollectorRegistry)
HTTP_METRICS_KEY: Final = web.AppKey("conveyor_http_metrics", HttpMetrics)


def install(app: web.Application, metrics: ServiceMetrics) -> None:
    """Export a service's metrics on ``app``'s ``/metrics`` and let it see every request."""
    app[REGISTRY_KEY].register(metrics)
    app[HTTP_METRICS_KEY].observers.append(metrics.observe_request)


class TableFamily(Metric):
    """A gauge or counter family with many series whose label sets the collector keeps
    pre-rendered (``{partition="3",topic="orders"}``), because prometheus_client's
    per-sample formatting (label escaping, sorting, float formatting) costs about 5 us a
    series: 45 ms for a broker with 800 partitions. :func:`render` writes these rows as
    they are; ``samples`` still yields ordinary samples, so any other exposition (and
    ``CollectorRegistry.get_sample_value``) reads the same values, only slower."""

    def __init__(self, name: str, documentation: str, typ: str, labelnames: tuple[str, ...]):
        super().__init__(name, documentation, typ)
        self._labelnames = labelnames
        self._sample_name = name + "_total" if typ == "counter" else name
        self._rows: list[tuple[str, tuple[str, ...], int | float]] = []

    def add_row(self, rendered: str, labels: tuple[str, ...], value: int | float) -> None:
        """``rendered`` must be ``labels`` in exposition form: see :func:`label_text`."""
        self._rows.append((rendered, labels, value))

    @property
    def samples(self) -> list[Sample]:
        names = self._labelnames
        return [
            Sample(self._sample_name, dict(zip(names, labels, strict=True)), float(value))
            for _, labels, value in self._rows
        ]

    @samples.setter
    def samples(self, _: list[Sample]) -> None:
        pass  # Metric.__init__ assigns []; the rows are the samples

    def text(self) -> str:
        name = self._sample_name
        help_text = self.documentation.replace("\\", r"\\").replace("\n", r"\n")
        lines = [f"# HELP {name} {help_text}\n# TYPE {name} {self.type}\n"]
        for rendered, _, value in self._rows:
            number = str(value) if type(value) is int else _float_text(value)
            lines.append(f"{name}{rendered} {number}\n")
        return "".join(lines)


def label_text(names: tuple[str, ...], values: tuple[str, ...]) -> str:
    """``{name="value",...}`` sorted by name, escaped as the text format wants."""
    pairs = sorted(zip(names, values, strict=True))
    return "{" + ",".join(f'{name}="{_escape(value)}"' for name, value in pairs) + "}"


def _escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


def _float_text(value: float) -> str:
    if math.isnan(value):
        return "NaN"
    if math.isinf(value):
        return "+Inf" if value > 0 else "-Inf"
    return repr(float(value))


class _Families:
    def __init__(self, families: list[Metric]) -> None:
        self._families = families

    def collect(self) -> Iterable[Metric]:
        return self._families


def render(registry: CollectorRegistry) -> bytes:
    """The text exposition of ``registry``: prometheus_client's, except that
    :class:`TableFamily` rows are written as pre-rendered."""
    parts: list[bytes] = []
    pending: list[Metric] = []
    for family in registry.collect():
        if isinstance(family, TableFamily):
            if pending:
                parts.append(generate_latest(_Families(pending)))
                pending = []
            parts.append(family.text().encode())
        else:
            pending.append(family)
    if pending:
        parts.append(generate_latest(_Families(pending)))
    return b"".join(parts)


def metrics_response(registry: CollectorRegistry) -> web.Response:
    return web.Response(body=render(registry), headers={"Content-Type": CONTENT_TYPE_PLAIN_0_0_4})


def route_template(request: web.Request) -> str:
    resource = request.match_info.route.resource
    return UNMATCHED_ROUTE if resource is None else resource.canonical


def now_s() -> float:
    return time.perf_counter()
