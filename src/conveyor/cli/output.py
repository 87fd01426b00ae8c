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
    """The client settings every command that talks to a cluster takes as flags (their
    definitions: ``conveyor.settings.catalog``, CLIENT)."""
    from conveyor.settings import catalog
    from conveyor.settings.flags import help_text

    for item in (catalog.URL, catalog.CA, catalog.TOKEN, catalog.USER, catalog.PASSWORD):
        assert item.flag is not None
        parser.add_argument(
            item.flag,
            dest=item.name,
            metavar=item.kind.metavar,
            action=_ClientFlag,
            default=None,
            help=help_text(item),
        )


def add_config_flag(parser: argparse.ArgumentParser, dest: str = "config") -> None:
    """``--config FILE``: the TOML settings file (``conveyor --config FILE COMMAND`` for
    every command, since ``topic create --config`` means a topic setting)."""
    from conveyor.settings import catalog
    from conveyor.settings.flags import help_text

    parser.add_argument(
        "--config",
        dest=dest,
        metavar="FILE",
        action=_ClientFlag,
        default=None,
        help=help_text(catalog.CONFIG),
    )


class _ClientFlag(argparse.Action):
    """A client flag (``--url``, ``--ca``, ``--token``, ``--user``, ``--password``,
    ``--config``) becomes the first source of that client setting for this process
    (``conveyor.settings.set_client_flag``): every client a command builds resolves its
    settings there (``TLSConfig.from_env``, ``transport.client.authorization_from_env``),
    so the flags reach them all without threading them through each command. It is also
    exported as its ``CONVEYOR_*`` variable for the processes a command starts."""

    def __call__(
        self,
        parser: argparse.ArgumentParser,
        namespace: argparse.Namespace,
        values: str | Sequence[Any] | None,
        option_string: str | None = None,
    ) -> None:
        import os

        from conveyor.settings import set_client_flag
        from conveyor.settings.core import ENV_PREFIX

        name = "config" if self.dest == "config_file" else self.dest
        set_client_flag(name, values)
        os.environ[ENV_PREFIX + name.upper()] = str(values)
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
