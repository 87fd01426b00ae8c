"""The value parsers: one per kind of setting, each pure (text in, typed value out).

Every setting's value, whether it comes from a flag, an environment variable or the TOML
file, goes through its kind's :meth:`Kind.parse`, so ``CONVEYOR_AUTH=ture`` and
``--auth=ture`` and ``auth = "ture"`` fail the same way: :class:`BadValueError` carries what the
kind accepts, and the resolver (``core.py``) turns it into one line naming the setting, the
value and where it came from. Values from TOML may already be typed (``auth = true``,
``session_timeout_ms = 6000``); a kind accepts those where they make sense and never takes
a TOML boolean for a number (``bool`` is an ``int`` in Python).

Formats (the accepted texts are written out in each kind's ``accepted``):

* booleans: ``true/false``, ``yes/no``, ``on/off``, ``1/0``, any case;
* integers: ASCII decimal digits with an optional sign, within the kind's bounds;
* sizes: an integer number of bytes, or one with a unit: ``kb``, ``mb``, ``gb`` (powers
  of 1000) or ``kib``, ``mib``, ``gib`` (powers of 1024), any case (``32MiB``, ``64 kb``);
* durations, in milliseconds: an integer (milliseconds) or one with a unit ``ms``, ``s``,
  ``m``, ``h`` (``30s``, ``500ms``);
* URLs: ``http://`` or ``https://`` with a host and an optional valid port;
* ``HOST:PORT`` addresses (``:PORT`` for every interface; ``[v6]:PORT``);
* choices from a fixed set (log levels, log formats), and the broker's flush policy.
"""

from __future__ import annotations

import re
import string
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Generic, TypeVar
from urllib.parse import urlsplit

if TYPE_CHECKING:
    from conveyor.protocol.topics import FlushPolicy

T = TypeVar("T")


class BadValueError(ValueError):
    """A value its kind does not accept; ``accepted`` says what it would."""

    def __init__(self, accepted: str, reason: str = "") -> None:
        super().__init__(accepted)
        self.accepted = accepted
        self.reason = reason


@dataclass(frozen=True, slots=True)
class Kind(Generic[T]):
    """How one kind of value is read (``parse``), described (``accepted``) and shown
    (``render``). ``metavar`` names the value in ``--help``."""

    accepted: str
    parse_text: Callable[[str], T]
    metavar: str = "VALUE"
    render: Callable[[T], str] = str
    # TOML values of these types are taken as they are (after ``check``).
    native: tuple[type, ...] = ()
    check: Callable[[T], None] | None = None

    def parse(self, raw: object) -> T:
        """``raw`` is a str (flag, environment, TOML string) or a TOML value."""
        if isinstance(raw, str):
            return self.parse_text(raw)
        if self.native and isinstance(raw, self.native) and not _bool_as_number(raw, self):
            value: T = raw  # type: ignore[assignment]  # checked by isinstance just above
            if self.check is not None:
                self.check(value)
            return value
        raise BadValueError(self.accepted, f"a TOML {type(raw).__name__} is not one")


def _bool_as_number(raw: object, kind: Kind[Any]) -> bool:
    return isinstance(raw, bool) and bool not in kind.native


_TRUE = frozenset({"true", "yes", "on", "1"})
_FALSE = frozenset({"false", "no", "off", "0"})
BOOL_ACCEPTED = "a boolean (true/false, yes/no, on/off or 1/0)"


def _parse_bool(text: str) -> bool:
    folded = text.strip().lower()
    if folded in _TRUE:
        return True
    if folded in _FALSE:
        return False
    raise BadValueError(BOOL_ACCEPTED)


BOOL: Kind[bool] = Kind(
    BOOL_ACCEPTED, _parse_bool, "BOOL", lambda v: "true" if v else "false", (bool,)
)

_INTEGER = re.compile(r"[+-]?[0-9]+")


def _bounds_text(low: int | None, high: int | None, unit: str = "") -> str:
    if low is not None and high is not None:
        return f"between {low} and {high}{unit}"
    if low is not None:
        return f">= {low}{unit}"
    if high is not None:
        return f"<= {high}{unit}"
    return ""


def _in_bounds(value: int, low: int | None, high: int | None, accepted: str) -> int:
    if (low is not None and value < low) or (high is not None and value > high):
        raise BadValueError(accepted, "out of range")
    return value


def integer(low: int | None = None, high: int | None = None, metavar: str = "N") -> Kind[int]:
    accepted = f"an integer {_bounds_text(low, high)}".rstrip()

    def parse(text: str) -> int:
        text = text.strip()
        if not _INTEGER.fullmatch(text):
            raise BadValueError(accepted)
        return _in_bounds(int(text), low, high, accepted)

    def check(value: int) -> None:
        _in_bounds(value, low, high, accepted)

    return Kind(accepted, parse, metavar, str, (int,), check)


