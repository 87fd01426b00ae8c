"""The listener limits every service shares (defined in ``conveyor.settings.catalog``:
``connections_max``, ``connections_per_address_max``, ``idle_timeout_ms``,
``auth_failures_per_address_max``, ``auth_failures_per_principal_max``,
``auth_failure_window_ms``), turned into :class:`ConnectionLimits` and
:class:`AuthLimits`. Their bounds (integers >= 1) are checked by the settings layer."""

from __future__ import annotations

from conveyor.settings import Settings, catalog
from conveyor.transport import authlimit, limits


def limits_from_settings(settings: Settings) -> limits.ConnectionLimits:
    return limits.ConnectionLimits(
        connections_max=settings[catalog.CONNECTIONS_MAX],
        connections_per_address_max=settings[catalog.CONNECTIONS_PER_ADDRESS_MAX],
        idle_timeout_ms=settings[catalog.IDLE_TIMEOUT_MS],
    )


def auth_limits_from_settings(settings: Settings) -> authlimit.AuthLimits:
    return authlimit.AuthLimits(
        failures_per_address_max=settings[catalog.AUTH_FAILURES_PER_ADDRESS_MAX],
        failures_per_principal_max=settings[catalog.AUTH_FAILURES_PER_PRINCIPAL_MAX],
        window_ms=settings[catalog.AUTH_FAILURE_WINDOW_MS],
    )
