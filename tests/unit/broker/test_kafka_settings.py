"""The broker's Kafka listener settings: on by default beside the HTTP listener (a port
the OS picks, advertised once bound), off on request, and contradictions refused."""

from __future__ import annotations

import socket

import pytest

from conveyor.broker.cli import kafka_settings
from conveyor.broker.config import KafkaSettings
from conveyor.settings import SettingsError, load


def _kafka(**env: str) -> KafkaSettings | None:
    return kafka_settings(load("broker", {}, {"CONVEYOR_ID": "1", **env}))


def test_by_default_beside_the_http_listener_on_a_port_the_os_picks() -> None:
    settings = _kafka(CONVEYOR_LISTEN="127.0.0.2:7801")
    assert settings is not None
    assert (settings.listen_host, settings.listen_port, settings.advertise) == (
        "127.0.0.2",
        0,
        None,
    )
    bound = settings.bound(40123)
    assert (bound.listen_port, bound.advertise) == (40123, "127.0.0.2:40123")


def test_a_wildcard_is_advertised_as_the_host_name_and_ipv6_in_brackets() -> None:
    everywhere = _kafka(CONVEYOR_LISTEN=":7801")
    assert everywhere is not None and everywhere.listen_host == "0.0.0.0"
    assert everywhere.bound(9092).advertise == f"{socket.gethostname()}:9092"
    ipv6 = KafkaSettings(listen_host="::1", listen_port=0)
    assert ipv6.bound(9092).advertise == "[::1]:9092"


def test_an_explicit_listener_and_advertised_address_are_kept() -> None:
    settings = _kafka(CONVEYOR_KAFKA_LISTEN="0.0.0.0:9092", CONVEYOR_KAFKA_ADVERTISE="b1:19092")
    assert settings is not None
    assert (settings.listen_host, settings.listen_port) == ("0.0.0.0", 9092)
    assert settings.bound(9092).advertise == "b1:19092"


def test_off_means_no_listener() -> None:
    assert _kafka(CONVEYOR_KAFKA_LISTEN="off") is None


def test_an_advertised_address_without_a_listener_is_refused() -> None:
    with pytest.raises(SettingsError) as refused:
        _kafka(CONVEYOR_KAFKA_LISTEN="off", CONVEYOR_KAFKA_ADVERTISE="b1:9092")
    assert refused.value.message == "kafka_advertise is set but kafka_listen is off"


@pytest.mark.parametrize("value", ["none", "127.0.0.1", "host:70000", "of"])
def test_a_bad_value_is_one_line_saying_what_is_accepted(value: str) -> None:
    with pytest.raises(SettingsError) as refused:
        _kafka(CONVEYOR_KAFKA_LISTEN=value)
    assert "\n" not in refused.value.message
    assert refused.value.message.startswith(f"invalid CONVEYOR_KAFKA_LISTEN={value!r}: expected")
    assert refused.value.message.endswith("or off (no listener)")
