"""Building ``conveyor``'s argument parser imports no engine: every command (and every
CLI call the test suite makes, hundreds per run) pays for what ``cli/main.py`` imports
before its handler runs. The storage engine and the HTTP client are imported by the
handlers that use them (``cli/main.py``'s docstring)."""

from __future__ import annotations

import subprocess
import sys

HEAVY = ("conveyor.storage", "conveyor.bench.storage", "aiohttp", "conveyor.client")


def test_building_the_parser_imports_neither_storage_nor_the_http_client() -> None:
    code = (
        "import sys\n"
        "from conveyor.cli.main import build_parser\n"
        "build_parser()\n"
        f"print(sorted(m for m in {HEAVY!r} if m in sys.modules))\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=False
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "[]"
