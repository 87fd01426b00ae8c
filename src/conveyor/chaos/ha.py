"""The "two active coordinators" check: pure functions over every coordinator's log.

Coordinators on etcd log (as JSON fields, ``--log-format json``) three kinds of event:

* ``ha_event=active, epoch=E``: it won the election at epoch E and may act from now on;
* ``ha_event=action, epoch=E, decided_ms=T``: a decision it made and persisted at epoch E,
  with the wall time T of the own-clock lease check that allowed it;
* ``ha_event=inactive, epoch=E``: it stopped acting at epoch E.

Anomalies (kind ``two-active-coordinators`` in the chaos checker):

1. an action at epoch E decided at or after the moment another coordinator became active
   at an epoch newer than E (a deposed coordinator acted while a newer one could);
2. an action by a coordinator outside its own active period at that epoch;
3. epochs of successive activations that do not increase.

All coordinators run on one host in the tests and the chaos suite, so their wall clocks
are one clock. An action's time is when it was decided, before its store write: a write
that landed was accepted by etcd while the epoch still held the election key, and the
decision came before it, so a correct cluster never shows rule 1 even when a paused
coordinator logs its last action late.
"""

from __future__ import annotations

import itertools
import json
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime
from typing import Final, Literal

ANOMALY: Final = "two-active-coordinators"
EventKind = Literal["active", "action", "inactive"]


@dataclass(frozen=True, slots=True)
class HaEvent:
    coordinator: str
    kind: EventKind
    epoch: int
    time_ms: int  # the log line's time; for an action, when it was decided
    text: str = ""


def parse_log(coordinator: str, lines: Iterable[str]) -> list[HaEvent]:
    """The HA events of one coordinator's JSON log (other lines are skipped)."""
    events = []
    for line in lines:
        if '"ha_event"' not in line:
            continue
        try:
            fields = json.loads(line)
            kind = fields["ha_event"]
            epoch = int(fields["epoch"])
            time_ms = _time_ms(fields["time"])
        except (ValueError, KeyError, TypeError):
            continue
        if kind not in ("active", "action", "inactive"):
            continue
        if kind == "action":
            time_ms = int(fields.get("decided_ms") or time_ms)
        events.append(HaEvent(coordinator, kind, epoch, time_ms, str(fields.get("msg", ""))))
    return events


def _time_ms(stamp: str) -> int:
    moment = datetime.fromisoformat(stamp.replace("Z", "+00:00"))
    return int(moment.timestamp() * 1000)


@dataclass(frozen=True, slots=True)
class Period:
    coordinator: str
    epoch: int
    start_ms: int
    end_ms: int | None  # None: still active when the log ended


def periods(events: Iterable[HaEvent]) -> list[Period]:
    """Each coordinator's active periods, by epoch, in time order."""
    out: list[Period] = []
    open_periods: dict[tuple[str, int], int] = {}
    for event in sorted(events, key=lambda e: e.time_ms):
        key = (event.coordinator, event.epoch)
        if event.kind == "active":
            open_periods[key] = event.time_ms
        elif event.kind == "inactive" and key in open_periods:
            out.append(Period(event.coordinator, event.epoch, open_periods.pop(key), event.time_ms))
    out += [Period(c, e, start, None) for (c, e), start in open_periods.items()]
    return sorted(out, key=lambda p: p.start_ms)


def two_actives(events: list[HaEvent]) -> list[str]:
    """Every anomaly found, described (empty: no two coordinators ever acted at once)."""
    problems: list[str] = []
    activations = sorted((e for e in events if e.kind == "active"), key=lambda e: e.time_ms)
    for before, after in itertools.pairwise(activations):
        if after.epoch <= before.epoch:
            problems.append(
                f"epoch went from {before.epoch} ({before.coordinator}) to {after.epoch} "
                f"({after.coordinator}) at {after.time_ms}"
            )
    spans = periods(events)
    for action in (e for e in events if e.kind == "action"):
        newer = [a for a in activations if a.epoch > action.epoch and a.time_ms <= action.time_ms]
        if newer:
            problems.append(
                f"{action.coordinator} acted at epoch {action.epoch} at {action.time_ms}, after "
                f"{newer[0].coordinator} became active at epoch {newer[0].epoch} at "
                f"{newer[0].time_ms}: {action.text[:120]}"
            )
        own = [
            p
            for p in spans
            if p.coordinator == action.coordinator
            and p.epoch == action.epoch
            and p.start_ms <= action.time_ms
            and (p.end_ms is None or action.time_ms <= p.end_ms)
        ]
        if not own:
            problems.append(
                f"{action.coordinator} acted at epoch {action.epoch} at {action.time_ms} "
                f"outside its active period: {action.text[:120]}"
            )
    return problems
