"""The librdkafka suite runner's own logic (summary parsing, verdicts, integrity check,
selection table), on captured runner output; test_librdkafka_live.py runs the suite."""

from __future__ import annotations

import base64
import hashlib
from pathlib import Path

import pytest

from tests.kafka.librdkafka_build import UnavailableError, verify_integrity
from tests.kafka.librdkafka_selection import GROUP_TESTS, SELECTION, Entry
from tests.kafka.librdkafka_suite import (
    MARK_END,
    MARK_START,
    Result,
    judge,
    markdown_table,
    merged,
    parse_summary,
    table_results,
    update_markdown,
)

_SUMMARY = """\
TEST 20261202140508 (bare, scenario default) SUMMARY
#==================================================================#
|\x1b[32m <MAIN>                                   |     PASSED |   0.200s \x1b[0m|
|\x1b[32m 0022_consume_batch                       |     PASSED |   4.250s \x1b[0m|
|\x1b[31m 0022_consume_batch_local                 |     FAILED |   0.030s \x1b[0m|\x1b[31m \
0022-consume_batch.c:120: assert failed: expected 10 messages\x1b[0m
|\x1b[36m 0052_msg_timestamps                      |    SKIPPED |   0.001s \x1b[0m|\x1b[36m \
Test cluster requires authentication/SSL\x1b[0m
#==================================================================#
"""


def test_parse_summary_reads_every_row_with_its_reason() -> None:
    rows = parse_summary(_SUMMARY)
    assert [(r.name, r.state) for r in rows] == [
        ("0022_consume_batch", "PASSED"),
        ("0022_consume_batch_local", "FAILED"),
        ("0052_msg_timestamps", "SKIPPED"),
    ]
    assert rows[1].detail == "0022-consume_batch.c:120: assert failed: expected 10 messages"
    assert rows[1].seconds == 0.030


def test_judge_outcomes() -> None:
    entry = Entry("0022")
    failed = judge(entry, 1, _SUMMARY, 4.3)
    assert failed.outcome == "failed"
    assert "expected 10 messages" in failed.reason
    passed = judge(entry, 0, _SUMMARY.replace("FAILED", "PASSED"), 4.3)
    assert passed.outcome == "passed"
    only_skips = "\n".join(line for line in _SUMMARY.splitlines() if "0022" not in line)
    assert judge(entry, 0, only_skips, 0.1).outcome == "skipped"
    assert judge(entry, None, "", 600).reason == "timed out after 600s"
    assert judge(entry, 0, "no table", 1).outcome == "failed"  # no summary: never a pass
    assert judge(entry, -11, _SUMMARY.replace("FAILED", "PASSED"), 1).outcome == "failed"


def test_integrity_is_checked_on_the_bytes() -> None:
    data = b"librdkafka"
    good = "sha512-" + base64.b64encode(hashlib.sha512(data).digest()).decode()
    verify_integrity(data, good)
    with pytest.raises(UnavailableError, match="integrity mismatch"):
        verify_integrity(data + b"!", good)


def test_selection_lists_each_entry_once_with_a_reason_or_a_run() -> None:
    keys = [e.key for e in SELECTION]
    assert len(keys) == len(set(keys))
    assert all(e.test.isdigit() and len(e.test) == 4 for e in SELECTION)
    beyond = {"0103", "0112", "0129"}  # transaction tests, and 0112 (not a group test)
    assert all(e.test <= "0100" or e.test in GROUP_TESTS or e.test in beyond for e in SELECTION)
    assert {e.key for e in SELECTION if e.protocol} == {
        f"{e.key}@consumer"
        for e in SELECTION
        if e.test in GROUP_TESTS and not e.protocol and not e.skip
    }
    assert not [e.key for e in SELECTION if e.quick and e.skip]


def test_merge_replaces_the_rows_that_ran_and_keeps_the_others(tmp_path: Path) -> None:
    doc = tmp_path / "compat.md"
    doc.write_text(f"intro\n{MARK_START}\n{MARK_END}\noutro\n")
    earlier = [
        Result("0001", "passed", 6.2, ""),
        Result("0014", "skipped", 0.0, "needs Kafka consumer groups"),
        Result("0092", "skipped", 0.0, "an old reason"),
        Result("9999", "failed", 1.0, "a | b"),  # no longer in the selection
    ]
    update_markdown(doc, markdown_table(earlier))
    assert table_results(doc) == earlier
    rows = {r.key: r for r in merged(doc, [Result("0014@consumer", "failed", 3.0, "x | y")])}
    assert rows["0001"] == earlier[0]  # not run: kept
    assert rows["0014"] == earlier[1]  # this protocol not run: kept
    assert rows["0014@consumer"].reason == "x | y"
    assert rows["0092"].reason.startswith("needs MessageSet")  # the selection's reason
    assert "9999" not in rows and "0018" not in rows  # gone; never recorded
    assert doc.read_text().startswith("intro\n") and doc.read_text().endswith("outro\n")