_SIZE = re.compile(r"([0-9]+)\s*([kmgt]i?b|b)?", re.IGNORECASE)
_SIZE_UNITS = {
    "b": 1,
    "kb": 1000,
    "mb": 1000**2,
    "gb": 1000**3,
    "tb": 1000**4,
    "kib": 1024,
    "mib": 1024**2,
    "gib": 1024**3,
    "tib": 1024**4,
}


def size(low: int | None = 1, high: int | None = None) -> Kind[int]:
    """Bytes: ``33554432``, ``32MiB``, ``64 kb``."""
    accepted = (
        f"a size in bytes {_bounds_text(low, high)}, optionally with a unit "
        "(kb, mb, gb: 1000s; kib, mib, gib: 1024s), e.g. 32MiB"
    )

    def parse(text: str) -> int:
        match = _SIZE.fullmatch(text.strip())
        if match is None:
            raise BadValueError(accepted)
        number, unit = match.groups()
        return _in_bounds(int(number) * _SIZE_UNITS[(unit or "b").lower()], low, high, accepted)

    def check(value: int) -> None:
        _in_bounds(value, low, high, accepted)

    return Kind(accepted, parse, "BYTES", str, (int,), check)


_DURATION = re.compile(r"([0-9]+)\s*(ms|s|m|h)?", re.IGNORECASE)
_DURATION_MS = {"ms": 1, "s": 1000, "m": 60_000, "h": 3_600_000}


def duration_ms(low: int | None = 1, high: int | None = None) -> Kind[int]:
    """Milliseconds: ``30000``, ``30s``, ``500ms``, ``2m``, ``1h``."""
    accepted = (
        f"a duration in milliseconds {_bounds_text(low, high, ' ms')}: an integer, or one "
        "with a unit ms, s, m or h (e.g. 30s)"
    )

    def parse(text: str) -> int:
        match = _DURATION.fullmatch(text.strip())
        if match is None:
            raise BadValueError(accepted)
        number, unit = match.groups()
        return _in_bounds(int(number) * _DURATION_MS[(unit or "ms").lower()], low, high, accepted)

    def check(value: int) -> None:
        _in_bounds(value, low, high, accepted)

    return Kind(accepted, parse, "MS", str, (int,), check)


URL_ACCEPTED = "an http:// or https:// URL with a host, e.g. https://coordinator:7700"


def _parse_url(text: str) -> str:
    text = text.strip()
    try:
        parts = urlsplit(text)
        port_ok = parts.port is None or parts.port > 0  # .port raises for a bad one
    except ValueError:
        raise BadValueError(URL_ACCEPTED) from None
    if (
        parts.scheme.lower() not in ("http", "https")
        or not parts.hostname
        or not port_ok
        or parts.query
        or parts.fragment
        or _has_space(text)
    ):
        raise BadValueError(URL_ACCEPTED)
    return text.rstrip("/")


def _has_space(text: str) -> bool:
    return any(c in string.whitespace for c in text) or not text.isprintable()


URL: Kind[str] = Kind(URL_ACCEPTED, _parse_url, "URL")

URL_LIST_ACCEPTED = URL_ACCEPTED + ", or several comma-separated"


def _parse_url_list(text: str) -> str:
    urls = [part for part in (p.strip() for p in text.split(",")) if part]
    if not urls:
        raise BadValueError(URL_LIST_ACCEPTED)
    try:
        parsed = [_parse_url(url) for url in urls]
    except BadValueError:
        raise BadValueError(URL_LIST_ACCEPTED) from None
    return ",".join(dict.fromkeys(parsed))


URL_LIST: Kind[str] = Kind(URL_LIST_ACCEPTED, _parse_url_list, "URL[,URL...]")

STORE_ACCEPTED = "sqlite, sqlite:PATH, or etcd://HOST:PORT[,HOST:PORT...] (etcds:// for TLS)"


def _parse_store(text: str) -> str:
    text = text.strip()
    if text == "sqlite" or (text.startswith("sqlite:") and len(text) > len("sqlite:")):
        return text
    if text.startswith(("etcd://", "etcds://")):
        members = text.split("://", 1)[1].split(",")
        for member in members:
            host, _, port = member.strip().rpartition(":")
            if not host or not port.isdigit() or not 0 < int(port) < 65536:
                raise BadValueError(STORE_ACCEPTED)
        return text
    raise BadValueError(STORE_ACCEPTED)


STORE: Kind[str] = Kind(STORE_ACCEPTED, _parse_store, "STORE")

HOST_PORT_ACCEPTED = "HOST:PORT with a port from 0 to 65535 (:PORT for every interface)"
_HOST = re.compile(r"\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9._:-]*")


