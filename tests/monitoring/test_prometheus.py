"""A real cluster scraped by a real Prometheus: every dashboard and alert query is checked
against what the services actually export, and BrokerDown fires when a broker dies.

One cluster (coordinator + 3 brokers, real processes) and one Prometheus (scrape and rule
evaluation every 1 s, on free 127.0.0.1 ports) serve the whole module. The alert rules are
a copy of deploy/prometheus/alerts.yml with every ``for:`` set to 2 s (expressions
unchanged), so BrokerDown can be seen firing within seconds. The broker is killed in the
last test.
"""

from __future__ import annotations

import re
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from prometheus_client import CollectorRegistry

import conveyor
from conveyor.cli.monitoring import prometheus_config
from conveyor.client.metrics import PrometheusClientMetrics
from conveyor.protocol.share import ShareGroupConfig
from tests.integration.cluster import Cluster
from tests.monitoring import dashboards
from tests.monitoring.tools import (
    PROMETHEUS_DIR,
    Prometheus,
    PromQLError,
    parse_duration_s,
    require_binaries,
    shorten_for,
)
from tests.waiting import wait_for

pytestmark = pytest.mark.slow

SCRAPE_INTERVAL = "1s"
TEST_FOR = "2s"
KILLED_BROKER = 3
# What the workload creates, and the values the dashboards' variables are set to.
VARIABLE_CHOICES = {"topic": "orders", "group": "billing", "broker": "1"}


@dataclass
class Monitored:
    cluster: Cluster
    prometheus: Prometheus
    client_registry: CollectorRegistry
    consumed: int


def _workload(cluster: Cluster, registry: CollectorRegistry) -> int:
    """Produce, consume part, commit (so lag shows), produce more, and make two errors."""
    hooks = PrometheusClientMetrics(registry).enable()
    try:
        with conveyor.Admin(cluster.url) as admin:
            admin.create_topic("orders", partitions=4, replication_factor=3)
            admin.create_topic("events", partitions=2, replication_factor=1)
        with conveyor.Producer(cluster.url, linger_ms=2) as producer:
            for i in range(300):
                producer.send("orders", f"order {i}", key=f"customer-{i % 17}")
            for i in range(40):
                producer.send("events", f"event {i}")
            producer.flush(30)
        consumed = _consume(cluster.url, "orders", "billing", 150)
        _consume(cluster.url, "events", "audit", 40)
        _queue_outcomes(cluster.url)
        with conveyor.Producer(cluster.url) as producer:
            for i in range(50):
                producer.send("orders", f"late order {i}", key=f"customer-{i % 17}")
    finally:
        hooks.disable()
    broker = cluster.brokers[1].url
    _expect_error(f"{broker}/v1/topics/orders/partitions/99/records?offset=0", 404)
    _expect_error(f"{broker}/v1/topics/nosuchtopic/partitions/0/offsets", 404)
    return consumed


def _consume(url: str, topic: str, group: str, count: int) -> int:
    consumer = conveyor.Consumer(url, topic, group_id=group, enable_auto_commit=False)
    try:
        got = 0
        deadline = time.monotonic() + 30
        while got < count and time.monotonic() < deadline:
            got += len(consumer.poll(timeout=0.5, max_records=count - got))
        assert got == count, f"consumed {got} of {count} from {topic}"
        consumer.commit()
        return got
    finally:
        consumer.close()


def _queue_outcomes(url: str) -> None:
    """A share group (queue) reading "events" with every outcome the queue panels show:
    accepts, a release delivered again, a reject dead-lettered, locks that expire."""
    config = ShareGroupConfig(lock_duration_ms=2_000, max_delivery_attempts=2)
    with conveyor.Queue("events", "jobs", url=url, config=config, prefetch=False) as queue:
        got: list[conveyor.QueueMessage] = []
        wait_for(
            lambda: got.extend(queue.receive(6 - len(got), timeout=0.5)) or len(got) >= 6,
            30,
            "six queue records",
        )
        got[0].ack()
        got[1].ack()
        got[2].release(delay=0)
        got[3].reject("a bad record")
        queue.commit()  # got[4] and got[5] are left to expire
        back: set[tuple[int, int]] = set()
        wanted = {(m.partition, m.offset) for m in (got[2], got[4], got[5])}

        def redelivered() -> bool:
            for message in queue.receive(10, timeout=0.5):
                if message.delivery_count > 1:
                    back.add((message.partition, message.offset))
                message.ack()
            queue.commit()
            return wanted <= back

        wait_for(redelivered, 30, "the released and expired queue records back")


def _expect_error(url: str, status: int) -> None:
    with pytest.raises(urllib.error.HTTPError) as raised:
        urllib.request.urlopen(url, timeout=5).close()
    raised.value.close()
    assert raised.value.code == status


@pytest.fixture(scope="module")
def monitored(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Monitored]:
    binary = require_binaries("prometheus")["prometheus"]
    root: Path = tmp_path_factory.mktemp("monitoring")
    cluster = Cluster(root / "cluster", broker_count=3)
    (root / "cluster").mkdir()
    prometheus: Prometheus | None = None
    try:
        cluster.start()
        assert cluster.coordinator is not None
        rules = root / "alerts-test.yml"
        rules.write_text(shorten_for((PROMETHEUS_DIR / "alerts.yml").read_text(), TEST_FOR))
        config = prometheus_config(
            f"127.0.0.1:{cluster.coordinator.port}",
            {b: f"127.0.0.1:{s.port}" for b, s in cluster.brokers.items()},
            rule_files=[str(rules)],
            scrape_interval=SCRAPE_INTERVAL,
        )
        prometheus = Prometheus(binary, root / "prometheus", config).start()
        registry = CollectorRegistry()
        consumed = _workload(cluster, registry)
        yield Monitored(cluster, prometheus, registry, consumed)
    finally:
        if prometheus is not None:
            prometheus.stop()
        cluster.stop()


