"""The ``conveyor`` command as users run it: real subprocesses for the entry point, in-process
``main(argv)`` for exit codes and messages. No timing assertions: speed is the benchmark's
business, not the tests'."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from conveyor import __version__
from conveyor.cli.main import build_parser, main

SUBPROCESS_TIMEOUT_S = 300


def run_conveyor(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    env = {key: value for key, value in os.environ.items() if key != "TMPDIR"}
    return subprocess.run(
        [sys.executable, "-m", "conveyor", *args],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=SUBPROCESS_TIMEOUT_S,
        check=False,
    )


def test_version(tmp_path: Path) -> None:
    result = run_conveyor("--version", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == f"conveyor {__version__}"


def test_help_lists_the_commands(tmp_path: Path) -> None:
    result = run_conveyor("--help", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("usage: conveyor")
    assert "bench" in result.stdout


def _positive_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and value > 0


def test_bench_storage_json(tmp_path: Path) -> None:
    """Default data directory (the current one, TMPDIR unset): used, then removed."""
    result = run_conveyor("bench", "storage", "--size-mib", "8", "--json", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    assert list(tmp_path.iterdir()) == [], "the benchmark left its data directory behind"

    assert report["benchmark"] == "storage"
    assert report["config"]["size_mib"] == 8
    assert report["log_bytes"] >= 8 * 1024 * 1024
    assert report["records"] == report["batches"] * 1000
    for policy in ("always", "interval"):
        comparison = report["append"][policy]
        for writer in ("log", "raw_serial", "raw_pipelined"):
            run = comparison[writer]
            for key in ("records_per_s", "mb_per_s", "seconds"):
                assert _positive_number(run[key]), (policy, writer, key, run[key])
            assert run["records"] == report["records"]
            assert len(run["round_seconds"]) == report["config"]["rounds"]
        assert comparison["baseline"] in ("raw_serial", "raw_pipelined")
        for key in ("ratio", "ratio_total", "ratio_raw_serial", "ratio_raw_pipelined"):
            assert _positive_number(comparison[key]), (policy, key)
    assert _positive_number(report["read"]["mb_per_s"])
    assert _positive_number(report["read"]["records_per_s"])
    assert report["read"]["bytes"] == report["log_bytes"]
    assert _positive_number(report["peak_rss_mib"])
    names = [target["name"] for target in report["targets"]]
    assert names == [
        "append ratio always",
        "append ratio interval",
        "append records/s interval",
        "sequential read",
        "peak RSS",
    ]
    for target in report["targets"]:
        assert isinstance(target["pass"], bool)
        assert _positive_number(target["measured"])
    assert report["pass"] == all(target["pass"] for target in report["targets"])
    assert report["machine"]["cpu_count"] >= 1


def test_bench_storage_tables(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """The human output: one ``append ratio <policy>: <number>`` line per policy, and a
    PASS or MISS per target; ``--dir`` picks the parent of the (removed) data directory."""
    assert main(["bench", "storage", "--size-mib", "2", "--dir", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    for policy in ("always", "interval"):
        line = next(line for line in out.splitlines() if f"append ratio {policy}:" in line)
        assert float(line.split(":")[1].split()[0]) > 0
    assert out.count("PASS") + out.count("MISS") == 5
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize(
    "argv",
    [
        [],
        ["bench"],
        ["no-such-command"],
        ["bench", "storage", "--size-mib", "0"],
        ["bench", "storage", "--record-bytes", "ten"],
    ],
)
def test_usage_errors_exit_2(argv: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    assert main(argv) == 2
    assert "usage: conveyor" in capsys.readouterr().err


def test_help_and_version_exit_0(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--version"]) == 0
    assert main(["bench", "storage", "--help"]) == 0
    assert "--size-mib" in capsys.readouterr().out


def test_operating_error_is_one_line_and_exit_1(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    missing = tmp_path / "missing"
    assert main(["bench", "storage", "--size-mib", "1", "--dir", str(missing)]) == 1
    captured = capsys.readouterr()
    assert captured.out == ""
    lines = captured.err.splitlines()
    assert len(lines) == 1
    assert lines[0].startswith("conveyor: error: cannot create a benchmark directory")
    assert "STORAGE_ERROR" in lines[0]


def test_invalid_benchmark_config_exit_1(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    argv = ["bench", "storage", "--record-bytes", "2000", "--records-per-batch", "1000"]
    assert main([*argv, "--dir", str(tmp_path)]) == 1
    err = capsys.readouterr().err
    assert "over the log's limit" in err
    assert "INVALID_CONFIG" in err
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("command", [["produce", "t", "x"], ["consume", "t"]])
def test_the_removed_http_transport_is_said_before_any_connection(
    command: list[str], capsys: pytest.CaptureFixture[str]
) -> None:
    """Nothing listens on port 1: the transport's error must come first, alone, instead of
    "cannot reach the coordinator" after the preflight's wait."""
    assert (
        main([*command[:1], "--url", "http://127.0.0.1:1", "--transport", "http", *command[1:]])
        == 1
    )
    lines = capsys.readouterr().err.splitlines()
    assert len(lines) == 1
    assert "transport='http' was removed" in lines[0]
    assert lines[0].endswith("(INVALID_CONFIG)")


def test_every_command_has_a_handler() -> None:
    args = build_parser().parse_args(["bench", "storage"])
    assert callable(args.handler)


# Commands that do not talk to a cluster by URL: the local dev supervisor, files on disk,
# the etcd store, local profiles and completion scripts, self-contained benchmarks.
_NO_CLUSTER_URL = {
    "dev stop-broker",
    "dev start-broker",
    "coordinator migrate",
    "bench storage",
    "chaos",
    "certs init",
    "certs renew",
    "config show",
    "profile list",
    "profile show",
    "profile use",
    "profile remove",
    "completion",
}


def test_every_command_that_talks_to_a_cluster_takes_url() -> None:
    """Issue 22: ``--url`` is accepted by every command that talks to a cluster (some
    benchmarks also spell it ``--bootstrap``)."""
    import argparse

    missing = []

    def walk(parser: argparse.ArgumentParser, path: list[str]) -> None:
        subs = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
        if not subs:
            flags = {o for a in parser._actions for o in a.option_strings}
            if "--url" not in flags and " ".join(path) not in _NO_CLUSTER_URL:
                missing.append(" ".join(path))
        for action in subs:
            for name, sub in action.choices.items():
                walk(sub, [*path, name])

    walk(build_parser(), [])
    assert missing == []
    queue = build_parser().parse_args(["bench", "queue", "--url", "http://127.0.0.1:1"])
    assert queue.bootstrap == "http://127.0.0.1:1"
