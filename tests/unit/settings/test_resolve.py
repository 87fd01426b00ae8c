"""The resolver: flag, then environment, then TOML file, then default; secrets and their
_FILE twins; one-line errors; unknown keys and variables."""

from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from conveyor.settings import SettingsError, Source, catalog, env_warnings, load
from conveyor.settings.core import config_path, resolve_one


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "conveyor.toml"
    path.write_text(text)
    return path


@given(st.booleans(), st.booleans(), st.booleans())
def test_the_first_source_found_wins(flag: bool, env: bool, file: bool) -> None:
    # session_timeout_ms: flag 1000, variable 2000, file 3000, default 6000
    import tempfile

    with tempfile.TemporaryDirectory() as directory:
        path = Path(directory) / "c.toml"
        path.write_text("[coordinator]\nsession_timeout_ms = 3000\n")
        flags = {"session_timeout_ms": "1000"} if flag else {}
        environment = {"CONVEYOR_SESSION_TIMEOUT_MS": "2s"} if env else {}
        if file:
            environment["CONVEYOR_CONFIG"] = str(path)
        settings = load("coordinator", flags, environment)
    expected = (
        (1000, Source.FLAG)
        if flag
        else (2000, Source.ENV)
        if env
        else (3000, Source.FILE)
        if file
        else (6000, Source.DEFAULT)
    )
    item = catalog.SESSION_TIMEOUT_MS
    assert (settings[item], settings.source(item)) == expected


def test_an_empty_variable_means_the_default() -> None:
    settings = load("coordinator", {}, {"CONVEYOR_DEFAULT_REPLICATION_FACTOR": ""})
    assert settings[catalog.DEFAULT_REPLICATION_FACTOR] is None
    assert settings.source(catalog.DEFAULT_REPLICATION_FACTOR) is Source.DEFAULT


@pytest.mark.parametrize(
    ("env", "message"),
    [
        (
            {"CONVEYOR_AUTH": "ture"},
            "invalid CONVEYOR_AUTH='ture': expected a boolean (true/false, yes/no, on/off or 1/0)",
        ),
        (
            {"CONVEYOR_INTERNAL_MTLS": "yes please"},
            "invalid CONVEYOR_INTERNAL_MTLS='yes please': expected a boolean",
        ),
        ({"CONVEYOR_SESSION_TIMEOUT_MS": "6 sec"}, "invalid CONVEYOR_SESSION_TIMEOUT_MS='6 sec'"),
        ({"CONVEYOR_LISTEN": "7700"}, "invalid CONVEYOR_LISTEN='7700': expected HOST:PORT"),
        (
            {"CONVEYOR_LOG_LEVEL": "loud"},
            "invalid CONVEYOR_LOG_LEVEL='loud': expected one of DEBUG, INFO, WARNING, ERROR",
        ),
    ],
)
def test_a_bad_variable_is_one_line_naming_it_the_value_and_what_is_accepted(
    env: dict[str, str], message: str
) -> None:
    with pytest.raises(SettingsError) as error:
        load("coordinator", {}, env)
    assert error.value.message.startswith(message)
    assert "\n" not in error.value.message


def test_broker_values_and_aliases() -> None:
    env = {
        "CONVEYOR_ID": "3",
        "CONVEYOR_URL": "https://coordinator:7700/",
        "CONVEYOR_FLUSH": "interval:50",
        "CONVEYOR_FETCH_MEMORY_MAX_BYTES": "64MiB",
    }
    settings = load("broker", {}, env)
    assert settings[catalog.BROKER_ID] == 3
    assert settings[catalog.COORDINATOR_URL] == "https://coordinator:7700"
    assert settings.values["coordinator"].origin == "CONVEYOR_URL"
    assert settings[catalog.FLUSH] is not None
    assert settings[catalog.FETCH_MEMORY_MAX_BYTES] == 64 * 1024 * 1024
    env["CONVEYOR_COORDINATOR"] = "http://other:7700"  # the main variable before the alias
    assert load("broker", {}, env)[catalog.COORDINATOR_URL] == "http://other:7700"
    with pytest.raises(SettingsError, match="CONVEYOR_FLUSH='bad': expected always"):
        load("broker", {}, {**env, "CONVEYOR_FLUSH": "bad"})


def test_a_required_setting_says_how_to_set_it() -> None:
    with pytest.raises(SettingsError, match="id is required: set --id or CONVEYOR_ID"):
        load("broker", {}, {})
    assert load("broker", {}, {}, require=False)[catalog.BROKER_ID] is None


def test_secrets_come_from_the_variable_else_its_file_twin(tmp_path: Path) -> None:
    secret = tmp_path / "secret"
    secret.write_text("s3cret\n")
    env = {"CONVEYOR_CLUSTER_SECRET_FILE": str(secret)}
    value = resolve_one(catalog.CLUSTER_SECRET, "broker", {}, env, None)
    assert (value.value, value.origin, value.shown()) == ("s3cret", env_name(value), "(redacted)")
    env["CONVEYOR_CLUSTER_SECRET"] = "from-variable"
    assert resolve_one(catalog.CLUSTER_SECRET, "broker", {}, env, None).value == "from-variable"
    with pytest.raises(SettingsError, match="cannot read CONVEYOR_TOKEN_FILE="):
        load("client", {}, {"CONVEYOR_TOKEN_FILE": str(tmp_path / "missing")})


