"""A client-only install (``pip install conveyor-mq``, no extras) imports and runs what it
promises: the library and the CLI's client side import nothing of the server extra or the
CLI extra, and a command that needs an extra says which, in one line. Server-only modules
are blocked with a meta path finder in a fresh interpreter."""

from __future__ import annotations

import importlib.util
import json
import os
import re
import subprocess
import sys
import textwrap
import tomllib
from pathlib import Path

import pytest

from conveyor._extras import USER_EXTRAS, extra_of_module, import_name

TIMEOUT_S = 60
ROOT = Path(__file__).resolve().parents[2]
BLOCKER = textwrap.dedent(
    f"""
    import importlib.abc, sys

    BLOCKED = {sorted(extra_of_module())!r}

    class Block(importlib.abc.MetaPathFinder):
        def find_spec(self, name, path=None, target=None):
            if name.partition(".")[0] in BLOCKED:
                raise ModuleNotFoundError(f"No module named {{name!r}}", name=name)
            return None

    sys.meta_path.insert(0, Block())
    """
)


def run(code: str, *, blocked: tuple[str, ...] = ()) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("CONVEYOR_")}
    return subprocess.run(
        [sys.executable, "-c", BLOCKER + textwrap.dedent(code)],
        env=env,
        capture_output=True,
        text=True,
        timeout=TIMEOUT_S,
        check=False,
    )


def test_the_library_imports_no_extra() -> None:
    result = run(
        """
        import conveyor, conveyor.client, conveyor.settings
        from conveyor import Producer, Consumer, Admin, AsyncProducer, AsyncConsumer
        from conveyor.transport.client import SyncHTTP, authorization_from_env
        SyncHTTP(authorization="Bearer x")
        print(sorted(m for m in sys.modules if m.partition(".")[0] in BLOCKED))
        """
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "[]"


@pytest.mark.parametrize(
    "argv", [["--version"], ["--help"], ["config", "show", "--json"], ["topic", "--help"]]
)
def test_the_cli_runs_its_client_side_without_extras(argv: list[str]) -> None:
    result = run(f"from conveyor.cli.main import main; sys.exit(main({argv!r}))")
    assert result.returncode == 0, result.stderr
    if argv[0] == "config":
        assert {row["name"] for row in json.loads(result.stdout)} >= {"url", "token"}


@pytest.mark.parametrize(
    ("code", "prefix", "extra"),
    [
        (
            "from conveyor.cli.main import main; sys.exit(main(['coordinator']))",
            "conveyor",
            "server",
        ),
        (
            "from conveyor.broker.cli import main; sys.exit(main(['--id', '1']))",
            "conveyor broker",
            "server",
        ),
        (
            "from conveyor.cli.main import main; sys.exit(main(['config', 'show']))",
            "conveyor",
            "cli",
        ),
    ],
)
def test_a_command_without_its_extra_names_it_in_one_line(
    code: str, prefix: str, extra: str
) -> None:
    """Whichever of the extra's modules the command imports first (the coordinator's
    ``immutables`` once escaped as a traceback: the list was kept by hand)."""
    result = run(code)
    assert result.returncode == 1
    line = re.fullmatch(
        rf"{prefix}: error: (\w+) is not installed: this needs conveyor-mq's {extra} extra "
        rf"\(pip install 'conveyor-mq\[{extra}\]'\)",
        result.stderr.strip(),
    )
    assert line is not None, result.stderr
    assert extra_of_module()[line.group(1)] == extra


def test_every_package_of_the_user_extras_is_covered() -> None:
    """Each package pyproject.toml lists in an extra users install maps to a module that
    imports under that name (here, where every extra is installed), so its absence in a
    client-only install is named, never a traceback; none of them is a base dependency."""
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    base = {import_name(re.split(r"[<>=;\[ ]", r)[0]) for r in project["dependencies"]}
    for extra in USER_EXTRAS:
        for requirement in project["optional-dependencies"][extra]:
            module = import_name(re.split(r"[<>=;\[ ]", requirement)[0])
            assert extra_of_module()[module] == extra, requirement
            assert importlib.util.find_spec(module) is not None, requirement
            assert module not in base, requirement
