from __future__ import annotations

import base64
import contextlib

import pytest
from hypothesis import given
from hypothesis import strategies as st

from conveyor.console import forms
from conveyor.console.browse import PartitionRange, PartitionScan, merge, parse_cursor
from conveyor.console.records import message, render
from conveyor.console.sessions import SessionTable, csrf_ok
from conveyor.protocol.errors import ConveyorError
from conveyor.protocol.messages import FetchedRecord


def test_sessions_expire_when_idle_or_old_and_on_drop() -> None:
    counter = iter(range(1000))
    table = SessionTable(
        idle_ms=100, lifetime_ms=1000, sessions_max=2, new_token=lambda: f"t{next(counter)}"
    )
    sid, session = table.create("user:a", "Bearer x", "token", now_ms=0)
    assert table.get(sid, 99) is not None  # touched at 99
    assert table.get(sid, 198) is not None
    assert table.get(sid, 298) is None  # idle 100 ms
    sid, _ = table.create("user:a", None, "password", now_ms=0)
    for now in range(50, 1000, 50):
        assert table.get(sid, now) is not None
    assert table.get(sid, 1000) is None  # lifetime
    sid, _ = table.create("user:a", None, "password", now_ms=0)
    table.drop(sid)
    assert table.get(sid, 1) is None
    ids = [table.create("p", None, "anonymous", 0)[0] for _ in range(3)]
    assert len(table) == 2 and table.get(ids[0], 1) is None  # the least recent went
    assert csrf_ok(session, session.csrf_token)
    assert not csrf_ok(session, None) and not csrf_ok(session, "") and not csrf_ok(session, "x")


def _record(offset: int, ts: int) -> FetchedRecord:
    return FetchedRecord(offset=offset, timestamp_ms=ts, key=None, value=str(offset))


def test_merge_forward_takes_the_earliest_and_cursors_continue_exactly() -> None:
    ranges = {0: PartitionRange(0, 0, 10), 1: PartitionRange(1, 0, 10)}
    scans = [
        PartitionScan(0, 0, 3, [message("t", 0, _record(o, o * 10)) for o in range(3)], 3),
        PartitionScan(1, 0, 3, [message("t", 1, _record(o, o * 10 + 5)) for o in range(3)], 3),
    ]
    page = merge(scans, ranges, "forward", limit=4, scan_max=100)
    assert [(m.partition, m.offset) for m in page.messages] == [(0, 0), (1, 0), (0, 1), (1, 1)]
    assert page.next_cursor == {0: 2, 1: 2} and page.prev_cursor == {0: 0, 1: 0}
    assert page.at_start and not page.at_end and page.scanned == 6
    back = merge(scans, ranges, "backward", limit=4, scan_max=100)
    assert [(m.partition, m.offset) for m in back.messages] == [(0, 1), (1, 1), (0, 2), (1, 2)]
    assert back.prev_cursor == {0: 1, 1: 1} and back.next_cursor == {0: 3, 1: 3}


def test_merge_reports_an_exhausted_scan_bound() -> None:
    ranges = {0: PartitionRange(0, 0, 1_000)}
    page = merge([PartitionScan(0, 0, 100, [], 100)], ranges, "forward", 50, 100)
    assert page.exhausted and page.messages == [] and page.next_cursor == {0: 100}


@given(st.text(max_size=60))
def test_parse_cursor_never_raises(text: str) -> None:
    parsed = parse_cursor(text, [0, 1])
    assert parsed is None or set(parsed) == {0, 1}


@given(st.binary(max_size=300))
def test_render_any_bytes(data: bytes) -> None:
    shown = render(base64.b64encode(data).decode(), "base64")
    assert shown.size_bytes == len(data)
    assert shown.hex.startswith("00000000") or not data
    assert shown.kind in ("binary", "text", "json")


