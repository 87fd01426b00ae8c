"""One typed settings layer for every service and command (docs/deployment.md).

Order: command-line flag, then ``CONVEYOR_*`` environment variable, then the TOML file
(``--config`` or ``CONVEYOR_CONFIG``), then the default. Definitions live in
:mod:`conveyor.settings.catalog`, value parsers in :mod:`conveyor.settings.kinds`, the
resolver in :mod:`conveyor.settings.core`. A service calls :func:`load` once at start; the
client library calls :func:`client_settings` when it builds an HTTP client.

Why a small resolver of our own (dataclasses, stdlib tomllib) rather than pydantic-settings:
importing pydantic-settings alone takes as long as the whole ``conveyor --help`` on this
machine kind (docs/deployment.md has the numbers), while this package imports in a few
milliseconds and still gives one parser per kind of value, typed access
(``settings[SESSION_TIMEOUT_MS]`` is an ``int`` to mypy) and one-line errors.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Any, Final, TypeVar, cast

from conveyor.settings import catalog
from conveyor.settings.core import (
    Setting,
    Settings,
    SettingsError,
    Source,
    Value,
    config_path,
    load_config,
    resolve,
    resolve_one,
    unknown_env_warnings,
)

T = TypeVar("T")

__all__ = [
    "Setting",
    "Settings",
    "SettingsError",
    "Source",
    "Value",
    "clear_client_flags",
    "client_flags",
    "client_settings",
    "env_warnings",
    "load",
    "read_before_file",
    "set_client_flag",
]


def load(
    service: str,
    flags: Mapping[str, object] | None = None,
    env: Mapping[str, str] | None = None,
    *,
    require: bool = True,
) -> Settings:
    """The effective settings of ``service`` ("coordinator", "broker" or "client") from
    its command-line ``flags`` (name -> raw value, None: not given), ``env`` (default: this
    process's environment) and the config file. Raises :class:`SettingsError`."""
    env = os.environ if env is None else env
    flags = flags or {}
    config = load_config(config_path(flags.get("config"), env), catalog.file_keys())
    return resolve(
        catalog.BY_SERVICE[service], service, flags=flags, env=env, config=config, require=require
    )


def read_before_file(
    item: Setting[T], flag: object = None, env: Mapping[str, str] | None = None
) -> T:
    """A client setting that chooses the settings file (``catalog.CHOOSE_THE_FILE``): its
    flag, else its variable, else its default (the file cannot say which file to read).
    Raises :class:`SettingsError` for an invalid value, as :func:`load` does."""
    env = os.environ if env is None else env
    found = resolve_one(item, "client", {item.name: flag}, env, None)
    return cast(T, found.value)


def env_warnings(env: Mapping[str, str] | None = None) -> list[str]:
    """Warnings for ``CONVEYOR_*`` variables nothing reads (with the closest known one)."""
    return unknown_env_warnings(
        os.environ if env is None else env,
        catalog.known_env(),
        catalog.NOT_SETTINGS_PREFIXES,
    )


# What the CLI's --url, --ca, --token, --user, --password and --config said: flags of the
# command, which the library's clients (built deep inside each command) then see first.
_CLIENT_FLAGS: Final[dict[str, object]] = {}


def set_client_flag(name: str, value: Any) -> None:
    _CLIENT_FLAGS[name] = value


def client_flags() -> dict[str, object]:
    """What the CLI's client flags said (``config show`` reports them as flags)."""
    return dict(_CLIENT_FLAGS)


def clear_client_flags() -> None:
    """Forget the flags of a previous command run in this process (``cli.main``)."""
    _CLIENT_FLAGS.clear()


def client_settings(env: Mapping[str, str] | None = None) -> Settings:
    """The client library's settings (``CONVEYOR_URL``, ``CONVEYOR_TOKEN``, ...), resolved
    again on each call so a changed environment is seen by the next client."""
    return load("client", _CLIENT_FLAGS, env)
