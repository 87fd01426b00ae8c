"""``make bench``'s arithmetic and tables, pure (no I/O): medians of the raw runs, the peer
table, and issue 19's targets with PASS/MISS computed from the same rows.

A raw run is one JSON object per system and round (``bench/results.jsonl``); the fields a
table reads (absent or None: the system does not run that workload, shown as "-"):

    system, version, count                     who ran, how many messages W1 and W2 moved
    w1_produce_msg_per_s, w1_rf3_produce_msg_per_s, w2_consume_msg_per_s
    w3_ack_latency_us, w4_e2e_latency_us,      {"p50_us": .., "p99_us": .., ...}
    w4_50k_e2e_latency_us                      W4 at 5,000 and at 50,000 msg/s
"""

from __future__ import annotations

import statistics
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

CONVEYOR = "conveyor"
CONVEYOR_BATCH = "conveyor, batch APIs"
CONFLUENT = "confluent-kafka -> Conveyor"
REDIS = "redis"

Row = dict[str, Any]


def median_of(runs: list[Row]) -> Row:
    """Field by field median over the runs of one system (each latency percentile on its
    own); strings from the first run; values a run lacks are left out of that median."""
    out: Row = {
        "system": runs[0]["system"],
        "version": runs[0].get("version", ""),
        "runs": len(runs),
    }
    keys = dict.fromkeys(k for run in runs for k in run)
    for key in keys:
        if key in out or key == "run":
            continue
        values = [run[key] for run in runs if run.get(key) is not None]
        if not values:
            out[key] = None
        elif all(isinstance(v, dict) for v in values):
            subkeys = dict.fromkeys(k for v in values for k in v)
            out[key] = {
                k: statistics.median(v[k] for v in values if isinstance(v.get(k), int | float))
                for k in subkeys
                if any(isinstance(v.get(k), int | float) for v in values)
            }
        elif all(isinstance(v, int | float) and not isinstance(v, bool) for v in values):
            out[key] = statistics.median(values)
        else:
            out[key] = values[0]
    return out


def medians(raw: Iterable[Row], systems: list[str]) -> list[Row]:
    """One median row per system, in the order of ``systems`` (those with runs)."""
    runs = list(raw)
    rows = []
    for system in systems:
        mine = [r for r in runs if r.get("system") == system]
        if mine:
            rows.append(median_of(mine))
    return rows


def _get(row: Row, key: str, sub: str | None = None) -> float | None:
    value = row.get(key)
    if sub is not None:
        value = value.get(sub) if isinstance(value, dict) else None
    return value if isinstance(value, int | float) else None


def _n(value: float | None) -> str:
    return "-" if value is None else f"{value:,.0f}"


COLUMNS: list[tuple[str, Callable[[Row], str]]] = [
    ("W1/W2 messages", lambda r: _n(_get(r, "count"))),
    ("W1 msg/s", lambda r: _n(_get(r, "w1_produce_msg_per_s"))),
    ("W1 RF=3 msg/s", lambda r: _n(_get(r, "w1_rf3_produce_msg_per_s"))),
    ("W2 msg/s", lambda r: _n(_get(r, "w2_consume_msg_per_s"))),
    ("W3 p50 us", lambda r: _n(_get(r, "w3_ack_latency_us", "p50_us"))),
    ("W3 p99 us", lambda r: _n(_get(r, "w3_ack_latency_us", "p99_us"))),
    ("W4 5k p50 us", lambda r: _n(_get(r, "w4_e2e_latency_us", "p50_us"))),
    ("W4 5k p99 us", lambda r: _n(_get(r, "w4_e2e_latency_us", "p99_us"))),
    ("W4 50k p50 us", lambda r: _n(_get(r, "w4_50k_e2e_latency_us", "p50_us"))),
    ("W4 50k p99 us", lambda r: _n(_get(r, "w4_50k_e2e_latency_us", "p99_us"))),
]


def table(rows: list[Row]) -> str:
    head = "| system | " + " | ".join(name for name, _ in COLUMNS) + " |"
    rule = "|---|" + "---:|" * len(COLUMNS)
    lines = [head, rule]
    for row in rows:
        lines.append(f"| {row['system']} | " + " | ".join(f(row) for _, f in COLUMNS) + " |")
    return "\n".join(lines)


# --- issue 19's targets -------------------------------------------------------------------


