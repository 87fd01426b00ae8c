"""``conveyor config show``: the effective settings of a service or of the CLI itself,
and where each came from (flag, env, file, default), secrets redacted.

It is also the way to check a configuration before starting a service: an invalid value
fails here with the same one line (exit code 2) the service would print.
"""

from __future__ import annotations

import argparse
from typing import TYPE_CHECKING, Any

from conveyor.cli.common import EXIT_OK
from conveyor.cli.output import add_config_flag, add_json_flag, print_json, print_table

if TYPE_CHECKING:
    from conveyor.cli.common import Subparsers
    from conveyor.settings.core import Setting


def register(subparsers: Subparsers) -> None:
    config = subparsers.add_parser(
        "config",
        help="show the effective settings and where each comes from",
        description="Settings come from a flag, else a CONVEYOR_* variable, else the TOML "
        "file (--config or CONVEYOR_CONFIG), else the default (docs/deployment.md).",
    )
    actions = config.add_subparsers(title="actions", dest="config_action", metavar="ACTION")
    actions.required = True
    show = actions.add_parser(
        "show",
        help="print every setting's value and source (secrets redacted)",
        description="Print the settings a service would start with in this environment "
        "(flags of that service are not seen here), or those of the CLI itself; an invalid "
        "value is reported as the service would report it.",
    )
    show.add_argument(
        "--service",
        choices=("coordinator", "broker", "client"),
        default="client",
        help="whose settings (default: client, i.e. this CLI and the Python library)",
    )
    add_config_flag(show)
    add_json_flag(show)
    show.set_defaults(handler=_show)


def _show(args: argparse.Namespace) -> int:
    from conveyor.settings import client_flags, load
    from conveyor.settings.show import views

    # ``conveyor --config FILE config show`` as well as ``conveyor config show --config FILE``
    config = args.config or getattr(args, "config_file", None)
    # The CLI's own flags (--profile, --url, ...) are the client's first source.
    flags = client_flags() if args.service == "client" else {}
    if config is not None:
        flags["config"] = config
    settings = load(args.service, flags, require=False)
    rows = views(settings)
    if args.json:
        print_json(rows)
        return EXIT_OK
    print_table(
        f"{args.service} settings" + (f" ({settings.config_path})" if settings.config_path else ""),
        ["setting", "value", "source", "from"],
        [
            [row.name, _shown(row.value, value.setting), row.source, row.origin]
            for row, value in zip(rows, settings, strict=True)
        ],
    )
    return EXIT_OK


def _shown(value: object, setting: Setting[Any]) -> str:
    """A value, or for an unset one what its default then is (kafka_listen's listener on
    a port the OS picks, say), as --help and the docs say it."""
    return setting.describe_default() if value is None else _text(value)


def _text(value: object) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)
