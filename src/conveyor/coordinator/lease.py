"""When an active coordinator may act: the lease rules, as pure functions of its own
monotonic clock. ``leadership.py`` is the shell that talks to etcd.

The active coordinator holds an etcd lease (TTL ``ttl_ms``) that keeps the election key
alive; standbys take over only once etcd has expired the lease and deleted the key. The
coordinator must stop acting *before* that can happen, judging only by its own clock
(it cannot ask etcd while partitioned from it, and a paused process does not know it was
paused). The rule::

    valid_until = (send time of the last grant or keep-alive etcd confirmed) + ttl - margin

etcd sets a lease to expire TTL after it *processes* a grant or keep-alive, which is after
the coordinator sent it, so etcd's expiry is at least ``send time + ttl`` (on one host's
clock; across hosts, clock *rates* differ by parts per million, which ``margin_ms`` covers
many times over, together with scheduling delays between the check and the act). A
keep-alive answered late still counts from its send time; one never answered counts for
nothing. A coordinator acts only while ``now < valid_until``: after a pause (SIGSTOP, a long
GC) its clock has moved on and the first check fails, before it decides anything. Its store
writes are fenced by the epoch in etcd as well, and brokers refuse commands of an older
epoch, so the three defences are independent.

Clock jumps: the clock is monotonic (``time.monotonic``), so wall-clock steps do nothing;
a forward jump of the monotonic clock itself (a suspended VM) can only make the
coordinator step down early, the safe direction; a backward jump cannot happen.

Worked example, ttl 2000 ms, margin 500 ms, renewals every 666 ms: a keep-alive sent at
10_000 and confirmed makes the coordinator valid until 11_500. If the next two (10_666,
11_332) get no answer, it stops acting at 11_500; etcd expires the lease no earlier than
12_000 and a standby takes over after that: 500 ms with nobody active, never two.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final

TTL_MS_MIN: Final = 2000  # etcd rounds shorter leases up to its minimum (~1.5 s, whole seconds)
MARGIN_MS_MIN: Final = 200


@dataclass(frozen=True, slots=True)
class LeaseSettings:
    ttl_ms: int  # whole seconds: etcd leases have a TTL in seconds
    margin_ms: int  # stop acting this long before the lease can have expired at etcd

    def __post_init__(self) -> None:
        if self.ttl_ms < TTL_MS_MIN or self.ttl_ms % 1000:
            raise ValueError(f"lease ttl {self.ttl_ms} ms must be whole seconds, >= {TTL_MS_MIN}")
        if not MARGIN_MS_MIN <= self.margin_ms <= self.ttl_ms // 2:
            raise ValueError(
                f"lease margin {self.margin_ms} ms must be in [{MARGIN_MS_MIN}, ttl/2]"
            )

    @classmethod
    def for_ttl(cls, ttl_ms: int) -> LeaseSettings:
        """The default margin: a quarter of the TTL (500 ms for 2 s)."""
        return cls(ttl_ms, max(MARGIN_MS_MIN, ttl_ms // 4))

    @property
    def ttl_s(self) -> int:
        return self.ttl_ms // 1000

    @property
    def renew_interval_ms(self) -> int:
        """Three renewals per TTL: one lost keep-alive does not cost the lease."""
        return self.ttl_ms // 3


@dataclass(frozen=True, slots=True)
class Lease:
    lease_id: int
    valid_until_ms: int  # own monotonic clock: no decision at or after this instant


def granted(settings: LeaseSettings, lease_id: int, sent_ms: int) -> Lease:
    """A lease etcd granted for a request sent at ``sent_ms``."""
    return Lease(lease_id, sent_ms + settings.ttl_ms - settings.margin_ms)


def renewed(settings: LeaseSettings, lease: Lease, sent_ms: int, ttl_s: int) -> Lease | None:
    """After a keep-alive sent at ``sent_ms`` that etcd answered with ``ttl_s`` left: the
    extended lease, or None when etcd says the lease is gone (TTL 0: expired, revoked).
    Never shortens validity (answers may arrive out of order)."""
    if ttl_s <= 0:
        return None
    ttl_ms = min(ttl_s * 1000, settings.ttl_ms)
    until = max(lease.valid_until_ms, sent_ms + ttl_ms - settings.margin_ms)
    return Lease(lease.lease_id, until)


def may_act(lease: Lease | None, now_ms: int) -> bool:
    return lease is not None and now_ms < lease.valid_until_ms


def step_down_in_ms(lease: Lease | None, now_ms: int) -> int:
    """How long an active coordinator may go on acting before it must step down by its own
    clock: 0 means now. The service loop sleeps this long and asks again, so stepping
    down depends on no renewal, thread or I/O returning (a keep-alive hung in a partition
    from etcd, issue 15), only on this clock. With the worked example's lease (valid until
    11_500): 1_500 at 10_000, 0 at 11_500 and after."""
    if lease is None:
        return 0
    return max(0, lease.valid_until_ms - now_ms)


def keepalive_timeout_ms(settings: LeaseSettings, lease: Lease, now_ms: int) -> int:
    """How long to wait for a keep-alive's answer: never past the lease's validity (an
    answer after it changes nothing) nor past the next renewal."""
    return max(1, min(settings.renew_interval_ms, lease.valid_until_ms - now_ms))


def next_renewal_ms(settings: LeaseSettings, last_sent_ms: int) -> int:
    return last_sent_ms + settings.renew_interval_ms
