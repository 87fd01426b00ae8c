"""The own-clock lease rule (coordinator/lease.py): tables, properties, clock jumps."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from conveyor.coordinator import lease as rules
from conveyor.coordinator.lease import Lease, LeaseSettings

TWO_S = LeaseSettings.for_ttl(2000)


def test_defaults_for_a_two_second_lease() -> None:
    assert (TWO_S.ttl_s, TWO_S.margin_ms, TWO_S.renew_interval_ms) == (2, 500, 666)


@pytest.mark.parametrize(
    ("ttl_ms", "margin_ms"), [(1000, 200), (2500, 500), (2000, 100), (2000, 1001)]
)
def test_settings_etcd_cannot_honour_are_refused(ttl_ms: int, margin_ms: int) -> None:
    with pytest.raises(ValueError, match="lease"):
        LeaseSettings(ttl_ms, margin_ms)


def test_the_worked_example() -> None:
    lease = rules.granted(TWO_S, lease_id=7, sent_ms=9_000)
    lease = rules.renewed(TWO_S, lease, sent_ms=10_000, ttl_s=2)
    assert lease == Lease(7, 11_500)
    assert rules.may_act(lease, 11_499)
    assert not rules.may_act(lease, 11_500)  # two keep-alives lost: stop before etcd can expire


def test_validity_counts_from_the_send_time_not_the_answer() -> None:
    """An answer that took 1.4 s to come back still extends from when it was sent."""
    lease = rules.granted(TWO_S, 1, sent_ms=0)
    answered_late = rules.renewed(TWO_S, lease, sent_ms=600, ttl_s=2)
    assert answered_late is not None and answered_late.valid_until_ms == 2_100


def test_a_lease_etcd_no_longer_has_ends_at_once() -> None:
    assert rules.renewed(TWO_S, rules.granted(TWO_S, 1, 0), sent_ms=100, ttl_s=0) is None
    assert not rules.may_act(None, 0)


def test_a_larger_ttl_from_etcd_does_not_extend_past_the_configured_one() -> None:
    lease = rules.renewed(TWO_S, rules.granted(TWO_S, 1, 0), sent_ms=100, ttl_s=30)
    assert lease is not None and lease.valid_until_ms == 100 + 2000 - 500


@given(
    sends=st.lists(st.integers(0, 100_000), min_size=1, max_size=30),
    ttl_s=st.integers(1, 5),
)
def test_the_coordinator_never_acts_once_etcd_may_have_expired_the_lease(
    sends: list[int], ttl_s: int
) -> None:
    """For any order of confirmed keep-alives: valid_until <= etcd's earliest possible
    expiry (the latest of each confirmed send + its TTL) - margin, and renewals never
    shorten it."""
    settings = LeaseSettings.for_ttl(max(2, ttl_s) * 1000)
    lease: Lease | None = rules.granted(settings, 1, 0)
    etcd_expiry_earliest = settings.ttl_ms  # the grant, sent at 0
    for sent in sends:
        assert lease is not None
        before = lease.valid_until_ms
        lease = rules.renewed(settings, lease, sent, ttl_s)
        assert lease is not None and lease.valid_until_ms >= before
        etcd_expiry_earliest = max(etcd_expiry_earliest, sent + min(ttl_s, settings.ttl_s) * 1000)
        assert lease.valid_until_ms <= etcd_expiry_earliest - settings.margin_ms


def test_a_forward_clock_jump_makes_it_step_down_and_a_wall_step_changes_nothing() -> None:
    """The clock is monotonic: a suspended host (the monotonic clock leaps forward) stops
    acting at once; a wall-clock step is not seen at all (SystemClock and leadership use
    time.monotonic)."""
    lease = rules.granted(TWO_S, 1, sent_ms=1_000)
    assert rules.may_act(lease, 1_100)
    assert not rules.may_act(lease, 1_100 + 3_600_000)


def test_the_keepalive_waits_no_longer_than_the_validity_left() -> None:
    lease = Lease(1, valid_until_ms=1_000)
    assert rules.keepalive_timeout_ms(TWO_S, lease, now_ms=900) == 100
    assert rules.keepalive_timeout_ms(TWO_S, lease, now_ms=0) == 666
    assert rules.keepalive_timeout_ms(TWO_S, lease, now_ms=5_000) == 1


def test_the_step_down_is_due_at_the_validity_whatever_the_renewals_do() -> None:
    """The service loop's own decision (issue 15): it needs only the lease and its clock."""
    lease = rules.granted(TWO_S, lease_id=1, sent_ms=10_000)  # valid until 11_500
    assert rules.step_down_in_ms(lease, 10_000) == 1_500
    assert rules.step_down_in_ms(lease, 11_499) == 1
    assert rules.step_down_in_ms(lease, 11_500) == 0
    assert rules.step_down_in_ms(lease, 99_999) == 0
    assert rules.step_down_in_ms(None, 10_000) == 0  # no lease: not active


@given(st.integers(0, 10**9), st.integers(0, 10**9))
def test_a_step_down_is_due_exactly_when_the_coordinator_may_no_longer_act(
    valid_until_ms: int, now_ms: int
) -> None:
    lease = Lease(1, valid_until_ms)
    assert (rules.step_down_in_ms(lease, now_ms) == 0) == (not rules.may_act(lease, now_ms))
