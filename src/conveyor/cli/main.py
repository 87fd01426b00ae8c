"""Entry point of the ``conveyor`` command: stdlib argparse, one subcommand per group.

Adding a command group: write ``conveyor/cli/<group>.py`` with a function
``register(subparsers: Subparsers) -> None`` that adds its parser (and its own
sub-subparsers if it is a group), setting ``handler`` on each leaf with
``parser.set_defaults(handler=...)``; then list the module in :data:`COMMAND_GROUPS`. A
handler returns the exit code and raises :class:`ConveyorError` for operating errors:
:func:`main` turns those into one line on stderr and exit code 1. Modules import heavy
dependencies (rich, aiohttp, the storage engine) inside their handlers, so that
``conveyor --help`` stays fast.

Exit codes: 0 success, 1 error (one line on stderr), 2 bad usage (including an invalid
setting from a flag, a ``CONVEYOR_*`` variable or the config file), 130 interrupted.
"""

from __future__ import annotations

import argparse
import os
import sys
from typing import TYPE_CHECKING, Final, NoReturn, Protocol

from conveyor import __version__
from conveyor._extras import missing_extra
from conveyor.cli import (
    bench,
    certs,
    chaos,
    clients,
    cluster,
    completion,
    config,
    dev,
    groups,
    profile,
    queue,
    security,
    services,
    topic,
)
from conveyor.cli.common import EXIT_ERROR, EXIT_INTERRUPTED, EXIT_OK, EXIT_USAGE, Handler
from conveyor.cli.output import add_config_flag, add_profile_flag, apply_output
from conveyor.cli.profile import apply_profile
from conveyor.protocol.errors import ConveyorError
from conveyor.settings.core import SettingsError

if TYPE_CHECKING:
    from conveyor.cli.common import Subparsers


class CommandGroup(Protocol):
    """What a command module provides (modules satisfy this protocol structurally)."""

    def register(self, subparsers: Subparsers) -> None: ...


# In the order ``conveyor --help`` lists them.
COMMAND_GROUPS: Final[tuple[CommandGroup, ...]] = (
    dev,
    services,
    topic,
    clients,
    groups,
    queue,
    cluster,
    bench,
    chaos,
    certs,
    security,
    config,
    profile,
    completion,
)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="conveyor",
        description="Conveyor: a partitioned, replicated message queue.",
        epilog="Exit codes: 0 success, 1 error, 2 bad usage. "
        "Run 'conveyor COMMAND --help' for a command's options.",
    )
    parser.add_argument("--version", action="version", version=f"conveyor {__version__}")
    add_config_flag(parser, dest="config_file")
    add_profile_flag(parser)
    subparsers = parser.add_subparsers(
        title="commands", dest="command", metavar="COMMAND", required=True
    )
    for group in COMMAND_GROUPS:
        group.register(subparsers)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Run the command line ``argv`` (default: ``sys.argv[1:]``); returns the exit code."""
    from conveyor.settings import clear_client_flags

    clear_client_flags()
    exported = {k: v for k, v in os.environ.items() if k.startswith("CONVEYOR_")}
    try:
        return _run(argv)
    finally:
        # A command's flags (and the CONVEYOR_* variables they export for the processes it
        # starts) are for that command: a caller that runs main() in-process (tests,
        # embedding) must not have its later clients read them.
        clear_client_flags()
        for name in [k for k in os.environ if k.startswith("CONVEYOR_")]:
            if name not in exported:
                del os.environ[name]
        os.environ.update(exported)


def command() -> NoReturn:
    """The ``conveyor`` executable and ``python -m conveyor``: :func:`main`, then the exit
    without the last garbage collection (``conveyor/_process.py``). In-process callers
    (tests, embedding) call :func:`main`."""
    from conveyor._process import exit_without_last_collection

    exit_without_last_collection(main())


def _run(argv: list[str] | None) -> int:
    parser = build_parser()
    try:
        args, extras = parser.parse_known_args(argv)
        _take_trailing_values(parser, args, extras)
        apply_output(args)
    except SystemExit as exc:  # argparse exits by itself for --help, --version and usage
        return _exit_code(exc)
    handler: Handler = args.handler
    if not _runs_a_service(args):  # a service logs the warnings itself, once
        _warn_unknown_env()
    try:
        apply_profile(args)
        if getattr(args, "data_path", False):  # produce/consume: Kafka only, said first
            from conveyor.client.transport_choice import client_transport, data_transport

            data_transport(client_transport(None, None)[0])
        if getattr(args, "coordinator_preflight", False):
            from conveyor.cli.preflight import check_coordinator, needs_coordinator

            if needs_coordinator():
                check_coordinator(args.url)
        return handler(args)
    except SettingsError as exc:  # a bad flag, variable or config file value: bad usage
        _print_error(exc.message)
        return EXIT_USAGE
    except ConveyorError as exc:
        _print_error(f"{exc.message} ({exc.code.name})")
    except ModuleNotFoundError as exc:  # a client-only install running a server command
        message = missing_extra(exc)
        if message is None:
            raise
        _print_error(message)
    except OSError as exc:
        _print_error(str(exc))
    except KeyboardInterrupt:
        _print_error("interrupted")
        return EXIT_INTERRUPTED
    return EXIT_ERROR


def _take_trailing_values(
    parser: argparse.ArgumentParser, args: argparse.Namespace, extras: list[str]
) -> None:
    """argparse cannot take positionals after an option (``produce T --key k v1 v2``); a
    command that sets ``trailing_values`` to an attribute name receives them there."""
    if not extras:
        return
    dest = getattr(args, "trailing_values", None)
    if dest is None or any(extra.startswith("-") for extra in extras):
        parser.error(f"unrecognized arguments: {' '.join(extras)}")
    getattr(args, dest).extend(extras)


def _runs_a_service(args: argparse.Namespace) -> bool:
    return args.command in ("coordinator", "broker") and not getattr(args, "broker_action", None)


def _warn_unknown_env() -> None:
    """A ``CONVEYOR_*`` variable nothing reads is most likely a typo of one that is."""
    from conveyor.settings import env_warnings

    for warning in env_warnings():
        print(f"conveyor: warning: {warning}", file=sys.stderr)


def _exit_code(exc: SystemExit) -> int:
    if exc.code is None:
        return EXIT_OK
    if isinstance(exc.code, int):
        return exc.code
    print(exc.code, file=sys.stderr)
    return EXIT_USAGE


def _print_error(message: str) -> None:
    one_line = " ".join(message.split())
    print(f"conveyor: error: {one_line}", file=sys.stderr)
