"""docs/deployment.md's table is the catalogue's, and every CONVEYOR_* variable the docs,
the compose file, the image and the manifests mention is one something reads."""

from __future__ import annotations

import re
from pathlib import Path

from conveyor.settings import catalog
from conveyor.settings.docs import rewrite

ROOT = Path(__file__).resolve().parents[3]
# The docs' own example of a typo that gets a warning.
TYPO_EXAMPLES = {"CONVEYOR_SESION_TIMEOUT_MS"}
VARIABLE = re.compile(r"\bCONVEYOR_[A-Z0-9_]*[A-Z0-9]\b")


def test_the_deployment_table_is_generated_from_the_catalogue() -> None:
    text = (ROOT / "docs" / "deployment.md").read_text()
    assert rewrite(text) == text, "run: python -m conveyor.settings.docs docs/deployment.md"


def test_every_variable_mentioned_is_known() -> None:
    files = [
        ROOT / "README.md",
        ROOT / "Dockerfile",
        ROOT / "docker-compose.yml",
        *ROOT.glob("docs/*.md"),
        *ROOT.glob("deploy/**/*.y*ml"),
    ]
    unknown = {
        f"{path.relative_to(ROOT)}: {name}"
        for path in files
        for name in VARIABLE.findall(path.read_text())
        if not catalog.is_known_env(name) and name not in TYPO_EXAMPLES
    }
    assert not unknown
