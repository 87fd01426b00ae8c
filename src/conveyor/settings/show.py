"""What ``conveyor config show`` prints: each effective setting, where it came from, and
no secret (a set secret shows as ``(redacted)``)."""

from __future__ import annotations

from typing import Any

import msgspec

from conveyor.settings.core import Settings, Value

REDACTED = "(redacted)"


class SettingView(msgspec.Struct, frozen=True):
    """One row of ``conveyor config show --json``."""

    name: str
    value: Any  # bool, int, str or None (unset); a set secret is "(redacted)"
    source: str  # "flag", "env", "file" or "default"
    origin: str  # the flag, the variable (or its _FILE twin), the file [table], "default"
    env: str
    flag: str | None


def _json_value(value: Value) -> Any:
    if value.value is None:
        return None
    if value.setting.secret:
        return REDACTED
    if isinstance(value.value, bool | int):
        return value.value
    return value.setting.kind.render(value.value)


def views(settings: Settings) -> list[SettingView]:
    return [
        SettingView(
            name=value.setting.name,
            value=_json_value(value),
            source=value.source.value,
            origin=value.origin,
            env=value.setting.env[0],
            flag=value.setting.flag,
        )
        for value in settings
    ]
