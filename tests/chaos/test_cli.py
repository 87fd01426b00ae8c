"""``conveyor chaos`` on the command line: bad input is a usage error and starts nothing."""

from __future__ import annotations

import pytest

from conveyor.chaos.schedule import DEFAULT_FAULTS, FAULTS
from conveyor.cli.common import EXIT_USAGE
from conveyor.cli.main import build_parser, main


def test_an_unknown_fault_is_a_usage_error(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["chaos", "--duration", "5", "--faults", "kill,meteor"]) == EXIT_USAGE
    assert "unknown faults ['meteor']" in capsys.readouterr().err


def test_fault_lists_parse() -> None:
    parser = build_parser()
    assert parser.parse_args(["chaos", "--faults", "all"]).faults == FAULTS
    assert parser.parse_args(["chaos", "--faults", "pause,kill"]).faults == ("pause", "kill")
    assert parser.parse_args(["chaos"]).faults == DEFAULT_FAULTS


def test_the_workload_is_a_choice(capsys: pytest.CaptureFixture[str]) -> None:
    parser = build_parser()
    assert parser.parse_args(["chaos"]).workload == "stream"
    assert parser.parse_args(["chaos", "--workload", "queue"]).workload == "queue"
    assert parser.parse_args(["chaos", "--workload", "txn"]).workload == "txn"
    assert main(["chaos", "--workload", "bus"]) == EXIT_USAGE
    assert "invalid choice: 'bus'" in capsys.readouterr().err
