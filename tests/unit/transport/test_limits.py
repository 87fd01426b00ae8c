"""The pure policies of listeners: connection limits, the password-guessing limit, and the
log throttle."""

from __future__ import annotations

import logging

import pytest
from hypothesis import given
from hypothesis import strategies as st

from conveyor.transport.authlimit import AuthFailureLimiter, AuthLimits
from conveyor.transport.limits import ConnectionLimiter, ConnectionLimits, peer_address
from conveyor.transport.throttle import RepeatFilter, Throttle

# ---- connection limits --------------------------------------------------------------------


def test_per_address_then_per_listener_limit() -> None:
    limiter = ConnectionLimiter(ConnectionLimits(connections_max=3, connections_per_address_max=2))
    assert limiter.admit("10.0.0.1") is None
    assert limiter.admit("10.0.0.1") is None
    refusal = limiter.admit("10.0.0.1")
    assert refusal is not None and refusal.reason == "address_full"
    assert "connections_per_address_max 2" in refusal.message
    assert limiter.admit("10.0.0.2") is None
    refusal = limiter.admit("10.0.0.3")
    assert refusal is not None and refusal.reason == "listener_full"
    assert "connections_max 3" in refusal.message
    assert limiter.refused_count == {"listener_full": 1, "address_full": 1}
    limiter.release("10.0.0.1")
    assert limiter.admit("10.0.0.3") is None
    assert (limiter.open_count, limiter.addresses) == (3, 3)


def test_releasing_what_was_never_admitted_is_a_bug() -> None:
    limiter = ConnectionLimiter(ConnectionLimits())
    with pytest.raises(AssertionError):
        limiter.release("10.0.0.1")


@pytest.mark.parametrize(
    "field", ["connections_max", "connections_per_address_max", "idle_timeout_ms"]
)
def test_limits_must_be_positive(field: str) -> None:
    with pytest.raises(ValueError, match=field):
        ConnectionLimits(**{field: 0})


@given(
    st.lists(st.tuples(st.booleans(), st.sampled_from(["a", "b", "c"])), max_size=200),
    st.integers(1, 5),
    st.integers(1, 5),
)
def test_counts_stay_exact_and_within_limits(
    steps: list[tuple[bool, str]], total_max: int, per_address_max: int
) -> None:
    limiter = ConnectionLimiter(ConnectionLimits(total_max, per_address_max))
    model: dict[str, int] = {}
    for open_, address in steps:
        if open_:
            if limiter.admit(address) is None:
                model[address] = model.get(address, 0) + 1
        elif model.get(address):
            limiter.release(address)
            model[address] -= 1
        assert limiter.open_count == sum(model.values()) <= total_max
        assert all(limiter.open_from(a) == n <= per_address_max for a, n in model.items())
        assert limiter.addresses == sum(1 for n in model.values() if n)


@pytest.mark.parametrize(
    ("peername", "address"),
    [
        (("10.0.0.7", 5555), "10.0.0.7"),
        (("::ffff:10.0.0.7", 5555, 0, 0), "10.0.0.7"),
        (("::1", 5555, 0, 0), "::1"),
        (("fe80::1%eth0", 5555, 0, 2), "fe80::1"),
        (None, "unknown"),
        ("/run/conveyor.sock", "unknown"),
        (("not-an-ip", 1), "not-an-ip"),
    ],
)
def test_peer_address(peername: object, address: str) -> None:
    assert peer_address(peername) == address


# ---- password guessing ---------------------------------------------------------------------


def test_a_burst_of_failures_then_one_try_per_window_share() -> None:
    limiter = AuthFailureLimiter(
        AuthLimits(failures_per_address_max=100, failures_per_principal_max=3, window_ms=3000)
    )
    for i in range(3):
        assert limiter.check("10.0.0.1", "alice", i) is None
        newly = limiter.failed("10.0.0.1", "alice", i)
        assert [t.scope for t in newly] == (["principal"] if i == 2 else [])
    throttled = limiter.check("10.0.0.9", "alice", 2)  # from any address
    assert throttled is not None and throttled.scope == "principal"
    assert 999 <= throttled.retry_after_ms <= 1000  # one failure drains in 3000/3 ms
    assert "at most 3 per 3000 ms" in throttled.message
    assert limiter.check("10.0.0.1", "bob", 2) is None  # other users are unaffected
    assert limiter.check("10.0.0.1", None, 2) is None  # tokens are never throttled
    assert limiter.check("10.0.0.1", "alice", 2 + throttled.retry_after_ms) is None
    limiter.failed("10.0.0.1", "alice", 1002)
    assert limiter.check("10.0.0.1", "alice", 1003) is not None  # one try, then wait again


