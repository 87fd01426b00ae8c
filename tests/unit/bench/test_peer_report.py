"""``make bench``'s table and issue 19's PASS/MISS verdicts (bench/report.py), computed
from raw runs: medians per field, missing workloads shown as "-", ratios against the
peers of the same run."""

from __future__ import annotations

import importlib.util
import sys
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

REPORT = Path(__file__).resolve().parents[3] / "bench" / "report.py"


@pytest.fixture(scope="module")
def report() -> Iterator[ModuleType]:
    """bench/report.py (bench/ is scripts, not a package), in sys.modules while the tests
    run (its dataclasses look their module up there)."""
    spec = importlib.util.spec_from_file_location("bench_report", REPORT)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    with pytest.MonkeyPatch.context() as patch:
        patch.setitem(sys.modules, "bench_report", module)
        spec.loader.exec_module(module)
        yield module


def _run(system: str, w1: float, **fields: Any) -> dict[str, Any]:
    return {"system": system, "version": "v", "count": 1_000_000, "w1_produce_msg_per_s": w1,
            **fields}  # fmt: skip


def test_median_per_field_and_per_percentile(report: ModuleType) -> None:
    runs = [
        _run("redis", 100, w3_ack_latency_us={"p50_us": 90, "p99_us": 300}, run=0),
        _run("redis", 300, w3_ack_latency_us={"p50_us": 70, "p99_us": 100}, run=1),
        _run("redis", 200, w3_ack_latency_us={"p50_us": 80, "p99_us": 200}, run=2, extra=None),
    ]
    row = report.median_of(runs)
    assert row["runs"] == 3
    assert row["w1_produce_msg_per_s"] == 200
    assert row["w3_ack_latency_us"] == {"p50_us": 80, "p99_us": 200}
    assert row["extra"] is None
    assert "run" not in row


def test_table_shows_missing_workloads_as_dashes(report: ModuleType) -> None:
    rows = report.medians([_run("nats", 18_538.4)], ["conveyor", "nats"])
    assert [r["system"] for r in rows] == ["nats"]
    line = report.table(rows).splitlines()[2]
    assert line.startswith("| nats | 1,000,000 | 18,538 | - | - |")


def _rows(report: ModuleType, **conveyor: Any) -> list[dict[str, Any]]:
    base = {
        "w1_rf3_produce_msg_per_s": 310_000,
        "w2_consume_msg_per_s": 900_000,
        "w3_ack_latency_us": {"p50_us": 300, "p99_us": 2_500},
        "w4_e2e_latency_us": {"p50_us": 2_000, "p99_us": 9_000},
        "w4_50k_e2e_latency_us": None,
    }
    return [
        _run(report.CONVEYOR, 700_000, **{**base, **conveyor}),
        _run(report.REDIS, 100_000),
        _run(report.CONFLUENT, 700_000, w2_consume_msg_per_s=1_000_000),
    ]


def test_targets_are_computed_not_typed(report: ModuleType) -> None:
    checks = {c.target: c for c in report.targets(_rows(report))}
    w1 = checks["W1, 1 broker, one producer process (`send`)"]
    assert (w1.measured, w1.verdict) == ("700,000", "PASS")
    redis = checks["W1 (`send`) / Redis Streams W1"]
    assert redis.passed is True and redis.measured.startswith("7.00x")
    assert checks["W1 (`send`) / confluent-kafka producer W1"].passed is True  # 1.0x is enough
    assert checks["W1 RF=3 on 3 brokers (`send`)"].passed is True
    assert checks["W2, 4 members in one group, 16 partitions (`poll`)"].passed is False
    assert checks["W2 (`poll`) / 4-member confluent-kafka group"].verdict == "MISS"
    assert checks["W3 single-message ack latency p50"].passed is True  # <= 300 us
    assert checks["W3 p99"].passed is False
    assert checks["W4 e2e p99 at 5,000 msg/s, 8 partitions, RF=3"].passed is True
    assert checks["W4 e2e p99 at 50,000 msg/s, 8 partitions, RF=3"].verdict == "not measured"


def test_ratio_just_below_its_threshold_misses(report: ModuleType) -> None:
    rows = _rows(report)
    rows[1]["w1_produce_msg_per_s"] = 100_001  # 700,000 / 100,001 = 6.99993x
    checks = {c.target: c for c in report.targets(rows)}
    ratio = checks["W1 (`send`) / Redis Streams W1"]
    assert ratio.passed is False and ratio.measured.startswith("7.00x")


def test_batch_api_row_gets_its_own_checks(report: ModuleType) -> None:
    rows = [*_rows(report), _run(report.CONVEYOR_BATCH, 400_000)]
    targets = [c.target for c in report.targets(rows)]
    assert "W1, 1 broker, one producer process (`send_many`)" in targets
    assert "W2 (`poll_batch`) / 4-member confluent-kafka group" in targets
    rendered = report.targets_table(report.targets(rows))
    row = "| W1, 1 broker, one producer process (`send_many`) | >= 500,000 msg/s | 400,000 |"
    assert f"{row} **MISS** |" in rendered
