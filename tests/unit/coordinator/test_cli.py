from __future__ import annotations

import argparse
from pathlib import Path

import pytest

from conveyor.coordinator.cli import add_arguments, load, settings_from_args, tls_from_args
from conveyor.coordinator.validation import PARTITIONS_MAX
from conveyor.settings import SettingsError, catalog


def parse(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    add_arguments(parser)
    return parser.parse_args(argv)


def test_defaults(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in (
        "LISTEN",
        "DATA",
        "SESSION_TIMEOUT_MS",
        "AUTO_CREATE_TOPICS",
        "TLS_CERT",
        "DEFAULT_REPLICATION_FACTOR",
        "REPLICA_RESTORE_DELAY_MS",
        "MAX_CONCURRENT_MOVES",
    ):
        monkeypatch.delenv(f"CONVEYOR_{name}", raising=False)
    args = parse([])
    assert load(args)[catalog.COORDINATOR_LISTEN] == "127.0.0.1:7700"
    settings = settings_from_args(args)
    assert settings.data_dir == Path("data/coordinator")
    assert settings.session_timeout_ms == 6000
    assert settings.auto_create_topics is True
    assert settings.topic_defaults.partitions == 8
    assert settings.topic_defaults.replication_factor is None  # min(3, live brokers)
    assert settings.replica_restore_delay_ms == 30000
    assert settings.max_concurrent_moves == 2
    assert not tls_from_args(args).enabled


def test_options_win_over_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CONVEYOR_LISTEN", "127.0.0.1:9999")
    monkeypatch.setenv("CONVEYOR_SESSION_TIMEOUT_MS", "2500")
    monkeypatch.setenv("CONVEYOR_AUTO_CREATE_TOPICS", "false")
    monkeypatch.setenv("CONVEYOR_TLS_CERT", "/etc/c.pem")
    args = parse([])
    assert load(args)[catalog.COORDINATOR_LISTEN] == "127.0.0.1:9999"
    settings = settings_from_args(args)
    assert settings.session_timeout_ms == 2500
    assert settings.auto_create_topics is False
    assert tls_from_args(args).certfile == "/etc/c.pem"
    args = parse(["--listen", ":1234", "--session-timeout-ms", "100", "--auto-create-topics"])
    assert load(args)[catalog.COORDINATOR_LISTEN] == ":1234"
    assert settings_from_args(args).session_timeout_ms == 100
    assert settings_from_args(args).auto_create_topics is True
    assert settings_from_args(parse(["--no-auto-create-topics"])).auto_create_topics is False


def test_bad_values_are_rejected(monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(SettingsError, match="--default-partitions='0'"):
        settings_from_args(parse(["--default-partitions", "0"]))
    monkeypatch.setenv("CONVEYOR_AUTO_CREATE_TOPICS", "perhaps")
    with pytest.raises(SettingsError, match="CONVEYOR_AUTO_CREATE_TOPICS"):
        settings_from_args(parse([]))
    monkeypatch.delenv("CONVEYOR_AUTO_CREATE_TOPICS")
    with pytest.raises(SettingsError, match="--tls-key needs --tls-cert"):
        tls_from_args(parse(["--tls-key", "k.pem"]))


def test_the_catalogue_copies_of_constants_are_equal() -> None:
    # settings sit below transport and the services, so the catalogue holds copies
    from conveyor.transport import authlimit, limits

    assert catalog.PARTITIONS_MAX == PARTITIONS_MAX
    assert catalog.CONNECTIONS_MAX.default == limits.CONNECTIONS_MAX_DEFAULT
    assert catalog.CONNECTIONS_PER_ADDRESS_MAX.default == limits.CONNECTIONS_PER_ADDRESS_MAX_DEFAULT
    assert catalog.IDLE_TIMEOUT_MS.default == limits.IDLE_TIMEOUT_MS_DEFAULT
    assert (
        catalog.AUTH_FAILURES_PER_ADDRESS_MAX.default == authlimit.FAILURES_PER_ADDRESS_MAX_DEFAULT
    )
    assert (
        catalog.AUTH_FAILURES_PER_PRINCIPAL_MAX.default
        == authlimit.FAILURES_PER_PRINCIPAL_MAX_DEFAULT
    )
    assert catalog.AUTH_FAILURE_WINDOW_MS.default == authlimit.WINDOW_MS_DEFAULT


def test_broker_decommission_parses_without_an_id() -> None:
    from conveyor.cli.main import build_parser

    parser = build_parser()
    run = parser.parse_args(["broker", "--id", "1", "--listen", "127.0.0.1:9001"])
    assert (run.id, run.broker_action) == ("1", None)  # parsed when the broker starts
    drain = parser.parse_args(["broker", "decommission", "3", "--wait"])
    assert (drain.broker_id, drain.wait, drain.handler.__name__) == (3, True, "_decommission")