def test_render_detects_json_text_and_null() -> None:
    assert render('{"a": 1}', "utf8").kind == "json"
    assert render("plain", "utf8").kind == "text"
    assert render(None, "utf8").kind == "null"
    assert render(base64.b64encode(b"\xff\x00\x01").decode(), "base64").kind == "binary"


@given(
    st.dictionaries(
        st.sampled_from(
            [
                "name",
                "partitions",
                "replication_factor",
                "retention_ms",
                "flush",
                "key",
                "value",
                "partition",
                "headers",
                "to",
                "offset",
                "time",
                "topic",
            ]
        ),
        st.text(max_size=30),
    )
)
def test_form_parsers_raise_only_typed_errors(form: dict[str, str]) -> None:
    for parse in (
        forms.create_topic,
        forms.produce,
        forms.reset_target,
        forms.acl_rule,
        forms.token_request,
    ):
        with contextlib.suppress(ConveyorError):
            parse(form)


def test_integers_are_ascii_digits() -> None:
    """'²' is a digit to str.isdigit() and not to int(): a typed error, never a crash."""
    for raw in ("²", "1²", "٣"):
        with pytest.raises(ConveyorError):
            forms.produce({"partition": raw, "topic": "t", "value": "v"})


def test_headers_and_times() -> None:
    assert forms.headers("a: 1\n\nb:2") == {"a": "1", "b": "2"}
    with pytest.raises(ConveyorError):
        forms.headers("no colon")
    assert forms.moment_ms("1970-01-01T00:00:01Z") == 1000
    assert forms.moment_ms("1970-01-01T00:00:01") == 1000  # UTC without a zone


def test_alter_config_sends_only_what_the_form_changed() -> None:
    was = {
        "retention_ms": 1000,
        "flush": "always",
        "min_insync_replicas": None,
        "unclean_leader_election": False,
    }
    drawn = {f"was_{n}": forms.config_text(v) for n, v in was.items()}
    form = {
        **drawn,
        "retention_ms": "2000",  # changed
        "flush": "always",  # as drawn: left alone
        "min_insync_replicas": "",  # as drawn (automatic)
        "unclean_leader_election": "true",
    }
    request = forms.alter_config(form)
    assert request.set == {"retention_ms": 2000, "unclean_leader_election": True}
    assert request.reset == []
    cleared = forms.alter_config({**drawn, "retention_ms": ""})
    assert cleared.set == {} and cleared.reset == ["retention_ms"]
    with pytest.raises(ConveyorError, match="nothing changed"):
        forms.alter_config({**drawn, "retention_ms": "1000"})
    with pytest.raises(ConveyorError, match="whole number"):
        forms.alter_config({**drawn, "retention_ms": "soon"})
    with pytest.raises(ConveyorError, match="finite"):
        forms.alter_config({"min_cleanable_dirty_ratio": "nan"})
    assert forms.alter_config({"min_cleanable_dirty_ratio": "0.25"}).set == {
        "min_cleanable_dirty_ratio": 0.25
    }


def test_add_partitions_must_grow() -> None:
    assert forms.add_partitions({"partitions": "5"}, 3).partitions == 5
    for raw in ("3", "2", "", "x", "10001"):
        with pytest.raises(ConveyorError):
            forms.add_partitions({"partitions": raw}, 3)


@given(
    st.dictionaries(
        st.sampled_from(
            [n for n, _ in forms.EDITABLE_CONFIGS]
            + [f"was_{n}" for n, _ in forms.EDITABLE_CONFIGS]
            + ["partitions"]
        ),
        st.one_of(st.text(max_size=30), st.sampled_from(["", "1", "-1", "true", "0.5", "1e400"])),
    )
)
def test_config_and_partition_forms_raise_only_typed_errors(form: dict[str, str]) -> None:
    with contextlib.suppress(ConveyorError):
        request = forms.alter_config(form)
        assert not set(request.set) & set(request.reset)
    with contextlib.suppress(ConveyorError):
        assert forms.add_partitions(form, 3).partitions > 3
