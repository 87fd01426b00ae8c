"""Exponential backoff with jitter (pure: the caller supplies the random draw)."""

from __future__ import annotations

JITTER_FRACTION = 0.2


def backoff_ms(attempt: int, base_ms: int, max_ms: int, draw: float) -> int:
    """Delay before retry number ``attempt`` (0 = the first retry): ``base_ms`` doubled per
    attempt, capped at ``max_ms``, times a factor in [0.8, 1.2) from ``draw`` in [0, 1),
    so that clients failing together do not retry together."""
    raw_ms = min(max_ms, base_ms * (1 << min(max(attempt, 0), 30)))
    return max(0, int(raw_ms * (1 - JITTER_FRACTION + 2 * JITTER_FRACTION * draw)))
