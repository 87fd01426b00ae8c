"""Password guessing: a limit on failed authentications per principal and per client
address. A pure policy: the caller passes the time; no I/O.

Each key (a user name, a client address) has a leaky bucket of failures: every failed
password check adds one, and the bucket drains at ``max / window_ms``. While a bucket
holds ``max`` failures, authentications for that key are refused unchecked (HTTP 429
``THROTTLED``, with ``retry_after_ms``) until it has drained below ``max``: a burst of
``max`` failures, then one more guess every ``window_ms / max``. With the defaults (10
per user and 30 per address, per minute) a guesser gets one try every 6 s per user name
and every 2 s per address, against the 10^14 passwords of 8 random characters.

Use from any listener (HTTP Basic in ``transport/auth.py``, the Kafka listener's SASL
PLAIN)::

    limiter = AuthFailureLimiter(AuthLimits())
    throttled = limiter.check(address, user, now_ms)   # before checking the password
    if throttled is not None:
        ...  # refuse: throttled.retry_after_ms, throttled.scope
    elif not password_ok:
        for newly in limiter.failed(address, user, now_ms):
            log.warning(...)  # the key just became throttled: one line per key per window

What is counted: failed password checks, under both the user name given (whether or not
the user exists, so the answer does not reveal which names exist) and the client address.
A successful authentication does not empty a bucket (else a guesser could interleave its
own valid logins). Tokens are not counted: they are 256 random bits, so guessing one is
hopeless, and a service retrying with a revoked token should not lock its host's users
out (their failures still show in ``conveyor_auth_failures_total{scheme="bearer"}``).

The trade-off, as with every lockout: someone guessing a user's password from many
addresses also delays that user's own logins (a 429 with a retry delay, not a lock: the
user gets in as soon as the bucket drains; tokens are unaffected). Limits are per
process: a cluster of N services allows N times the rate.
"""

from __future__ import annotations

import math
from collections import OrderedDict
from dataclasses import dataclass
from typing import Final, Literal

FAILURES_PER_ADDRESS_MAX_DEFAULT: Final = 30
FAILURES_PER_PRINCIPAL_MAX_DEFAULT: Final = 10
WINDOW_MS_DEFAULT: Final = 60_000
KEYS_MAX: Final = 100_000  # per scope; the least recently failed key is forgotten first

Scope = Literal["principal", "address"]


@dataclass(frozen=True, slots=True)
class AuthLimits:
    failures_per_address_max: int = FAILURES_PER_ADDRESS_MAX_DEFAULT
    failures_per_principal_max: int = FAILURES_PER_PRINCIPAL_MAX_DEFAULT
    window_ms: int = WINDOW_MS_DEFAULT

    def __post_init__(self) -> None:
        for name in ("failures_per_address_max", "failures_per_principal_max", "window_ms"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, not {getattr(self, name)}")


@dataclass(frozen=True, slots=True)
class Throttled:
    scope: Scope
    key: str
    retry_after_ms: int
    failures_max: int
    window_ms: int

    @property
    def message(self) -> str:
        what = f"user {self.key!r}" if self.scope == "principal" else f"client {self.key}"
        return (
            f"too many failed authentications for {what} (at most {self.failures_max} per "
            f"{self.window_ms} ms): retry in {self.retry_after_ms} ms"
        )


class _Buckets:
    """Leaky buckets of one scope: key -> (level at ``at_ms``, ``at_ms``)."""

    def __init__(self, scope: Scope, failures_max: int, window_ms: int, keys_max: int) -> None:
        self.scope: Scope = scope
        self.max = failures_max
        self.window_ms = window_ms
        self.keys_max = keys_max
        self.drain_per_ms = failures_max / window_ms
        self._levels: OrderedDict[str, tuple[float, int]] = OrderedDict()

    def level(self, key: str, now_ms: int) -> float:
        entry = self._levels.get(key)
        if entry is None:
            return 0.0
        level, at_ms = entry
        return max(0.0, level - max(0, now_ms - at_ms) * self.drain_per_ms)

    def throttled(self, key: str, now_ms: int) -> Throttled | None:
        # Refused while the next failure would exceed the limit: at most ``max`` tries
        # with a full bucket, then one every window/max (a tiny epsilon absorbs rounding).
        excess = self.level(key, now_ms) - (self.max - 1)
        if excess <= 1e-9:
            return None
        retry_ms = max(1, math.ceil(excess / self.drain_per_ms))
        return Throttled(self.scope, key, retry_ms, self.max, self.window_ms)

    def add(self, key: str, now_ms: int) -> bool:
        """One failure; True when the key has just become throttled."""
        was = self.throttled(key, now_ms) is not None
        self._levels[key] = (self.level(key, now_ms) + 1.0, now_ms)
        self._levels.move_to_end(key)
        while len(self._levels) > self.keys_max:
            self._levels.popitem(last=False)
        return not was and self.throttled(key, now_ms) is not None

    def __len__(self) -> int:
        return len(self._levels)


class AuthFailureLimiter:
    """See the module docstring. Not thread-safe: one event loop owns it."""

    def __init__(self, limits: AuthLimits, keys_max: int = KEYS_MAX) -> None:
        self.limits = limits
        self._principals = _Buckets(
            "principal", limits.failures_per_principal_max, limits.window_ms, keys_max
        )
        self._addresses = _Buckets(
            "address", limits.failures_per_address_max, limits.window_ms, keys_max
        )

    def check(self, address: str, principal: str | None, now_ms: int) -> Throttled | None:
        """Why an authentication from ``address`` as ``principal`` (None: not a password
        check, e.g. a token) must be refused unchecked now, or None to go ahead."""
        if principal is None:
            return None
        throttles = [
            t
            for t in (
                self._addresses.throttled(address, now_ms),
                self._principals.throttled(principal, now_ms),
            )
            if t is not None
        ]
        return max(throttles, key=lambda t: t.retry_after_ms) if throttles else None

    def failed(self, address: str, principal: str, now_ms: int) -> list[Throttled]:
        """Count a failed password check; returns the keys it has just throttled."""
        newly: list[Throttled] = []
        for buckets, key in ((self._addresses, address), (self._principals, principal)):
            if buckets.add(key, now_ms):
                throttled = buckets.throttled(key, now_ms)
                assert throttled is not None  # add() just said so
                newly.append(throttled)
        return newly

    def tracked(self) -> int:
        """Keys remembered, both scopes (bounded by ``2 * keys_max``)."""
        return len(self._principals) + len(self._addresses)
