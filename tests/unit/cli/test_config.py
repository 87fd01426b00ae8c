"""``conveyor config show`` and the refusal of bad settings, as users meet them: the exit
code and the one line on stderr, from real subprocesses for the services."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from conveyor.cli.main import main

TIMEOUT_S = 60


# What a command's client flags export for the processes it starts (cli/output.py): each
# test that runs main() in-process gets them restored by monkeypatch afterwards.
EXPORTED = ("CONFIG", "URL", "CA", "TOKEN", "USER", "PASSWORD")


@pytest.fixture(autouse=True)
def no_conveyor_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in EXPORTED:
        monkeypatch.setenv(f"CONVEYOR_{name}", "")  # recorded, so restored after the test
        monkeypatch.delenv(f"CONVEYOR_{name}")


def clean_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("CONVEYOR_")}
    return {**env, **extra}


def run(argv: list[str], **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", *argv],
        env=clean_env(**env),
        capture_output=True,
        text=True,
        timeout=TIMEOUT_S,
        check=False,
    )


@pytest.mark.parametrize(
    ("argv", "env", "line"),
    [
        (
            ["conveyor.coordinator"],
            {"CONVEYOR_AUTH": "ture"},
            "conveyor coordinator: error: invalid CONVEYOR_AUTH='ture': expected a boolean "
            "(true/false, yes/no, on/off or 1/0)",
        ),
        (
            ["conveyor.broker", "--id", "1"],
            {"CONVEYOR_INTERNAL_MTLS": "ture"},
            "conveyor broker: error: invalid CONVEYOR_INTERNAL_MTLS='ture': expected a boolean "
            "(true/false, yes/no, on/off or 1/0)",
        ),
        (
            ["conveyor.broker"],
            {},
            "conveyor broker: error: id is required: set --id or CONVEYOR_ID",
        ),
        (
            ["conveyor", "coordinator", "--session-timeout-ms", "soon"],
            {},
            "conveyor: error: invalid --session-timeout-ms='soon': expected a duration in "
            "milliseconds >= 1 ms: an integer, or one with a unit ms, s, m or h (e.g. 30s)",
        ),
        (
            ["conveyor", "topic", "list"],
            {"CONVEYOR_URL": "notaurl"},
            "conveyor: error: invalid CONVEYOR_URL='notaurl': expected an http:// or https:// "
            "URL with a host, e.g. https://coordinator:7700, or several comma-separated",
        ),
        (
            ["conveyor", "topic", "list"],
            {"CONVEYOR_PROFILE": "../etc"},
            "conveyor: error: invalid CONVEYOR_PROFILE='../etc': expected a profile name: 1-64 "
            "letters, digits, '.', '_' or '-' (not 'current')",
        ),
    ],
)
def test_a_bad_value_refuses_to_start_with_one_line(
    argv: list[str], env: dict[str, str], line: str, tmp_path: Path
) -> None:
    result = run(argv, CONVEYOR_DATA=str(tmp_path / "data"), **env)
    assert result.returncode == 2, result.stderr
    assert result.stderr.splitlines() == [line]
    assert not (tmp_path / "data").exists()  # nothing was started or created


def test_config_show_json_says_where_each_value_came_from(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    config = tmp_path / "conveyor.toml"
    config.write_text('[broker]\nid = 7\nflush = "interval:20"\ncluster_secret = "from-toml"\n')
    monkeypatch.setenv("CONVEYOR_LISTEN", ":9100")
    monkeypatch.setenv("CONVEYOR_CLUSTER_SECRET", "hunter2-from-env")
    assert main(["config", "show", "--service", "broker", "--config", str(config), "--json"]) == 0
    out = capsys.readouterr().out
    assert "hunter2" not in out and "from-toml" not in out
    rows = {row["name"]: row for row in json.loads(out)}
    assert rows["id"]["value"] == 7
    assert (rows["id"]["source"], rows["id"]["origin"]) == ("file", f"{config} [broker]")
    assert (rows["listen"]["value"], rows["listen"]["source"]) == (":9100", "env")
    assert rows["flush"]["value"] == "interval:20"
    assert rows["cluster_secret"]["value"] == "(redacted)"
    assert rows["cluster_secret"]["origin"] == "CONVEYOR_CLUSTER_SECRET"
    assert (rows["access_log"]["value"], rows["access_log"]["source"]) == (False, "default")
    assert rows["config"]["source"] == "flag"


def test_config_show_table_and_the_cli_flags(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("CONVEYOR_TOKEN", "cvt_secret_value")
    monkeypatch.setenv("CONVEYOR_SESION_TIMEOUT_MS", "1")
    assert main(["config", "show"]) == 0
    captured = capsys.readouterr()
    assert "cvt_secret_value" not in captured.out
    assert "(redacted)" in captured.out
    assert captured.err.strip() == (
        "conveyor: warning: unknown environment variable CONVEYOR_SESION_TIMEOUT_MS "
        "(did you mean CONVEYOR_SESSION_TIMEOUT_MS?); it is ignored"
    )


def test_a_broker_without_id_shows_as_required(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["config", "show", "--service", "broker", "--json"]) == 0
    rows = {row["name"]: row for row in json.loads(capsys.readouterr().out)}
    assert rows["id"]["value"] is None or isinstance(rows["id"]["value"], int)


def test_config_show_refuses_a_bad_value(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("CONVEYOR_FETCH_MEMORY_MAX_BYTES", "lots")
    assert main(["config", "show", "--service", "broker"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1].startswith("conveyor: error: invalid CONVEYOR_FETCH_MEMORY_MAX_BYTES='lots'")


def test_the_top_level_config_flag_and_client_flags_come_first(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    config = tmp_path / "conveyor.toml"
    config.write_text('[client]\nurl = "https://from-file:7700"\nuser = "alice"\n')
    monkeypatch.setenv("CONVEYOR_USER", "bob")
    assert main(["--config", str(config), "config", "show", "--json"]) == 0
    rows = {row["name"]: row for row in json.loads(capsys.readouterr().out)}
    assert (rows["url"]["value"], rows["url"]["source"]) == ("https://from-file:7700", "file")
    assert (rows["user"]["value"], rows["user"]["source"]) == ("bob", "env")
    assert rows["config"]["source"] == "flag"


def test_the_profile_variables_are_settings(tmp_path: Path) -> None:
    """CONVEYOR_PROFILE and CONVEYOR_PROFILES_DIR (docs/cli.md) are in the catalogue: no
    unknown-variable warning, and `config show` lists them with where they came from."""
    profiles = str(tmp_path / "profiles")
    added = run(["conveyor", "profile", "add", "dev", "--url", "http://127.0.0.1:1"],
                CONVEYOR_PROFILES_DIR=profiles)  # fmt: skip
    assert added.returncode == 0, added.stderr
    shown = run(["conveyor", "config", "show", "--json"],
                CONVEYOR_PROFILES_DIR=profiles, CONVEYOR_PROFILE="dev")  # fmt: skip
    assert shown.returncode == 0, shown.stderr
    assert shown.stderr == ""  # neither variable is "unknown"
    rows = {row["name"]: row for row in json.loads(shown.stdout)}
    assert (rows["profile"]["value"], rows["profile"]["origin"]) == ("dev", "CONVEYOR_PROFILE")
    assert rows["profiles_dir"]["value"] == profiles
    assert (rows["url"]["value"], rows["url"]["source"]) == ("http://127.0.0.1:1", "file")
    flagged = run(["conveyor", "--profile", "dev", "config", "show", "--json"],
                  CONVEYOR_PROFILES_DIR=profiles)  # fmt: skip
    rows = {row["name"]: row for row in json.loads(flagged.stdout)}
    assert (rows["profile"]["value"], rows["profile"]["source"]) == ("dev", "flag")
    assert rows["config"]["value"] == str(Path(profiles) / "dev.toml")
    assert (rows["url"]["value"], rows["url"]["source"]) == ("http://127.0.0.1:1", "file")
    missing = run(["conveyor", "topic", "list"],
                  CONVEYOR_PROFILES_DIR=profiles, CONVEYOR_PROFILE="prod")  # fmt: skip
    assert missing.returncode == 1
    assert "no profile 'prod'" in missing.stderr


def test_a_command_run_in_process_leaves_no_client_flag_behind(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """main() in-process (tests, embedding): the next client of that process must not read
    the command's --config file (CI once saw later tests fail with its user name)."""
    from conveyor.settings import catalog, client_settings

    config = tmp_path / "conveyor.toml"
    config.write_text('[client]\nuser = "alice"\n')
    assert main(["--config", str(config), "config", "show", "--json"]) == 0
    capsys.readouterr()
    assert client_settings()[catalog.USER] is None
