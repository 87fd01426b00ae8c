"""``conveyor chaos`` on the command line: bad input is a usage error and starts nothing."""

from __future__ import annotations

import pytest

from conveyor.chaos.schedule import DEFAULT_FAULTS, FAULTS
from conveyor.cli.common import EXIT_ERROR, EXIT_USAGE
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


def test_a_workload_that_never_ran_is_an_error_not_a_verdict(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    from conveyor.chaos import runner, txn_run

    def never(*_args: object, **_kwargs: object) -> None:
        raise runner.NotRunningError("no fault injected: in 60 s, no ok yet from consumer-0")

    monkeypatch.setattr(runner, "run", never)
    monkeypatch.setattr(txn_run, "run", never)
    for workload in ("stream", "txn"):
        assert main(["chaos", "--seed", "5", "--workload", workload]) == EXIT_ERROR
        out = capsys.readouterr()
        assert "seed 5: no fault injected" in out.err and "VALID" not in out.out