def _parse_host_port(text: str) -> str:
    text = text.strip()
    host, colon, port = text.rpartition(":")
    if not colon or not port.isascii() or not port.isdigit() or int(port) > 65535:
        raise BadValueError(HOST_PORT_ACCEPTED)
    if not _HOST.fullmatch(host):
        raise BadValueError(HOST_PORT_ACCEPTED)
    return text


HOST_PORT: Kind[str] = Kind(HOST_PORT_ACCEPTED, _parse_host_port, "HOST:PORT")

OFF = "off"  # a listener that is on by default, turned off
LISTEN_OR_OFF_ACCEPTED = (
    "HOST:PORT with a port from 0 to 65535 (:PORT for every interface; 0: one the OS picks), "
    "or off (no listener)"
)


def _parse_listen_or_off(text: str) -> str:
    if text.strip().lower() == OFF:
        return OFF
    try:
        return _parse_host_port(text)
    except BadValueError:
        raise BadValueError(LISTEN_OR_OFF_ACCEPTED) from None


LISTEN_OR_OFF: Kind[str] = Kind(LISTEN_OR_OFF_ACCEPTED, _parse_listen_or_off, "HOST:PORT|off")

ADDRESS_ACCEPTED = "HOST:PORT with a host and a port from 1 to 65535, e.g. broker-1.example:9092"


def _parse_address(text: str) -> str:
    host, colon, port = text.strip().rpartition(":")
    if not colon or not host or not port.isascii() or not port.isdigit():
        raise BadValueError(ADDRESS_ACCEPTED)
    if not 0 < int(port) < 65536 or not _HOST.fullmatch(host):
        raise BadValueError(ADDRESS_ACCEPTED)
    return text.strip()


# an address others connect to: a port the OS would pick (0) or no host means nothing there
ADDRESS: Kind[str] = Kind(ADDRESS_ACCEPTED, _parse_address, "HOST:PORT")


def choice(*choices: str, upper: bool = False) -> Kind[str]:
    """One of ``choices``, any case (stored upper- or lower-case)."""
    accepted = "one of " + ", ".join(choices)

    def parse(text: str) -> str:
        folded = text.strip().upper() if upper else text.strip().lower()
        if folded not in choices:
            raise BadValueError(accepted)
        return folded

    return Kind(accepted, parse, "{" + ",".join(choices) + "}")


def _parse_text(text: str) -> str:
    if not text or _has_space(text.strip()) or text != text.strip():
        raise BadValueError("a non-empty text without spaces")
    return text


TEXT: Kind[str] = Kind("a non-empty text without spaces", _parse_text, "TEXT")


def _parse_secret(text: str) -> str:
    if not text:
        raise BadValueError("a non-empty text")
    return text


SECRET: Kind[str] = Kind("a non-empty text", _parse_secret, "SECRET")


def _parse_path(text: str) -> Path:
    if not text.strip() or "\0" in text:
        raise BadValueError("a file or directory path")
    return Path(text)


PATH: Kind[Path] = Kind("a file or directory path", _parse_path, "PATH")
FILE: Kind[Path] = Kind("a file path", _parse_path, "FILE")

PROFILE_NAME_ACCEPTED = "a profile name: 1-64 letters, digits, '.', '_' or '-' (not 'current')"
_PROFILE_NAME = re.compile(r"[A-Za-z0-9._-]{1,64}")


def _parse_profile_name(text: str) -> str:
    # "current" is the file naming the default profile (cli/profile.py), not a profile.
    if not _PROFILE_NAME.fullmatch(text) or text == "current":
        raise BadValueError(PROFILE_NAME_ACCEPTED)
    return text


PROFILE_NAME: Kind[str] = Kind(PROFILE_NAME_ACCEPTED, _parse_profile_name, "NAME")

FLUSH_ACCEPTED = "always, never, interval (every 100 ms) or interval:MS"


def _parse_flush(text: str) -> FlushPolicy:
    # The one grammar (protocol.topics.FlushPolicy.parse) the coordinator also checks.
    from conveyor.protocol.errors import ConveyorError
    from conveyor.protocol.topics import FlushPolicy

    try:
        return FlushPolicy.parse(text)
    except ConveyorError:
        raise BadValueError(FLUSH_ACCEPTED) from None


def _render_flush(policy: FlushPolicy) -> str:
    return policy.mode if policy.mode != "interval" else f"interval:{policy.interval_ms}"


FLUSH: Kind[FlushPolicy] = Kind(FLUSH_ACCEPTED, _parse_flush, "POLICY", _render_flush)


def optional(kind: Kind[T]) -> Kind[T | None]:
    """``kind``, or None (unset) for a setting with no default value."""

    def render(value: T | None) -> str:
        return "unset" if value is None else kind.render(value)

    def check(value: T | None) -> None:
        if value is not None and kind.check is not None:
            kind.check(value)

    return Kind(kind.accepted, kind.parse_text, kind.metavar, render, kind.native, check)
