"""Output for people (rich tables) and for scripts (``--json``), in one place."""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from typing import Any

import msgspec


def add_json_flag(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--json", action="store_true", help="print JSON for scripts")


def add_url_flag(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--url",
        metavar="URL",
        default=None,
        help="coordinator URL (default: $CONVEYOR_URL or http://127.0.0.1:7700)",
    )
    for flag, env, text in (
        ("--ca", "CONVEYOR_CA", "CA certificate to verify an https:// cluster against"),
        ("--token", "CONVEYOR_TOKEN", "API token"),
        ("--user", "CONVEYOR_USER", "user name (with --password)"),
        ("--password", "CONVEYOR_PASSWORD", "password (prefer the variable: argv is visible)"),
    ):
        parser.add_argument(flag, action=_ExportEnv, default=None, help=f"{text} (default: ${env})")


_ENV_OF_FLAG = {
    "ca": "CONVEYOR_CA",
    "token": "CONVEYOR_TOKEN",
    "user": "CONVEYOR_USER",
    "password": "CONVEYOR_PASSWORD",
}


class _ExportEnv(argparse.Action):
    """``--ca``, ``--token``, ``--user`` and ``--password`` set their ``CONVEYOR_*``
    variable for this process: every client a command builds reads its TLS settings and
    credentials from the environment (``TLSConfig.from_env``,
    ``transport.client.authorization_from_env``), so the flags reach them all without
    threading them through each command."""

    def __call__(
        self,
        parser: argparse.ArgumentParser,
        namespace: argparse.Namespace,
        values: str | Sequence[Any] | None,
        option_string: str | None = None,
    ) -> None:
        import os

        os.environ[_ENV_OF_FLAG[self.dest]] = str(values)
        setattr(namespace, self.dest, values)


def print_json(value: Any) -> None:
    """Structs, lists and dicts as one JSON document on stdout."""
    sys.stdout.write(msgspec.json.encode(value).decode() + "\n")
    sys.stdout.flush()


def print_json_line(value: dict[str, Any]) -> None:
    sys.stdout.write(json.dumps(value, separators=(",", ":")) + "\n")
    sys.stdout.flush()


def print_table(title: str | None, columns: Sequence[str], rows: Sequence[Sequence[Any]]) -> None:
    from rich.console import Console
    from rich.table import Table

    table = Table(title=title, title_justify="left")
    for column in columns:
        table.add_column(column)
    for row in rows:
        table.add_row(*("-" if cell is None else str(cell) for cell in row))
    Console().print(table)


def print_line(text: str) -> None:
    from rich.console import Console

    Console(highlight=False).print(text)
