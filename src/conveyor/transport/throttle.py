"""Rate-limited log lines: the same warning repeated every heartbeat, or once per refused
connection, is written once per interval with a count of what was held back.

:class:`Throttle` is the pure decision (a key, the time in ms -> write or hold back, and
how many were held back since the last one written); :class:`RepeatFilter` is the
``logging.Filter`` that applies it to every record of a logger or handler, keyed by the
logger, the level and the formatted message, so identical lines are throttled and
different ones are not::

    log.addFilter(RepeatFilter(interval_ms=30_000))
    log.warning("heartbeat failed: %s", code)    # the first of each code is written;
                                                 # repeats within 30 s are counted
    # the next one written after 30 s ends with " (12 identical messages suppressed)"

Only records at WARNING and above are throttled by default: DEBUG and INFO lines are
already chosen to be rare or to be off.
"""

from __future__ import annotations

import logging
import time
from collections import OrderedDict
from collections.abc import Callable, Hashable
from dataclasses import dataclass
from typing import Final

KEYS_MAX: Final = 1024  # distinct lines remembered; the oldest is forgotten first
INTERVAL_MS_DEFAULT: Final = 30_000


@dataclass(frozen=True, slots=True)
class Decision:
    emit: bool
    suppressed: int  # held back since the last one written (meaningful when emit)


class Throttle:
    """At most one event per key every ``interval_ms``; counts the ones held back.

    Pure: the caller passes the time. Memory: at most ``keys_max`` keys (least recently
    seen forgotten first; a forgotten key starts afresh, which can only write more)."""

    def __init__(self, interval_ms: int = INTERVAL_MS_DEFAULT, keys_max: int = KEYS_MAX) -> None:
        if interval_ms < 0 or keys_max < 1:
            raise ValueError("interval_ms must be >= 0 and keys_max >= 1")
        self.interval_ms = interval_ms
        self.keys_max = keys_max
        # key -> (time the last one was written, held back since)
        self._keys: OrderedDict[Hashable, tuple[int, int]] = OrderedDict()

    def decide(self, key: Hashable, now_ms: int) -> Decision:
        entry = self._keys.get(key)
        if entry is not None:
            self._keys.move_to_end(key)
            written_ms, held = entry
            if now_ms - written_ms < self.interval_ms:
                self._keys[key] = (written_ms, held + 1)
                return Decision(False, 0)
            self._keys[key] = (now_ms, 0)
            return Decision(True, held)
        self._keys[key] = (now_ms, 0)
        if len(self._keys) > self.keys_max:
            self._keys.popitem(last=False)
        return Decision(True, 0)


def _monotonic_ms() -> int:
    return time.monotonic_ns() // 1_000_000


class RepeatFilter(logging.Filter):
    """Throttles identical log records (see the module docstring). Thread-safe enough
    for logging: a lost update under a race only writes one line more or fewer."""

    def __init__(
        self,
        interval_ms: int = INTERVAL_MS_DEFAULT,
        level_min: int = logging.WARNING,
        clock_ms: Callable[[], int] | None = None,
    ) -> None:
        super().__init__()
        self.throttle = Throttle(interval_ms)
        self.level_min = level_min
        self._clock_ms = _monotonic_ms if clock_ms is None else clock_ms

    def filter(self, record: logging.LogRecord) -> bool:
        if record.levelno < self.level_min:
            return True
        # Keyed by the text as written: the arguments are often exception objects, a new
        # one each time (equal only to themselves), whose lines are identical all the same.
        try:
            key: Hashable = (record.name, record.levelno, record.getMessage())
        except (TypeError, ValueError):  # arguments that do not fit the template
            key = (record.name, record.levelno, str(record.msg))
        decision = self.throttle.decide(key, self._clock_ms())
        if decision.emit and decision.suppressed:
            # No "%" in the added text, so it formats with any kind of arguments.
            record.msg = f"{record.msg} ({decision.suppressed} identical messages suppressed)"
        return decision.emit


def throttled(logger: logging.Logger, interval_ms: int = INTERVAL_MS_DEFAULT) -> logging.Logger:
    """Add a :class:`RepeatFilter` to ``logger`` (once) and return it."""
    if not any(isinstance(f, RepeatFilter) for f in logger.filters):
        logger.addFilter(RepeatFilter(interval_ms))
    return logger