def env_name(value: object) -> str:
    return "CONVEYOR_CLUSTER_SECRET_FILE"


def test_a_bad_secret_is_never_echoed() -> None:
    with pytest.raises(SettingsError) as error:
        load("client", {"password": ""}, {})
    assert "(redacted)" in error.value.message


def test_the_file_top_level_then_the_service_table(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        'log_level = "debug"\nlisten = ":9000"\n[broker]\nid = 4\nlisten = ":9001"\n'
        'fetch_write_timeout_ms = "10s"\ncluster_secret_file = "SECRET"\n',
    )
    (tmp_path / "secret").write_text("from-file")
    text = path.read_text().replace("SECRET", str(tmp_path / "secret"))
    path.write_text(text)
    broker = load("broker", {"config": str(path)}, {})
    assert broker[catalog.BROKER_LISTEN] == ":9001"
    assert broker[catalog.LOG_LEVEL] == "DEBUG"
    assert broker[catalog.FETCH_WRITE_TIMEOUT_MS] == 10_000
    assert broker[catalog.CLUSTER_SECRET] == "from-file"
    assert broker.values["listen"].origin == f"{path} [broker]"
    assert broker.config_path == path
    coordinator = load("coordinator", {}, {"CONVEYOR_CONFIG": str(path)})
    assert coordinator[catalog.COORDINATOR_LISTEN] == ":9000"


@pytest.mark.parametrize(
    ("text", "message"),
    [
        (
            "sesion_timeout_ms = 5",
            "unknown setting sesion_timeout_ms in .* \\(did you mean session_timeout_ms\\?\\)",
        ),
        ("[broker]\nsession_timeout_ms = 5", "unknown setting \\[broker\\] session_timeout_ms"),
        ("auth = 'ture'", "invalid auth in .*='ture': expected a boolean"),
        ("[coordinator]\nauth = 1", "invalid auth in .* \\[coordinator\\]=1: expected a boolean"),
        ("auth = [", "is not valid TOML"),
    ],
)
def test_a_bad_file_is_refused(tmp_path: Path, text: str, message: str) -> None:
    path = write(tmp_path, text)
    with pytest.raises(SettingsError, match=message):
        load("coordinator", {"config": str(path)}, {})


def test_a_missing_file_is_refused(tmp_path: Path) -> None:
    with pytest.raises(SettingsError, match="cannot read the config file"):
        load("client", {}, {"CONVEYOR_CONFIG": str(tmp_path / "nope.toml")})
    assert config_path(None, {}) is None


def test_unknown_variables_get_a_warning_naming_the_closest_known_one() -> None:
    env = {
        "CONVEYOR_AUTHH": "true",
        "CONVEYOR_TOKEN": "x",
        "CONVEYOR_TEST_TLS": "1",  # the test suite's own
        "CONVEYOR_PUBLISH_BROKER_4": "7704",  # compose's
        "CONVEYOR_IMAGE": "conveyor:1",
        "CONVEYOR_XYZZY": "1",
        "OTHER": "1",
    }
    assert env_warnings(env) == [
        "unknown environment variable CONVEYOR_AUTHH (did you mean CONVEYOR_AUTH?); it is ignored",
        "unknown environment variable CONVEYOR_XYZZY; it is ignored",
    ]


def test_flags_variables_and_file_keys_follow_the_setting_names() -> None:
    for item in catalog.every_setting():
        assert item.env[0] == "CONVEYOR_" + item.name.upper()
        assert item.flag in (None, "--" + item.name.replace("_", "-"))
        assert item.name in catalog.file_keys()[item.services[0]] or item in catalog.CHOOSE_THE_FILE


_KNOWN_ENV = sorted(n for n in catalog.known_env() if not n.endswith("_FILE"))
_VALUES = st.one_of(st.text(max_size=30), st.integers(-5, 10**6).map(str), st.just("true"))


@given(st.dictionaries(st.sampled_from(_KNOWN_ENV), _VALUES, max_size=6))
def test_any_environment_resolves_or_is_refused_with_one_line(env: dict[str, str]) -> None:
    env = {k: v for k, v in env.items() if k != "CONVEYOR_CONFIG"}
    for service in ("coordinator", "broker", "client"):
        try:
            load(service, {}, env, require=False)
        except SettingsError as error:
            assert "\n" not in error.message and error.message.startswith("invalid CONVEYOR_")


_TOML_VALUES = st.one_of(
    st.text(max_size=20), st.integers(-5, 10**6), st.booleans(), st.floats(allow_nan=False)
)


@given(
    st.dictionaries(
        st.sampled_from(sorted(catalog.file_keys()["broker"] - {"cluster_secret_file"})),
        _TOML_VALUES,
        max_size=6,
    )
)
def test_any_config_file_resolves_or_is_refused_with_one_line(values: dict[str, object]) -> None:
    import json
    import tempfile

    # TOML basic strings accept JSON's escapes; numbers and booleans are written alike.
    text = "[broker]\n" + "".join(f"{k} = {json.dumps(v)}\n" for k, v in values.items())
    with tempfile.TemporaryDirectory() as directory:
        path = Path(directory) / "c.toml"
        path.write_text(text)
        try:
            load("broker", {"config": str(path)}, {}, require=False)
        except SettingsError as error:
            assert "\n" not in error.message
