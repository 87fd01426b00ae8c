"""The console's signed note of its user's address (transport/forwarded.py): taken only
when signed with the services' key, within the window, and naming an IP address."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from conveyor.transport import forwarded

KEY = forwarded.derive_key("a-cluster-secret")


def test_a_signed_address_is_taken_within_the_window_only() -> None:
    value = forwarded.sign(KEY, "10.1.2.3", 1_000_000)
    assert forwarded.verified(KEY, value, 1_000_000) == "10.1.2.3"
    assert forwarded.verified(KEY, value, 1_000_000 + forwarded.WINDOW_MS) == "10.1.2.3"
    assert forwarded.verified(KEY, value, 1_000_001 + forwarded.WINDOW_MS) is None
    assert forwarded.verified(KEY, value, 1_000_000 - forwarded.WINDOW_MS - 1) is None
    ipv6 = forwarded.sign(KEY, "2001:db8::1", 5)
    assert forwarded.verified(KEY, ipv6, 5) == "2001:db8::1"


def test_anything_else_is_ignored() -> None:
    value = forwarded.sign(KEY, "10.1.2.3", 7)
    other = forwarded.derive_key("another-secret")
    assert forwarded.verified(other, value, 7) is None  # another cluster's key
    assert forwarded.verified(None, value, 7) is None  # no key: never taken
    assert forwarded.verified(KEY, value.replace("10.1.2.3", "10.1.2.4"), 7) is None
    assert forwarded.verified(KEY, None, 7) is None
    assert forwarded.verified(KEY, "10.1.2.3", 7) is None
    assert forwarded.verified(KEY, forwarded.sign(KEY, "not-an-ip", 7), 7) is None
    assert forwarded.verified(KEY, value + "x" * forwarded.VALUE_CHARS_MAX, 7) is None
    assert forwarded.derive_key("a-cluster-secret") == KEY  # every service derives the same


@given(st.text(max_size=300), st.integers(-(2**40), 2**45))
def test_verified_never_raises(value: str, now_ms: int) -> None:
    assert forwarded.verified(KEY, value, now_ms) in (None, *_ips(value))


def _ips(value: str) -> tuple[str, ...]:
    address = value.partition(";")[0]
    return (address,) if address else ()
