"""The listener limits every service shares, as command-line options with environment
fallbacks, and the one function that turns them into :class:`ConnectionLimits` and
:class:`AuthLimits` with their checks.

``--connections-max`` (``CONVEYOR_CONNECTIONS_MAX``), ``--connections-per-address-max``
(``CONVEYOR_CONNECTIONS_PER_ADDRESS_MAX``), ``--idle-timeout-ms``
(``CONVEYOR_IDLE_TIMEOUT_MS``), ``--auth-failures-per-address-max``
(``CONVEYOR_AUTH_FAILURES_PER_ADDRESS_MAX``), ``--auth-failures-per-principal-max``
(``CONVEYOR_AUTH_FAILURES_PER_PRINCIPAL_MAX``) and ``--auth-failure-window-ms``
(``CONVEYOR_AUTH_FAILURE_WINDOW_MS``).
"""

from __future__ import annotations

import argparse
import os

from conveyor.protocol.errors import InvalidRequestError
from conveyor.transport import authlimit, limits

_OPTIONS: tuple[tuple[str, int, str], ...] = (
    (
        "connections-max",
        limits.CONNECTIONS_MAX_DEFAULT,
        "open connections this listener accepts; more are answered 503 TOO_MANY_CONNECTIONS",
    ),
    (
        "connections-per-address-max",
        limits.CONNECTIONS_PER_ADDRESS_MAX_DEFAULT,
        "open connections from one client address",
    ),
    (
        "idle-timeout-ms",
        limits.IDLE_TIMEOUT_MS_DEFAULT,
        "close a connection with no request in progress for this long",
    ),
    (
        "auth-failures-per-address-max",
        authlimit.FAILURES_PER_ADDRESS_MAX_DEFAULT,
        "failed authentications from one client address per window before it is answered "
        "429 THROTTLED",
    ),
    (
        "auth-failures-per-principal-max",
        authlimit.FAILURES_PER_PRINCIPAL_MAX_DEFAULT,
        "failed password checks for one user per window before it is answered 429 THROTTLED",
    ),
    (
        "auth-failure-window-ms",
        authlimit.WINDOW_MS_DEFAULT,
        "the window of the two limits above (failures are forgotten at the same pace)",
    ),
)


def _env_name(option: str) -> str:
    return "CONVEYOR_" + option.upper().replace("-", "_")


def add_limit_arguments(parser: argparse.ArgumentParser) -> None:
    for option, default, text in _OPTIONS:
        parser.add_argument(
            f"--{option}",
            metavar="N" if not option.endswith("-ms") else "MS",
            type=int,
            default=os.environ.get(_env_name(option)) or str(default),
            help=f"{text} (env {_env_name(option)}; default %(default)s)",
        )


def _checked(args: argparse.Namespace) -> None:
    """Raise ``InvalidRequestError`` naming the option and its variable for a value < 1."""
    for option, _, _ in _OPTIONS:
        value = getattr(args, option.replace("-", "_"))
        if value < 1:
            raise InvalidRequestError(
                f"--{option} ({_env_name(option)}) must be an integer >= 1, not {value}"
            )


def limits_from_args(args: argparse.Namespace) -> limits.ConnectionLimits:
    _checked(args)
    return limits.ConnectionLimits(
        connections_max=args.connections_max,
        connections_per_address_max=args.connections_per_address_max,
        idle_timeout_ms=args.idle_timeout_ms,
    )


def auth_limits_from_args(args: argparse.Namespace) -> authlimit.AuthLimits:
    _checked(args)
    return authlimit.AuthLimits(
        failures_per_address_max=args.auth_failures_per_address_max,
        failures_per_principal_max=args.auth_failures_per_principal_max,
        window_ms=args.auth_failure_window_ms,
    )
