"""Output for people (rich tables) and for scripts (``--output json|yaml``), in one place.

Every command that prints data takes ``--output table|json|yaml`` (``--json`` is short for
``--output json``); ``cli.main`` reads the choice once (:func:`apply_output`), handlers
test ``args.json`` (structured output wanted) and call :func:`print_json`, which writes
the chosen format. YAML comes from PyYAML (the ``cli`` extra), block style, keys in the
order the wire types define them.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from typing import Any

import msgspec

OUTPUTS = ("table", "json", "yaml")
_format: list[str] = ["json"]  # what print_json writes (set by apply_output)


def add_json_flag(parser: argparse.ArgumentParser, *, table: str = "table") -> None:
    """``--output FORMAT`` and its shorthand ``--json``. ``table`` names the default
    human form (``lines`` for the console producer and consumer)."""
    parser.add_argument(
        "--output",
        choices=OUTPUTS,
        default=None,
        metavar="FORMAT",
        help=f"{table} (the default, for people), json or yaml (for scripts)",
    )
    parser.add_argument(
        "--json", action="store_true", default=False, help="the same as --output json"
    )


def apply_output(args: argparse.Namespace) -> None:
    """After parsing: ``args.json`` true for json and yaml, and print_json set to write
    the one chosen."""
    output = getattr(args, "output", None)
    if output is None:
        output = "json" if getattr(args, "json", False) else "table"
    elif getattr(args, "json", False) and output != "json":
        raise SystemExit(f"--json and --output {output} disagree")
    if hasattr(args, "json"):
        args.json = output in ("json", "yaml")
        args.output = output
    _format[0] = "yaml" if output == "yaml" else "json"


def add_url_flag(parser: argparse.ArgumentParser) -> None:
    """The client settings every command that talks to a cluster takes as flags (their
    definitions: ``conveyor.settings.catalog``, CLIENT); ``conveyor`` checks the URL
    before running the command (``cli/preflight.py``), unless the command's clients
    speak Kafka to ``--bootstrap-server`` alone."""
    parser.set_defaults(coordinator_preflight=True)
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
    # the Kafka tools' spelling too (kafka-topics.sh --bootstrap-server)
    parser.add_argument(
        "--bootstrap-server",
        "--bootstrap-servers",
        dest=catalog.BOOTSTRAP_SERVERS.name,
        metavar="HOST:PORT[,HOST:PORT...]",
        action=_ClientFlag,
        default=None,
        help=help_text(catalog.BOOTSTRAP_SERVERS),
    )
    parser.add_argument(
        "--transport",
        dest=catalog.TRANSPORT.name,
        choices=("http", "kafka"),
        action=_ClientFlag,
        default=None,
        help=help_text(catalog.TRANSPORT),
    )
    add_profile_flag(parser)


def add_profile_flag(parser: argparse.ArgumentParser) -> None:
    """``--profile NAME``: a named connection (``conveyor profile``, ``cli/profile.py``)."""
    from conveyor.settings import catalog
    from conveyor.settings.flags import help_text

    parser.add_argument(
        "--profile",
        default=argparse.SUPPRESS,
        metavar=catalog.PROFILE.kind.metavar,
        help=help_text(catalog.PROFILE),
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
    """Structs, lists and dicts as one JSON (or YAML, per ``--output``) document, with
    *every* field: the wire types leave out fields equal to their defaults (``alive:
    true``, ``lag: 0``, ``offline_partitions: 0``), but a script reading ``--json`` needs at
    least what the table shows, always under the same keys."""
    value = every_field(value)
    if _format[0] == "yaml":
        _write_yaml(msgspec.to_builtins(value), document=False)
        return
    sys.stdout.write(msgspec.json.encode(value).decode() + "\n")
    sys.stdout.flush()


def every_field(value: Any) -> Any:
    """``value`` as builtins, structs as dicts of all their fields (defaults included)."""
    if isinstance(value, msgspec.Struct):
        return {name: every_field(getattr(value, name)) for name in value.__struct_fields__}
    if isinstance(value, list | tuple):
        return [every_field(item) for item in value]
    if isinstance(value, dict):
        return {key: every_field(item) for key, item in value.items()}
    return value


def print_json_line(value: dict[str, Any]) -> None:
    """One record of a stream: a JSON line, or a YAML document (``---``) per record."""
    if _format[0] == "yaml":
        _write_yaml(value, document=True)
        return
    sys.stdout.write(json.dumps(value, separators=(",", ":")) + "\n")
    sys.stdout.flush()


def _write_yaml(value: Any, *, document: bool) -> None:
    import yaml

    text = yaml.safe_dump(
        value, sort_keys=False, allow_unicode=True, explicit_start=document, width=100
    )
    sys.stdout.write(text)
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


def print_note(text: str) -> None:
    """A line for the person, on stderr, so that stdout holds only the result (a token
    secret: ``TOKEN=$(conveyor token create ...)``)."""
    from rich.console import Console

    Console(highlight=False, stderr=True).print(text)
