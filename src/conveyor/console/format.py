"""Small display helpers, registered as Jinja filters. Pure."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from typing import Any, Final

NONE: Final = "\u2013"  # an en dash: no value

_UNITS: Final = ("B", "KiB", "MiB", "GiB", "TiB", "PiB")


def size(value: int | None) -> str:
    if value is None:
        return NONE
    amount = float(value)
    for unit in _UNITS:
        if abs(amount) < 1024 or unit == _UNITS[-1]:
            return f"{amount:.0f} {unit}" if unit == "B" else f"{amount:.1f} {unit}"
        amount /= 1024
    return f"{value} B"


def number(value: int | float | None) -> str:
    if value is None:
        return NONE
    if isinstance(value, float):
        return f"{value:,.1f}"
    return f"{value:,}"


def rate(value: float | None) -> str:
    if value is None:
        return NONE
    return f"{value:,.1f}/s" if value < 100 else f"{value:,.0f}/s"


def age(ms: int | None) -> str:
    if ms is None:
        return NONE
    if ms < 1000:
        return f"{ms} ms"
    seconds = ms / 1000
    if seconds < 120:
        return f"{seconds:.1f} s"
    if seconds < 7200:
        return f"{seconds / 60:.0f} min"
    return f"{seconds / 3600:.1f} h"


def when(ms: int | None) -> str:
    if ms is None:
        return NONE
    moment = datetime.fromtimestamp(ms / 1000, tz=UTC)
    return moment.isoformat(timespec="seconds").replace("+00:00", "Z")


def spark_points(values: Sequence[int], width: int = 120, height: int = 24) -> str:
    """SVG polyline points of ``values`` scaled into the box (0 at the bottom)."""
    if not values:
        return ""
    top = max(*values, 1)
    step = width / max(1, len(values) - 1)
    return " ".join(
        f"{i * step:.1f},{height - 1 - (v / top) * (height - 2):.1f}" for i, v in enumerate(values)
    )


FILTERS: Final[dict[str, Callable[..., Any]]] = {
    "size": size,
    "number": number,
    "rate": rate,
    "age": age,
    "when": when,
    "spark": spark_points,
}
