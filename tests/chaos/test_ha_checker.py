"""The "two active coordinators" check (chaos/ha.py): hand-made logs with and without it."""

from __future__ import annotations

import json

from conveyor.chaos.ha import HaEvent, parse_log, periods, two_actives


def line(ms: int, kind: str, epoch: int, decided_ms: int | None = None) -> str:
    second, milli = divmod(ms, 1000)
    fields = {
        "time": f"2026-01-01T00:00:{second:02d}.{milli:03d}Z",
        "msg": f"{kind} at {epoch}",
        "ha_event": kind,
        "epoch": epoch,
    }
    if decided_ms is not None:
        fields["decided_ms"] = decided_ms
    return json.dumps(fields)


BASE = 1767225600000  # 2026-01-01T00:00:00Z


def test_parse_reads_events_and_skips_other_lines() -> None:
    events = parse_log("c1", ["not json", line(1000, "active", 5), '{"msg": "other"}'])
    assert events == [HaEvent("c1", "active", 5, BASE + 1000, "active at 5")]


def test_a_clean_takeover_is_valid() -> None:
    events = [
        HaEvent("a", "active", 2, 1000),
        HaEvent("a", "action", 2, 1500),
        HaEvent("a", "inactive", 2, 9000),  # logged late: it was paused, it did not act
        HaEvent("b", "active", 5, 4000),
        HaEvent("b", "action", 5, 4100),
    ]
    assert two_actives(events) == []
    assert [(p.coordinator, p.end_ms) for p in periods(events)] == [("a", 9000), ("b", None)]


def test_an_old_epoch_acting_after_a_newer_became_active_is_found() -> None:
    events = [
        HaEvent("a", "active", 2, 1000),
        HaEvent("b", "active", 5, 4000),
        HaEvent("a", "action", 2, 4200, "partition t-0: leader=1"),
    ]
    problems = two_actives(events)
    assert len(problems) == 1 and "after b became active at epoch 5" in problems[0]


def test_an_action_outside_any_active_period_and_a_falling_epoch_are_found() -> None:
    events = [
        HaEvent("a", "active", 7, 1000),
        HaEvent("a", "inactive", 7, 2000),
        HaEvent("a", "action", 7, 2500),
        HaEvent("b", "active", 6, 3000),
    ]
    problems = two_actives(events)
    assert any("outside its active period" in p for p in problems)
    assert any("epoch went from 7" in p for p in problems)
