"""The shipped Grafana dashboards: Grafana's own TypeScript schema (offline, through
@grafana/schema and tsc), and the rules Grafana does not enforce."""

from __future__ import annotations

import json
import re
import subprocess
from pathlib import Path
from typing import Any

import pytest

from tests.monitoring import dashboards
from tests.monitoring.tools import DASHBOARDS_DIR, DATASOURCE_UID, DEPLOY, require_tsc

FILES = dashboards.dashboard_files()
EXPECTED = {"conveyor-overview", "conveyor-topics", "conveyor-groups", "conveyor-brokers"}
# Grafana's string enums, which JSON can only spell as their values: (enclosing key, key) ->
# the enum. The TypeScript literal names the member, so an unknown value fails to compile.
STRING_ENUMS = {("thresholds", "mode"): "ThresholdsMode"}
_ENUM_MARK = "@@enum@@"


def typescript_literal(dashboard: dict[str, Any]) -> str:
    """The dashboard as a TypeScript object literal: its JSON, with string-enum values
    written as enum members (``"absolute"`` -> ``ThresholdsMode.Absolute``)."""

    def convert(value: Any, parent: str | None) -> Any:
        if isinstance(value, dict):
            out = {}
            for key, item in value.items():
                enum = STRING_ENUMS.get((parent or "", key))
                if enum is not None and isinstance(item, str):
                    out[key] = f"{_ENUM_MARK}{enum}.{item[:1].upper()}{item[1:]}{_ENUM_MARK}"
                else:
                    out[key] = convert(item, key)
            return out
        if isinstance(value, list):
            return [convert(item, parent) for item in value]
        return value

    text = json.dumps(convert(dashboard, None), indent=2)
    return re.sub(rf'"{_ENUM_MARK}(\w+\.\w+){_ENUM_MARK}"', r"\1", text)


def test_the_four_dashboards_are_there() -> None:
    assert {dashboards.load(p)["uid"] for p in FILES} == EXPECTED


def test_dashboards_satisfy_grafanas_schema(tmp_path: Path) -> None:
    """``<dashboard> satisfies Dashboard`` under ``tsc --strict --noEmit``: object literals
    get excess-property checks, so a misspelt or misplaced field fails too."""
    node, tsc = require_tsc()
    modules = DEPLOY / "grafana" / "schema-check" / "node_modules"
    for path in FILES:
        literal = typescript_literal(dashboards.load(path))
        (tmp_path / f"{path.stem}.ts").write_text(
            "import { type Dashboard, ThresholdsMode } from '@grafana/schema';\n"
            f"export const dashboard = {literal} satisfies Dashboard;\n"
        )
    tsconfig = {
        "compilerOptions": {
            "strict": True,
            "noEmit": True,
            "target": "ES2022",
            "module": "ESNext",
            "moduleResolution": "bundler",
            "skipLibCheck": True,
            "baseUrl": ".",
            "paths": {"@grafana/schema": [str(modules / "@grafana" / "schema")]},
            "typeRoots": [],
        },
        "include": ["*.ts"],
    }
    (tmp_path / "tsconfig.json").write_text(json.dumps(tsconfig))
    result = subprocess.run(
        [node, str(tsc), "-p", str(tmp_path / "tsconfig.json")],
        check=False,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_tsc_check_catches_a_bad_dashboard(tmp_path: Path) -> None:
    """The schema check above is not vacuous: a wrong type fails it."""
    node, tsc = require_tsc()
    modules = DEPLOY / "grafana" / "schema-check" / "node_modules"
    (tmp_path / "bad.ts").write_text(
        "import type { Dashboard } from '@grafana/schema';\n"
        "export const d = { schemaVersion: '39', panels: [{ id: 1 }] } satisfies Dashboard;\n"
    )
    (tmp_path / "tsconfig.json").write_text(
        json.dumps(
            {
                "compilerOptions": {
                    "strict": True,
                    "noEmit": True,
                    "moduleResolution": "bundler",
                    "module": "ESNext",
                    "skipLibCheck": True,
                    "paths": {"@grafana/schema": [str(modules / "@grafana" / "schema")]},
                },
                "include": ["*.ts"],
            }
        )
    )
    result = subprocess.run(
        [node, str(tsc), "-p", str(tmp_path / "tsconfig.json")],
        check=False,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode != 0
    assert "bad.ts(2," in result.stdout and "error TS2322" in result.stdout


@pytest.mark.parametrize("path", FILES, ids=[p.stem for p in FILES])
def test_panels_are_complete(path: Path) -> None:
    dashboard = dashboards.load(path)
    ids = [panel["id"] for panel in dashboards.panels(dashboard)]
    assert len(ids) == len(set(ids)), f"duplicate panel ids in {path.name}"
    for panel in dashboards.panels(dashboard):
        if panel["type"] == "row":
            continue
        title = panel.get("title")
        assert title, f"panel {panel['id']} has no title"
        assert panel.get("description"), f"{title}: no description"
        assert panel.get("datasource", {}).get("uid") == DATASOURCE_UID, f"{title}: datasource"
        targets = panel.get("targets")
        assert targets, f"{title}: no targets"
        ref_ids = [t["refId"] for t in targets]
        assert len(ref_ids) == len(set(ref_ids)), f"{title}: duplicate refIds"
        for target in targets:
            assert target.get("datasource", {}).get("uid") == DATASOURCE_UID, title
            assert target.get("expr", "").strip(), f"{title}/{target['refId']}: empty expr"
        grid = panel["gridPos"]
        assert grid["x"] + grid["w"] <= 24, f"{title}: wider than the grid"


@pytest.mark.parametrize("path", FILES, ids=[p.stem for p in FILES])
def test_template_variables_resolve(path: Path) -> None:
    """Every $variable a panel uses is defined (or built in), and every variable defined is
    used; variables come from the provisioned datasource."""
    dashboard = dashboards.load(path)
    defined = {v.name for v in dashboards.variables(dashboard)}
    used: set[str] = set()
    for query in dashboards.queries():
        if query.dashboard == dashboard["uid"]:
            used |= dashboards.referenced_variables(query.expr)
    assert used - set(dashboards.BUILTINS) <= defined, f"undefined: {used - defined}"
    assert defined <= used, f"defined but unused: {defined - used}"
    for variable in dashboard["templating"]["list"]:
        assert variable["datasource"]["uid"] == DATASOURCE_UID


def test_issue_variables_are_offered() -> None:
    """Topic, group and broker variables, as the issue asks."""
    names = {v.name for p in FILES for v in dashboards.variables(dashboards.load(p))}
    assert {"topic", "group", "broker"} <= names


def test_provisioning_points_at_the_dashboards() -> None:
    provisioning = DEPLOY / "grafana" / "provisioning"
    datasource = (provisioning / "datasources" / "conveyor.yml").read_text()
    assert f"uid: {DATASOURCE_UID}" in datasource
    assert "type: prometheus" in datasource
    assert "type: file" in (provisioning / "dashboards" / "conveyor.yml").read_text()
    assert DASHBOARDS_DIR.is_dir()
