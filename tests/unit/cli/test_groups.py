"""``conveyor group``: argument parsing without a cluster."""

from __future__ import annotations

import pytest

from conveyor.cli.groups import parse_target
from conveyor.cli.main import build_parser
from conveyor.client.group import Timestamp
from conveyor.protocol.errors import InvalidRequestError


def test_reset_targets() -> None:
    assert parse_target("earliest") == "earliest"
    assert parse_target("latest") == "latest"
    assert parse_target("1200") == 1200
    assert parse_target("1970-01-01T00:00:01Z") == Timestamp(1000)
    assert parse_target("1970-01-01T01:00:01+01:00") == Timestamp(1000)


@pytest.mark.parametrize("raw", ["soon", "-1", "2026-11-28T10:00:00", "1.5"])
def test_bad_reset_targets_are_usage_errors(raw: str) -> None:
    with pytest.raises(InvalidRequestError):
        parse_target(raw)


def test_group_commands_are_registered() -> None:
    parser = build_parser()
    args = parser.parse_args(["group", "reset-offsets", "g", "--topic", "t", "--to", "latest"])
    assert (args.group, args.topic, args.to) == ("g", "t", "latest")
    assert parser.parse_args(["group", "describe", "g", "--json"]).json
    assert parser.parse_args(["group", "list"]).action == "list"