@dataclass(frozen=True)
class Check:
    """One target: what was required, what the run measured, and the verdict (None when a
    row it needs is missing from the run)."""

    target: str
    required: str
    measured: str
    passed: bool | None

    @property
    def verdict(self) -> str:
        return {True: "PASS", False: "MISS", None: "not measured"}[self.passed]


def _at_least(target: str, value: float | None, threshold: float, unit: str) -> Check:
    required = f">= {threshold:,.0f} {unit}"
    if value is None:
        return Check(target, required, "-", None)
    return Check(target, required, f"{value:,.0f}", value >= threshold)


def _at_most(target: str, value: float | None, threshold: float, unit: str) -> Check:
    required = f"<= {threshold:,.0f} {unit}"
    if value is None:
        return Check(target, required, "-", None)
    return Check(target, required, f"{value:,.0f} {unit}", value <= threshold)


def _ratio(target: str, value: float | None, base: float | None, threshold: float) -> Check:
    required = f">= {threshold:.1f}x"
    if value is None or base is None or base <= 0:
        return Check(target, required, "-", None)
    ratio = value / base
    # the verdict compares the ratio itself, not its rounded text
    return Check(target, required, f"{ratio:.2f}x ({value:,.0f} / {base:,.0f})", ratio >= threshold)


def targets(rows: list[Row]) -> list[Check]:
    """Issue 19's targets, each evaluated on Conveyor's row with ``send``/``poll`` and, where
    the batch APIs change the figure, on its ``send_many``/``poll_batch`` row."""
    by_system = {row["system"]: row for row in rows}
    conveyor = by_system.get(CONVEYOR, {})
    confluent = by_system.get(CONFLUENT, {})
    redis = by_system.get(REDIS, {})
    variants = [(conveyor, "send", "poll")]
    if CONVEYOR_BATCH in by_system:
        variants.append((by_system[CONVEYOR_BATCH], "send_many", "poll_batch"))
    checks: list[Check] = []
    for row, send, _ in variants:
        w1 = _get(row, "w1_produce_msg_per_s")
        checks += [
            _at_least(f"W1, 1 broker, one producer process (`{send}`)", w1, 500_000, "msg/s"),
            _ratio(f"W1 (`{send}`) / Redis Streams W1", w1, _get(redis, "w1_produce_msg_per_s"), 7),
            _ratio(
                f"W1 (`{send}`) / confluent-kafka producer W1",
                w1,
                _get(confluent, "w1_produce_msg_per_s"),
                1,
            ),
        ]
    for row, send, _ in variants:
        rf3 = _get(row, "w1_rf3_produce_msg_per_s")
        checks.append(_at_least(f"W1 RF=3 on 3 brokers (`{send}`)", rf3, 300_000, "msg/s"))
    for row, _, poll in variants:
        w2 = _get(row, "w2_consume_msg_per_s")
        checks += [
            _at_least(
                f"W2, 4 members in one group, 16 partitions (`{poll}`)", w2, 1_000_000, "msg/s"
            ),
            _ratio(
                f"W2 (`{poll}`) / 4-member confluent-kafka group",
                w2,
                _get(confluent, "w2_consume_msg_per_s"),
                1,
            ),
        ]
    checks += [
        _at_most(
            "W3 single-message ack latency p50",
            _get(conveyor, "w3_ack_latency_us", "p50_us"),
            300,
            "us",
        ),
        _at_most("W3 p99", _get(conveyor, "w3_ack_latency_us", "p99_us"), 2_000, "us"),
        _at_most(
            "W4 e2e p99 at 5,000 msg/s, 8 partitions, RF=3",
            _get(conveyor, "w4_e2e_latency_us", "p99_us"),
            10_000,
            "us",
        ),
        _at_most(
            "W4 e2e p99 at 50,000 msg/s, 8 partitions, RF=3",
            _get(conveyor, "w4_50k_e2e_latency_us", "p99_us"),
            20_000,
            "us",
        ),
    ]
    return checks


def targets_table(checks: list[Check]) -> str:
    lines = ["| target | required | measured (medians) | result |", "|---|---|---:|---|"]
    for c in checks:
        verdict = f"**{c.verdict}**" if c.passed is not None else c.verdict
        lines.append(f"| {c.target} | {c.required} | {c.measured} | {verdict} |")
    return "\n".join(lines)
