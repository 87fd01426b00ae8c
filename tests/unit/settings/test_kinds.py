"""The value parsers: what each accepts, what it refuses, and that any text either parses
or raises BadValueError (never another exception)."""

from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from conveyor.settings import kinds
from conveyor.settings.kinds import BadValueError, Kind
from conveyor.storage.config import FlushPolicy

EVERY_KIND: list[Kind[object]] = [
    kinds.BOOL,  # type: ignore[list-item]
    kinds.integer(1, 10),  # type: ignore[list-item]
    kinds.size(1),  # type: ignore[list-item]
    kinds.duration_ms(1),  # type: ignore[list-item]
    kinds.URL,  # type: ignore[list-item]
    kinds.HOST_PORT,  # type: ignore[list-item]
    kinds.LISTEN_OR_OFF,  # type: ignore[list-item]
    kinds.ADDRESS,  # type: ignore[list-item]
    kinds.choice("auto", "json"),  # type: ignore[list-item]
    kinds.TEXT,  # type: ignore[list-item]
    kinds.PATH,  # type: ignore[list-item]
    kinds.FLUSH,  # type: ignore[list-item]
    kinds.PROFILE_NAME,  # type: ignore[list-item]
]


@pytest.mark.parametrize("text", ["true", "TRUE", "yes", "on", "1", " True "])
def test_true(text: str) -> None:
    assert kinds.BOOL.parse(text) is True


@pytest.mark.parametrize("text", ["false", "No", "off", "0"])
def test_false(text: str) -> None:
    assert kinds.BOOL.parse(text) is False


@pytest.mark.parametrize("text", ["ture", "", "2", "enabled", "truee", "y"])
def test_not_a_boolean(text: str) -> None:
    with pytest.raises(BadValueError) as error:
        kinds.BOOL.parse(text)
    assert "true/false" in error.value.accepted


def test_toml_values_are_taken_as_they_are_but_never_a_bool_for_a_number() -> None:
    assert kinds.BOOL.parse(True) is True
    assert kinds.integer(1).parse(5) == 5
    with pytest.raises(BadValueError):
        kinds.integer(0).parse(True)
    with pytest.raises(BadValueError):
        kinds.BOOL.parse(1)
    with pytest.raises(BadValueError, match=">= 1"):
        kinds.duration_ms(1).parse(0)
    with pytest.raises(BadValueError):
        kinds.URL.parse(7700)


def test_integers_within_bounds() -> None:
    kind = kinds.integer(1, 10)
    assert kind.parse("10") == 10
    assert kind.parse("+3") == 3
    for text in ("0", "11", "1.5", "1e3", "\u0661", "0x10", "1_0"):
        with pytest.raises(BadValueError, match="between 1 and 10"):
            kind.parse(text)


def test_sizes() -> None:
    kind = kinds.size(1)
    assert kind.parse("33554432") == 32 * 1024 * 1024
    assert kind.parse("32MiB") == 32 * 1024 * 1024
    assert kind.parse("64 kb") == 64_000
    assert kind.parse("1GIB") == 1024**3
    for text in ("0", "32 MiB of it", "1.5MiB", "-1", "MiB", "32Mi"):
        with pytest.raises(BadValueError, match="size in bytes"):
            kind.parse(text)


def test_durations_are_milliseconds() -> None:
    kind = kinds.duration_ms(1)
    assert kind.parse("6000") == 6000
    assert kind.parse("30s") == 30_000
    assert kind.parse("500ms") == 500
    assert kind.parse("2m") == 120_000
    assert kind.parse("1h") == 3_600_000
    for text in ("0", "0s", "1.5s", "ten", "5 days", "-5"):
        with pytest.raises(BadValueError, match="duration in milliseconds"):
            kind.parse(text)


def test_urls() -> None:
    assert kinds.URL.parse("https://coordinator:7700/") == "https://coordinator:7700"
    assert kinds.URL.parse("http://[::1]:7700") == "http://[::1]:7700"
    for text in (
        "notaurl",
        "ftp://x",
        "http://",
        "http://x:99999",
        "http://x:0",
        "http://a b",
        "localhost:7700",
    ):
        with pytest.raises(BadValueError, match="http:// or https://"):
            kinds.URL.parse(text)


def test_host_port() -> None:
    assert kinds.HOST_PORT.parse("127.0.0.1:7700") == "127.0.0.1:7700"
    assert kinds.HOST_PORT.parse(":7700") == ":7700"
    assert kinds.HOST_PORT.parse("[::1]:7700") == "[::1]:7700"
    for text in ("7700", "host:", "host:65536", "host:port", "a/b:1", "h o:1"):
        with pytest.raises(BadValueError, match="HOST:PORT"):
            kinds.HOST_PORT.parse(text)


def test_a_listener_address_or_off() -> None:
    assert kinds.LISTEN_OR_OFF.parse("127.0.0.1:0") == "127.0.0.1:0"
    assert kinds.LISTEN_OR_OFF.parse(":9092") == ":9092"
    assert kinds.LISTEN_OR_OFF.parse(" OFF ") == kinds.OFF
    for text in ("", "none", "no", "false", "127.0.0.1", "host:99999"):
        with pytest.raises(BadValueError, match="or off"):
            kinds.LISTEN_OR_OFF.parse(text)


def test_an_address_to_connect_to_has_a_host_and_a_real_port() -> None:
    assert kinds.ADDRESS.parse("broker-1.example:9092") == "broker-1.example:9092"
    assert kinds.ADDRESS.parse("[::1]:9092") == "[::1]:9092"
    for text in (":9092", "broker:0", "broker:65536", "broker", "bro ker:1", "b:9x"):
        with pytest.raises(BadValueError, match="from 1 to 65535"):
            kinds.ADDRESS.parse(text)


def test_choices_and_flush_policy() -> None:
    assert kinds.choice("DEBUG", "INFO", upper=True).parse("debug") == "DEBUG"
    with pytest.raises(BadValueError, match="one of DEBUG, INFO"):
        kinds.choice("DEBUG", "INFO", upper=True).parse("verbose")
    assert kinds.FLUSH.parse("interval:250") == FlushPolicy("interval", 250)
    assert kinds.FLUSH.render(FlushPolicy("interval", 250)) == "interval:250"
    for text in ("sometimes", "interval:0", "interval:x"):
        with pytest.raises(BadValueError, match="always, never"):
            kinds.FLUSH.parse(text)
    assert kinds.PATH.parse("/data") == Path("/data")


@given(st.integers(1, 10**12))
def test_integers_round_trip(value: int) -> None:
    assert kinds.integer(1).parse(str(value)) == value
    assert kinds.size(1).parse(str(value)) == value
    assert kinds.duration_ms(1).parse(f"{value}ms") == value


@given(st.integers(0, 65535), st.sampled_from(["", "127.0.0.1", "broker-1", "[::1]"]))
def test_host_port_round_trip(port: int, host: str) -> None:
    assert kinds.HOST_PORT.parse(f"{host}:{port}") == f"{host}:{port}"


@given(st.text(max_size=40))
def test_any_text_parses_or_is_refused_with_what_is_accepted(text: str) -> None:
    for kind in EVERY_KIND:
        try:
            kind.parse(text)
        except BadValueError as error:
            assert error.accepted == kind.accepted


@given(st.one_of(st.booleans(), st.integers(), st.floats(), st.lists(st.integers())))
def test_any_toml_value_parses_or_is_refused(value: object) -> None:
    for kind in EVERY_KIND:
        try:
            kind.parse(value)
        except BadValueError as error:
            assert error.accepted == kind.accepted
