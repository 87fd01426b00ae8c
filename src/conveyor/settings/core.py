"""Settings: their definitions, and the one resolver every service and command uses.

Order, first found wins: the command-line flag, then the environment variable
(``CONVEYOR_*``; an empty value counts as unset), then the TOML file (``--config`` or
``CONVEYOR_CONFIG``), then the default. A secret also comes from the file its ``_FILE``
variable names (a mounted Docker or Kubernetes secret), and is never shown.

The TOML file holds settings by name (the flag without its dashes, ``-`` as ``_``): at the
top level for every service that has them, and in a ``[coordinator]``, ``[broker]`` or
``[client]`` table for one service, which wins over the top level::

    log_format = "json"
    [broker]
    id = 1
    fetch_memory_max_bytes = "64MiB"

A file is ours, so an unknown key in it is an error (naming the closest known one); the
environment is shared with everything else, so an unknown ``CONVEYOR_*`` variable only
gets a warning (:func:`unknown_env_warnings`).
"""

from __future__ import annotations

import difflib
import enum
import os
import tomllib
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final, Generic, TypeVar, cast

from conveyor.protocol.errors import ErrorCode, InvalidRequestError
from conveyor.settings.kinds import BadValueError, Kind

T = TypeVar("T")

ENV_PREFIX: Final = "CONVEYOR_"
SERVICES: Final = ("coordinator", "broker", "client")
CONFIG_ENV: Final = "CONVEYOR_CONFIG"


class SettingsError(InvalidRequestError):
    """A setting's value is invalid or missing, or the config file is unusable. Its
    message is one line naming the setting, the value, where it came from and what is
    accepted; commands exit with code 2 (bad usage) on it."""

    default_code = ErrorCode.INVALID_CONFIG


class Source(enum.Enum):
    FLAG = "flag"
    ENV = "env"
    FILE = "file"
    DEFAULT = "default"


class _Required:
    def __repr__(self) -> str:
        return "REQUIRED"


REQUIRED: Final = _Required()


@dataclass(frozen=True, slots=True)
class Setting(Generic[T]):
    """One setting of one or more services. ``name`` is its TOML key and the flag's
    name; ``env`` its variables, the first found wins (aliases after the main one)."""

    name: str
    kind: Kind[T]
    default: T | _Required
    help: str
    services: tuple[str, ...]
    flag: str | None
    env: tuple[str, ...]
    secret: bool = False
    # Shown in --help, docs and `config show` when the real default is computed later.
    default_text: str | None = None

    @property
    def required(self) -> bool:
        return isinstance(self.default, _Required)

    def describe_default(self) -> str:
        if self.default_text is not None:
            return self.default_text
        if isinstance(self.default, _Required):
            return "required"
        if self.default is None:
            return "unset"
        return self.kind.render(self.default)


def setting(
    name: str,
    kind: Kind[T],
    default: T | _Required,
    help: str,
    services: Sequence[str],
    *,
    flag: bool = True,
    env: Sequence[str] = (),
    secret: bool = False,
    default_text: str | None = None,
) -> Setting[T]:
    """A setting named ``name``: flag ``--name-with-dashes`` (unless ``flag=False``),
    variable ``CONVEYOR_NAME`` (then the aliases in ``env``)."""
    assert all(s in SERVICES for s in services), services
    return Setting(
        name=name,
        kind=kind,
        default=default,
        help=help,
        services=tuple(services),
        flag="--" + name.replace("_", "-") if flag else None,
        env=(ENV_PREFIX + name.upper(), *env),
        secret=secret,
        default_text=default_text,
    )


@dataclass(frozen=True, slots=True)
class Value:
    """A resolved setting: its value, where it came from and under which name."""

    setting: Setting[Any]
    value: Any
    source: Source
    origin: str  # "--auth", "CONVEYOR_AUTH", "CONVEYOR_TOKEN_FILE", "conveyor.toml [broker]"

    def shown(self) -> str:
        if self.value is None:
            return "unset" if not self.setting.required else "required (unset)"
        if self.setting.secret:
            return "(redacted)"
        return self.setting.kind.render(self.value)


@dataclass(frozen=True, slots=True)
class Settings:
    """The effective settings of one service, read with ``settings[SETTING]``."""

    service: str
    values: Mapping[str, Value]
    config_path: Path | None = None

    def __getitem__(self, item: Setting[T]) -> T:
        return cast(T, self.values[item.name].value)

    def get(self, item: Setting[T]) -> T | None:
        """``item``'s value, or None when this service does not have that setting."""
        found = self.values.get(item.name)
        return None if found is None or found.setting is not item else cast(T, found.value)

    def source(self, item: Setting[Any]) -> Source:
        return self.values[item.name].source

    def __iter__(self) -> Any:
        return iter(self.values.values())


@dataclass(frozen=True, slots=True)
class ConfigFile:
    """A parsed TOML config file: top-level settings and one table per service."""

    path: Path
    top: Mapping[str, Any] = field(default_factory=dict)
    tables: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)

    def lookup(self, service: str, name: str) -> tuple[Any, str] | None:
        table = self.tables.get(service, {})
        if name in table:
            return table[name], f"{self.path} [{service}]"
        if name in self.top:
            return self.top[name], str(self.path)
        return None