def _variable_values(prometheus: Prometheus) -> dict[str, str]:
    """Each dashboard variable resolved through Prometheus (as Grafana's label_values
    would), set to the workload's value, plus Grafana's built-in intervals."""
    values = dict(dashboards.BUILTINS)
    for path in dashboards.dashboard_files():
        for variable in dashboards.variables(dashboards.load(path)):
            found = prometheus.label_values(variable.label, variable.match)
            choice = VARIABLE_CHOICES[variable.name]
            assert choice in found, f"variable {variable.name}: {choice!r} not in {found}"
            values[variable.name] = re.escape(choice)
    return values


def test_every_panel_query_returns_data(monitored: Monitored) -> None:
    prometheus = monitored.prometheus
    wait_for(
        lambda: len(prometheus.query("up == 1")) == 4, 30, "4 targets up (coordinator + 3 brokers)"
    )
    values = _variable_values(prometheus)
    queries = dashboards.queries()
    assert len(queries) > 50
    failing: dict[str, str] = {}

    def all_answer() -> bool:
        failing.clear()
        for query in queries:
            expr = dashboards.substitute(query.expr, values)
            try:
                if not prometheus.query(expr):
                    failing[str(query)] = "no data"
            except PromQLError as exc:
                failing[str(query)] = str(exc)
        return not failing

    try:
        wait_for(all_answer, 45, "every panel query to return data", interval_s=1.0)
    except TimeoutError:
        pytest.fail(
            "panel queries without data or invalid:\n"
            + "\n".join(f"{q}\n    -> {why}" for q, why in failing.items())
        )


def test_every_referenced_metric_is_exported(monitored: Monitored) -> None:
    """Names, not just data: an alert (which normally matches nothing) naming a metric that
    was renamed away fails here, as does a panel hiding one behind `or vector(0)`."""
    prometheus = monitored.prometheus
    exprs = [q.expr for q in dashboards.queries()] + [r["query"] for r in prometheus.rules()]
    wanted = set().union(*(dashboards.metric_names(e) for e in exprs))
    exported: set[str] = set()

    def all_exported() -> bool:
        exported.update(prometheus.metric_names())
        return wanted <= exported

    try:
        wait_for(all_exported, 30, "every referenced metric to be scraped", interval_s=1.0)
    except TimeoutError:
        pytest.fail(f"referenced but never exported: {sorted(wanted - exported)}")


def test_every_alert_rule_loads_and_parses(monitored: Monitored) -> None:
    prometheus = monitored.prometheus
    rules = prometheus.rules()
    shipped = (PROMETHEUS_DIR / "alerts.yml").read_text()
    assert len(rules) == len(re.findall(r"(?m)^\s*- alert: ", shipped)), "not all rules loaded"
    for rule in rules:
        assert rule["health"] != "err", f"{rule['name']}: {rule.get('lastError')}"
        prometheus.query(rule["query"])  # raises PromQLError when it does not parse


def test_client_hooks_counted_the_workload(monitored: Monitored) -> None:
    registry = monitored.client_registry
    sent = registry.get_sample_value("conveyor_client_records_sent_total", {"topic": "orders"})
    assert sent == 350
    fetched = registry.get_sample_value(
        "conveyor_client_records_fetched_total", {"topic": "orders"}
    )
    assert fetched is not None and fetched >= monitored.consumed
    batches = registry.get_sample_value(
        "conveyor_client_produce_request_duration_seconds_count", {"topic": "orders"}
    )
    assert batches is not None and batches >= 1


def test_lag_is_log_end_minus_committed(monitored: Monitored) -> None:
    prometheus = monitored.prometheus
    expr = 'sum(conveyor_coordinator_group_lag_messages{group="billing"})'
    # 350 produced, 150 consumed and committed; reports arrive with the next heartbeat
    wait_for(
        lambda: (r := prometheus.query(expr)) and float(r[0]["value"][1]) == 200,
        20,
        "billing's lag to read 350 - 150",
    )


def test_broker_down_fires_within_its_for_window(monitored: Monitored) -> None:
    prometheus = monitored.prometheus
    rule = next(r for r in prometheus.rules() if r["name"] == "BrokerDown")
    for_s = float(rule["duration"])
    assert for_s == parse_duration_s(TEST_FOR)
    scrape_s = evaluation_s = parse_duration_s(SCRAPE_INTERVAL)
    assert not prometheus.firing("BrokerDown")
    monitored.cluster.brokers[KILLED_BROKER].kill()
    # The failed scrape is seen within one scrape interval, the rule turns pending at the
    # next evaluation and fires `for` later; 2 s of slack for polling and a busy machine.
    bound_s = for_s + scrape_s + evaluation_s + 2.0
    took_s = wait_for(
        lambda: any(
            a["labels"].get("broker") == str(KILLED_BROKER) for a in prometheus.firing("BrokerDown")
        ),
        bound_s,
        f"BrokerDown for broker {KILLED_BROKER} within {bound_s} s",
        interval_s=0.1,
    )
    print(f"BrokerDown fired {took_s:.2f} s after the kill (bound {bound_s} s)")
