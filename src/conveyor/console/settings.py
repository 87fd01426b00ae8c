"""The console's settings: a plain value the coordinator's command line fills in
(``coordinator/cli.py``: ``--console``, ``--prometheus-url``, ``CONVEYOR_CONSOLE_*``)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final

SESSION_IDLE_MS_DEFAULT: Final = 30 * 60 * 1000
SESSION_LIFETIME_MS_DEFAULT: Final = 12 * 3600 * 1000
SESSIONS_MAX_DEFAULT: Final = 10_000
SCAN_MESSAGES_MAX_DEFAULT: Final = 10_000
POLL_INTERVAL_MS_DEFAULT: Final = 3_000


@dataclass(frozen=True, slots=True)
class ConsoleSettings:
    """``api_url``: where the console calls the coordinator's API (its own listener, over
    loopback); ``secure_cookies``: the listener serves HTTPS, so cookies are ``Secure``."""

    api_url: str
    secure_cookies: bool = False
    session_idle_ms: int = SESSION_IDLE_MS_DEFAULT
    session_lifetime_ms: int = SESSION_LIFETIME_MS_DEFAULT
    sessions_max: int = SESSIONS_MAX_DEFAULT
    # The message browser examines at most this many messages per page when filtering.
    scan_messages_max: int = SCAN_MESSAGES_MAX_DEFAULT
    # Live pages refresh at this interval (and only while the browser tab is visible).
    poll_interval_ms: int = POLL_INTERVAL_MS_DEFAULT
    prometheus_url: str | None = None  # firing alerts on the overview when set
    request_timeout_s: float = 10.0
