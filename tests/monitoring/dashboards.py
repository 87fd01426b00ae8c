"""Reading the shipped Grafana dashboards: panels, their PromQL, template variables."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tests.monitoring.tools import DASHBOARDS_DIR

# Grafana's built-in interval variables, as the tests substitute them (scrape interval 1 s).
BUILTINS = {"__rate_interval": "30s", "__interval": "5s", "__range": "5m"}
_VARIABLE = re.compile(r"\$\{(\w+)(?::\w+)?\}|\$(\w+)")
_LABEL_VALUES = re.compile(r"^label_values\((?P<match>.+),\s*(?P<label>\w+)\)$")
METRIC_NAME = re.compile(r"\b(?:up|(?:conveyor|process|python)_[a-zA-Z0-9_]+)\b")


def dashboard_files() -> list[Path]:
    return sorted(DASHBOARDS_DIR.glob("*.json"))


def load(path: Path) -> dict[str, Any]:
    data: dict[str, Any] = json.loads(path.read_text())
    return data


def panels(dashboard: Mapping[str, Any]) -> Iterator[dict[str, Any]]:
    """Every panel, including those nested in rows."""
    for panel in dashboard.get("panels", []):
        yield panel
        yield from panel.get("panels", [])


@dataclass(frozen=True)
class PanelQuery:
    dashboard: str
    panel: str
    ref_id: str
    expr: str

    def __str__(self) -> str:
        return f"{self.dashboard} / {self.panel} / {self.ref_id}: {self.expr}"


def queries() -> list[PanelQuery]:
    found = []
    for path in dashboard_files():
        dashboard = load(path)
        for panel in panels(dashboard):
            if panel.get("type") == "row":
                continue
            for target in panel.get("targets", []):
                found.append(
                    PanelQuery(dashboard["uid"], panel["title"], target["refId"], target["expr"])
                )
    return found


@dataclass(frozen=True)
class Variable:
    name: str
    match: str  # the series selector of label_values(...)
    label: str


def variables(dashboard: Mapping[str, Any]) -> list[Variable]:
    found = []
    for variable in dashboard.get("templating", {}).get("list", []):
        query = variable["query"]
        text = query["query"] if isinstance(query, dict) else query
        parsed = _LABEL_VALUES.match(text.strip())
        assert parsed, f"{variable['name']}: only label_values(...) variables are checked"
        found.append(Variable(variable["name"], parsed["match"], parsed["label"]))
    return found


def referenced_variables(expr: str) -> set[str]:
    return {m.group(1) or m.group(2) for m in _VARIABLE.finditer(expr)}


def substitute(expr: str, values: Mapping[str, str]) -> str:
    """Replace ``$name`` / ``${name}`` as Grafana would for one selected value."""

    def replace(match: re.Match[str]) -> str:
        name = match.group(1) or match.group(2)
        return values[name]

    return _VARIABLE.sub(replace, expr)


def metric_names(expr: str) -> set[str]:
    return set(METRIC_NAME.findall(expr))
