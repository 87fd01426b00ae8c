"""Log lines: the fields every line has, the three formats, request ids, redaction."""

from __future__ import annotations

import io
import json
import logging
import re
from collections.abc import Iterator

import pytest
from hypothesis import given
from hypothesis import strategies as st

from conveyor.transport.access import request_id_for
from conveyor.transport.logs import REQUEST_ID, logfmt_value, setup_logging


@pytest.fixture
def restore_logging() -> Iterator[None]:
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    yield
    root.handlers[:] = handlers
    root.setLevel(level)


def emit(log_format: str, broker_id: int | None = None, **extra: object) -> str:
    stream = io.StringIO()
    setup_logging("broker", "INFO", log_format, broker_id=broker_id, stream=stream)
    logging.getLogger("conveyor.test").info(
        "fencing broker %d: %s", 3, "session expired", extra=extra
    )
    return stream.getvalue()


def test_logfmt_has_time_level_service_broker_logger_and_message(restore_logging: None) -> None:
    line = emit("logfmt", broker_id=2, topic="orders", partition=4)
    assert line.endswith("\n") and line.count("\n") == 1
    assert re.fullmatch(
        r"time=\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z level=info service=broker broker=2 "
        r'logger=conveyor\.test msg="fencing broker 3: session expired" topic=orders partition=4\n',
        line,
    ), line


def test_request_scoped_lines_carry_the_request_id(restore_logging: None) -> None:
    token = REQUEST_ID.set("req-42")
    try:
        fields = json.loads(emit("json"))
    finally:
        REQUEST_ID.reset(token)
    assert fields["request_id"] == "req-42"
    assert (fields["level"], fields["service"], fields["msg"]) == (
        "info",
        "broker",
        "fencing broker 3: session expired",
    )
    assert "request_id" not in json.loads(emit("json"))


def test_text_for_people(restore_logging: None) -> None:
    line = emit("text", broker_id=1, topic="orders")
    assert (
        " INFO    broker-1 conveyor.test: fencing broker 3: session expired [topic=orders]" in line
    )


def test_auto_is_logfmt_off_a_terminal(restore_logging: None) -> None:
    assert emit("auto").split()[1] == "level=info"


def test_fields_named_like_secrets_are_redacted(restore_logging: None) -> None:
    line = emit("logfmt", password="hunter2", cluster_token="cvt_x", authorization="Basic y")
    assert "hunter2" not in line and "cvt_x" not in line and "Basic y" not in line
    assert line.count("(redacted)") == 3


def test_a_traceback_stays_on_one_line_in_logfmt(restore_logging: None) -> None:
    stream = io.StringIO()
    setup_logging("coordinator", "INFO", "logfmt", stream=stream)
    try:
        raise ValueError("boom")
    except ValueError:
        logging.getLogger("x").exception("failed")
    assert stream.getvalue().count("\n") == 1
    assert "exc=" in stream.getvalue() and "ValueError: boom" in stream.getvalue()


@given(st.text())
def test_any_logfmt_value_is_one_token_that_reads_back(value: str) -> None:
    encoded = logfmt_value(value)
    assert "\n" not in encoded and "\r" not in encoded
    if encoded.startswith('"'):
        assert json.loads(encoded) == value
    else:
        assert encoded == value and re.fullmatch(r'[^\s"=\\]+', encoded)


@given(st.text(max_size=200))
def test_request_ids_from_clients_are_kept_only_when_sane(given_id: str) -> None:
    chosen = request_id_for(given_id)
    assert re.fullmatch(r"[A-Za-z0-9._:-]{1,128}", chosen)
    assert chosen == given_id or not re.fullmatch(r"[A-Za-z0-9._:-]{1,128}", given_id)
