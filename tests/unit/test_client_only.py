"""A client-only install (``pip install conveyor-mq``, no extras) imports and runs what it
promises: the library and the CLI's client side import nothing of the server extra or the
CLI extra, and a command that needs an extra says which, in one line. Server-only modules
are blocked with a meta path finder in a fresh interpreter."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap

import pytest

from conveyor._extras import EXTRA_OF_MODULE

TIMEOUT_S = 60
BLOCKER = textwrap.dedent(
    f"""
    import importlib.abc, sys

    BLOCKED = {sorted(EXTRA_OF_MODULE)!r}

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
    ("code", "line"),
    [
        (
            "from conveyor.cli.main import main; sys.exit(main(['coordinator']))",
            # the coordinator reads Kafka groups' embedded protocol (kafka-python) first
            "conveyor: error: kafka is not installed: this needs conveyor-mq's "
            "server extra (pip install 'conveyor-mq[server]')",
        ),
        (
            "from conveyor.broker.cli import main; sys.exit(main(['--id', '1']))",
            "conveyor broker: error: prometheus_client is not installed: this needs "
            "conveyor-mq's server extra (pip install 'conveyor-mq[server]')",
        ),
        (
            "from conveyor.cli.main import main; sys.exit(main(['config', 'show']))",
            "conveyor: error: rich is not installed: this needs conveyor-mq's cli extra "
            "(pip install 'conveyor-mq[cli]')",
        ),
    ],
)
def test_a_command_without_its_extra_names_it_in_one_line(code: str, line: str) -> None:
    result = run(code)
    assert result.returncode == 1
    assert result.stderr.splitlines() == [line]