def load_config(path: Path | None, known: Mapping[str, set[str]]) -> ConfigFile | None:
    """Read and check the TOML file at ``path`` (None: no file). ``known`` maps each
    service to its setting names (with ``NAME_file`` for secrets)."""
    if path is None:
        return None
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise SettingsError(f"cannot read the config file {path}: {exc.strerror}") from None
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise SettingsError(f"the config file {path} is not valid TOML: {exc}") from None
    every = set().union(*known.values())
    top: dict[str, Any] = {}
    tables: dict[str, Mapping[str, Any]] = {}
    for key, value in data.items():
        if key in known and isinstance(value, dict):
            for inner in value:
                _check_key(path, f"[{key}] {inner}", inner, known[key])
            tables[key] = value
        else:
            _check_key(path, key, key, every | set(known))
            top[key] = value
    return ConfigFile(path, top, tables)


def _check_key(path: Path, where: str, key: str, known: Iterable[str]) -> None:
    if key not in known:
        raise SettingsError(f"unknown setting {where} in {path}{_did_you_mean(key, known)}")


def _did_you_mean(name: str, known: Iterable[str]) -> str:
    close = difflib.get_close_matches(name, sorted(known), n=1, cutoff=0.6)
    return f" (did you mean {close[0]}?)" if close else ""


def _bad(setting: Setting[Any], origin: str, raw: object, error: BadValueError) -> SettingsError:
    shown = "(redacted)" if setting.secret else repr(raw)
    return SettingsError(f"invalid {origin}={shown}: expected {error.accepted}")


def _parse(setting: Setting[T], origin: str, raw: object) -> T:
    try:
        return setting.kind.parse(raw)
    except BadValueError as error:
        raise _bad(setting, origin, raw, error) from None


def _read_secret_file(origin: str, path: str) -> str | None:
    try:
        with open(path, encoding="utf-8") as handle:
            return handle.read().strip() or None
    except OSError as exc:
        raise SettingsError(f"cannot read {origin}={path}: {exc.strerror}") from None


def _from_env(setting: Setting[Any], env: Mapping[str, str]) -> Value | None:
    for name in setting.env:
        raw = env.get(name)
        if raw:
            return Value(setting, _parse(setting, name, raw), Source.ENV, name)
        if setting.secret and env.get(name + "_FILE"):
            origin = name + "_FILE"
            secret = _read_secret_file(origin, env[origin])
            if secret is not None:
                return Value(setting, _parse(setting, origin, secret), Source.ENV, origin)
    return None


def _from_file(setting: Setting[Any], service: str, config: ConfigFile) -> Value | None:
    found = config.lookup(service, setting.name)
    if found is not None:
        raw, where = found
        return Value(
            setting, _parse(setting, f"{setting.name} in {where}", raw), Source.FILE, where
        )
    if setting.secret:
        found = config.lookup(service, setting.name + "_file")
        if found is not None:
            raw, where = found
            origin = f"{setting.name}_file in {where}"
            secret = _read_secret_file(origin, str(raw))
            if secret is not None:
                return Value(setting, _parse(setting, origin, secret), Source.FILE, where)
    return None


def resolve_one(
    setting: Setting[T],
    service: str,
    flags: Mapping[str, object],
    env: Mapping[str, str],
    config: ConfigFile | None,
    *,
    require: bool = True,
) -> Value:
    if setting.name in flags and flags[setting.name] is not None:
        raw = flags[setting.name]
        origin = setting.flag or setting.name
        value = raw if isinstance(raw, bool) else _parse(setting, origin, raw)
        return Value(setting, value, Source.FLAG, origin)
    found = _from_env(setting, env)
    if found is None and config is not None:
        found = _from_file(setting, service, config)
    if found is not None:
        return found
    if isinstance(setting.default, _Required):
        if require:
            names = " or ".join(filter(None, (setting.flag, *setting.env)))
            raise SettingsError(f"{setting.name} is required: set {names}")
        return Value(setting, None, Source.DEFAULT, "default")
    return Value(setting, setting.default, Source.DEFAULT, "default")


def resolve(
    settings: Sequence[Setting[Any]],
    service: str,
    *,
    flags: Mapping[str, object] | None = None,
    env: Mapping[str, str] | None = None,
    config: ConfigFile | None = None,
    require: bool = True,
) -> Settings:
    """The effective value of each of ``settings`` for ``service``. Raises
    :class:`SettingsError` for the first invalid or missing one."""
    env = os.environ if env is None else env
    values = {
        s.name: resolve_one(s, service, flags or {}, env, config, require=require) for s in settings
    }
    return Settings(service, values, None if config is None else config.path)


def config_path(flag: object, env: Mapping[str, str]) -> Path | None:
    """``--config``, else ``CONVEYOR_CONFIG``, else no file."""
    if isinstance(flag, str | Path) and str(flag):
        return Path(flag)
    raw = env.get(CONFIG_ENV)
    return Path(raw) if raw else None


def unknown_env_warnings(
    env: Mapping[str, str], known: Iterable[str], ignored_prefixes: tuple[str, ...] = ()
) -> list[str]:
    """One line per ``CONVEYOR_*`` variable in ``env`` that nothing reads, naming the
    closest known one: a typo in a variable would otherwise leave its default on."""
    known = set(known)
    suffixes = {name.removeprefix(ENV_PREFIX): name for name in known}

    def closest(name: str) -> str:
        # Compared without the common prefix, which would make every name look close.
        match = difflib.get_close_matches(name.removeprefix(ENV_PREFIX), sorted(suffixes), 1)
        return f" (did you mean {suffixes[match[0]]}?)" if match else ""

    return [
        f"unknown environment variable {name}{closest(name)}; it is ignored"
        for name in sorted(env)
        if name.startswith(ENV_PREFIX)
        and name not in known
        and not name.startswith(ignored_prefixes)
    ]
