"""The one backoff rule (protocol/backoff.py), with the clients' and the servers' jitter."""

from __future__ import annotations

import pytest

from conveyor.protocol.backoff import BELOW, backoff_ms


def test_backoff_doubles_caps_and_jitters_around_the_delay() -> None:
    assert backoff_ms(0, base_ms=100, max_ms=1000, draw=0.5) == 100
    assert backoff_ms(1, base_ms=100, max_ms=1000, draw=0.5) == 200
    assert backoff_ms(10, base_ms=100, max_ms=1000, draw=0.5) == 1000
    assert backoff_ms(0, base_ms=100, max_ms=1000, draw=0.0) == 80
    assert backoff_ms(0, base_ms=100, max_ms=1000, draw=0.999) == 119


@pytest.mark.parametrize(
    ("attempt", "jitter", "expected"),
    [(0, 0.0, 50), (0, 0.999, 99), (1, 0.0, 100), (3, 0.0, 400), (10, 0.0, 2500), (50, 0.0, 2500)],
)
def test_server_backoff_waits_between_half_and_all_of_the_delay(
    attempt: int, jitter: float, expected: int
) -> None:
    assert backoff_ms(attempt, base_ms=100, max_ms=5000, draw=jitter, jitter=BELOW) == expected
