"""Command-line flags generated from setting definitions (argparse).

Each flag's default is None, meaning "not given": the resolver then looks at the
environment, the file and the default, and parses a given value with the same parser as
any other source, so a bad flag, variable or file value fails with the same one line.
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from typing import Any

from conveyor.settings.core import Setting
from conveyor.settings.kinds import BOOL


def help_text(item: Setting[Any]) -> str:
    text = f"{item.help} (default: {item.describe_default()}; env {item.env[0]})"
    return text.replace("%", "%%")


def add_flags(parser: argparse.ArgumentParser, settings: Sequence[Setting[Any]]) -> None:
    for item in settings:
        if item.flag is None:
            continue
        if item.kind is BOOL:
            parser.add_argument(
                item.flag,
                dest=item.name,
                action=argparse.BooleanOptionalAction,
                default=None,
                help=help_text(item),
            )
        else:
            parser.add_argument(
                item.flag,
                dest=item.name,
                default=None,
                metavar=item.kind.metavar,
                help=help_text(item),
            )


def flags_from_args(
    args: argparse.Namespace, settings: Sequence[Setting[Any]]
) -> dict[str, object]:
    """The flags given on the command line (name -> raw value). ``conveyor --config FILE
    broker`` (the top-level flag, ``config_file``) counts as the service's ``--config``."""
    given: dict[str, object] = {
        item.name: getattr(args, item.name)
        for item in settings
        if item.flag is not None and getattr(args, item.name, None) is not None
    }
    if "config" not in given and getattr(args, "config_file", None) is not None:
        given["config"] = args.config_file
    return given
