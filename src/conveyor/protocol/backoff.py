"""Exponential backoff with jitter: one rule for clients, brokers and the coordinator.

Pure: the caller supplies the random draw (from its own seeded or system RNG), so a retry
schedule is a table test and the simulation replays it exactly.
"""

from __future__ import annotations

from typing import Final, NamedTuple


class Jitter(NamedTuple):
    """The factor applied to the exponential delay is ``low + (high - low) * draw``."""

    low: float
    high: float


# Clients spread around the nominal delay (+-20%), so clients failing together do not retry
# together, while their average retry rate stays what the setting says.
AROUND: Final = Jitter(0.8, 1.2)
# Servers (brokers' heartbeats, replica fetches, forwarded produces) wait between half and
# all of the nominal delay: brokers restarted together spread out and never wait longer
# than the cap.
BELOW: Final = Jitter(0.5, 1.0)


def backoff_ms(
    attempt: int, *, base_ms: int, max_ms: int, draw: float, jitter: Jitter = AROUND
) -> int:
    """Delay before retry number ``attempt`` (0 = the first retry): ``base_ms`` doubled per
    attempt, capped at ``max_ms``, times the ``jitter`` factor from ``draw`` in [0, 1).

    >>> backoff_ms(0, base_ms=100, max_ms=1000, draw=0.5), backoff_ms(5, base_ms=100,
    ...     max_ms=1000, draw=0.0, jitter=BELOW)
    (100, 500)
    """
    raw_ms = min(max_ms, base_ms * (1 << min(max(attempt, 0), 30)))
    return max(0, int(raw_ms * (jitter.low + (jitter.high - jitter.low) * draw)))
