"""What every command group shares: the registration types, argument types, exit codes."""

from __future__ import annotations

import argparse
from collections.abc import Callable
from typing import TYPE_CHECKING, Final, TypeAlias

if TYPE_CHECKING:
    Subparsers: TypeAlias = argparse._SubParsersAction[argparse.ArgumentParser]

EXIT_OK: Final = 0
EXIT_ERROR: Final = 1  # a ConveyorError or an OS error: one line on stderr
EXIT_USAGE: Final = 2  # argparse's own code for a bad command line
EXIT_INTERRUPTED: Final = 130  # 128 + SIGINT, as shells report it

# A command's handler gets the parsed arguments and returns the exit code. A module sets
# it with ``parser.set_defaults(handler=...)``; errors are raised, never printed here.
Handler: TypeAlias = Callable[[argparse.Namespace], int]


def positive_int(text: str) -> int:
    """An argparse ``type`` for counts and sizes: an integer >= 1."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not an integer") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"{value} is not >= 1")
    return value