def test_the_address_limit_covers_many_user_names() -> None:
    limiter = AuthFailureLimiter(
        AuthLimits(failures_per_address_max=5, failures_per_principal_max=5, window_ms=60_000)
    )
    for i in range(5):
        limiter.failed("10.0.0.1", f"user-{i}", 0)
    throttled = limiter.check("10.0.0.1", "user-new", 0)
    assert throttled is not None and throttled.scope == "address"
    assert limiter.check("10.0.0.2", "user-new", 0) is None


def test_memory_is_bounded() -> None:
    limiter = AuthFailureLimiter(AuthLimits(), keys_max=10)
    for i in range(1000):
        limiter.failed(f"10.0.{i // 256}.{i % 256}", f"user-{i}", i)
    assert limiter.tracked() == 20


@given(
    st.lists(st.integers(0, 500), min_size=1, max_size=60),
    st.integers(1, 10),
    st.integers(1, 5000),
)
def test_never_more_failures_than_the_limit_allows(
    gaps_ms: list[int], failures_max: int, window_ms: int
) -> None:
    """However a guesser spaces its attempts, the checked guesses in any span of T ms are
    at most ``max + T * max / window`` (the bucket's burst plus what drains)."""
    limiter = AuthFailureLimiter(
        AuthLimits(failures_per_principal_max=failures_max, window_ms=window_ms)
    )
    now_ms, checked = 0, []
    for gap in gaps_ms:
        now_ms += gap
        if limiter.check("10.0.0.1", "alice", now_ms) is None:
            limiter.failed("10.0.0.1", "alice", now_ms)
            checked.append(now_ms)
    for i, start in enumerate(checked):
        span = [t for t in checked[i:] if t - start <= 10 * window_ms]
        allowed = failures_max + (span[-1] - start) * failures_max / window_ms
        assert len(span) <= allowed + 1e-6


# ---- log throttle --------------------------------------------------------------------------


def test_throttle_writes_once_per_interval_and_counts_the_rest() -> None:
    throttle = Throttle(interval_ms=1000)
    assert throttle.decide("k", 0).emit
    assert not throttle.decide("k", 10).emit
    assert not throttle.decide("k", 999).emit
    assert throttle.decide("other", 999).emit
    decision = throttle.decide("k", 1000)
    assert decision.emit and decision.suppressed == 2


def test_repeat_filter_on_a_logger(caplog: pytest.LogCaptureFixture) -> None:
    now = [0]
    logger = logging.getLogger("tests.throttle")
    repeat = RepeatFilter(interval_ms=1000, clock_ms=lambda: now[0])
    logger.addFilter(repeat)
    try:
        with caplog.at_level(logging.DEBUG, logger="tests.throttle"):
            for _ in range(5):
                logger.warning("heartbeat failed: %s", "UNKNOWN_TOPIC")
            logger.warning("heartbeat failed: %s", "NOT_READY")  # different: written
            logger.info("info lines are not throttled")
            logger.info("info lines are not throttled")
            now[0] = 1500
            logger.warning("heartbeat failed: %s", "UNKNOWN_TOPIC")
    finally:
        logger.removeFilter(repeat)
    lines = [r.getMessage() for r in caplog.records]
    assert lines == [
        "heartbeat failed: UNKNOWN_TOPIC",
        "heartbeat failed: NOT_READY",
        "info lines are not throttled",
        "info lines are not throttled",
        "heartbeat failed: UNKNOWN_TOPIC (4 identical messages suppressed)",
    ]


def test_repeat_filter_throttles_identical_lines_from_new_exception_objects(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Callers log exceptions (``log.warning("...: %s", exc)``), a new object each time:
    equal only to itself, yet the lines are identical and must be throttled."""
    now = [0]
    logger = logging.getLogger("tests.throttle.exc")
    repeat = RepeatFilter(interval_ms=1000, clock_ms=lambda: now[0])
    logger.addFilter(repeat)
    try:
        with caplog.at_level(logging.WARNING, logger="tests.throttle.exc"):
            for _ in range(5):
                logger.warning("refresh failed: %s", ConnectionRefusedError("refused"))
            logger.warning("refresh failed: %s", ConnectionRefusedError("reset"))
    finally:
        logger.removeFilter(repeat)
    assert [r.getMessage() for r in caplog.records] == [
        "refresh failed: refused",
        "refresh failed: reset",
    ]
