"""Run librdkafka's own test suite against a real Conveyor cluster and record the results.

    python -m tests.kafka.librdkafka_suite [--quick] [--tests 0001,0081] [--bootstrap B]
        [--protocol classic|consumer] [--out DIR] [--markdown docs/kafka-compatibility.md]
    python -m tests.kafka.librdkafka_suite --merge DIR/results.json ... --markdown FILE

Like Redpanda's rptest ``LibrdkafkaTest``: one ``test-runner`` process per test (``TESTS=``,
and ``SUBTESTS=`` where one test is split), against a cluster shaped like librdkafka's
"default" scenario (3 brokers, topic auto-creation on, 4 partitions per new topic), which
this script starts itself on free ports (``tests/integration/cluster.py``, every broker
with a Kafka listener) unless ``--bootstrap`` names an existing one. The brokers' clients
see the version in ``TEST_KAFKA_VERSION``: tests gate features on it.

Each entry of ``librdkafka_selection.SELECTION`` ends as passed, failed (with the runner's
own failure text), or skipped (the selection's reason, or the test's own TEST_SKIP text).
``--markdown`` rewrites the results table between the markers in that file; with
``--merge`` (no tests run) the rows of some runs (say, the group tests, one lane per
protocol) replace theirs in the table and the other rows stay.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterable, Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path

from tests.integration.cluster import Cluster
from tests.kafka.librdkafka_build import LIBRDKAFKA_VERSION, ensure_built
from tests.kafka.librdkafka_selection import SELECTION, Entry, runnable

# What the test runner is told the broker is: Conveyor serves the Kafka 4.0 protocol
# subset (RecordBatch v2 only, no MessageSet v0/v1), and tests gate on this version.
TEST_KAFKA_VERSION = "4.0.0"
MARK_START = "<!-- librdkafka-results:start -->"
MARK_END = "<!-- librdkafka-results:end -->"
_ANSI = re.compile(r"\x1b\[[0-9;]*m|\x1b\(B")
# |<color> 0001_multiobj                            |     PASSED |   3.123s | reason
_SUMMARY = re.compile(r"^\|\s*(\d{4}_\S+)\s*\|\s*([A-Z ]+?)\s*\|\s*([\d.]+)s\s*\|\s?(.*)$")


@dataclass(frozen=True)
class SubResult:
    name: str  # the runner's test name, e.g. 0022_consume_batch
    state: str  # PASSED, FAILED, SKIPPED, RUNNING, NOT STARTED, DNS
    seconds: float
    detail: str


@dataclass(frozen=True)
class Result:
    key: str  # Entry.key
    outcome: str  # passed | failed | skipped
    seconds: float
    reason: str  # why it failed or was skipped


def parse_summary(output: str) -> list[SubResult]:
    """The runner's closing table (``test_summary``), one row per registered test run."""
    rows = []
    for line in _ANSI.sub("", output).splitlines():
        match = _SUMMARY.match(line.strip())
        if match:
            name, state, seconds, detail = match.groups()
            rows.append(SubResult(name, state, float(seconds), detail.strip()))
    return rows


def judge(entry: Entry, returncode: int | None, output: str, seconds: float) -> Result:
    """Turn one runner process's exit status and summary into a result."""
    rows = parse_summary(output)
    failed = [r for r in rows if r.state not in ("PASSED", "SKIPPED")]
    if returncode is None:
        return Result(entry.key, "failed", seconds, f"timed out after {seconds:.0f}s")
    if failed or returncode != 0:
        return Result(entry.key, "failed", seconds, _last_failure(output, returncode))
    if rows and all(r.state == "SKIPPED" for r in rows):
        reason = "; ".join(f"{r.name}: {r.detail}" for r in rows)
        return Result(entry.key, "skipped", seconds, f"skipped by the test: {reason}")
    if not rows:
        return Result(entry.key, "failed", seconds, "no summary from the runner")
    return Result(entry.key, "passed", seconds, "")


def _last_failure(output: str, returncode: int) -> str:
    """The runner's own words: the line after its first ``### Test ... failed at ...``
    (not the closing ``<MAIN>`` complaint about threads a failed test left behind)."""
    lines = _ANSI.sub("", output).splitlines()
    for i in range(len(lines) - 1):
        if lines[i].startswith("### Test") and '"<MAIN>"' not in lines[i]:
            where = lines[i].split(" failed at ", 1)[-1].split(" at ", 1)[0]
            return f"{lines[i + 1].strip()[:300]} ({where})"
    tail = [line for line in lines if "FAIL" in line]
    return f"exit status {returncode}" + (f": {tail[-1].strip()[:300]}" if tail else "")


def write_conf(path: Path, bootstrap: str) -> None:
    path.write_text(
        f"bootstrap.servers={bootstrap}\n"
        # The machine is shared (2 cores, other agents): librdkafka's CI setting.
        "test.timeout.multiplier=3\n"
    )


def run_entry(tests_dir: Path, conf: Path, entry: Entry, log_dir: Path, quick: bool) -> Result:
    env = dict(
        os.environ,
        TESTS=entry.test,
        SUBTESTS=entry.subtests,
        RDKAFKA_TEST_CONF=str(conf),
        TEST_KAFKA_VERSION=TEST_KAFKA_VERSION,
        TEST_CONSUMER_GROUP_PROTOCOL=entry.protocol or "classic",
        LD_LIBRARY_PATH=f"{tests_dir.parent / 'src'}:{tests_dir.parent / 'src-cpp'}",
    )
    env.pop("CI", None)  # CI would change concurrency and timeouts behind our back
    argv = [str(tests_dir / "test-runner"), "-L", *(["-Q"] if quick else [])]
    log = log_dir / f"{entry.key.replace('/', '_').replace('@', '_')}.log"
    started = time.monotonic()
    returncode: int | None
    with log.open("wb") as out:
        process = subprocess.Popen(
            argv, cwd=tests_dir, env=env, stdout=out, stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
        )  # fmt: skip
        try:
            returncode = process.wait(entry.timeout_s)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(10)
            returncode = None
    seconds = time.monotonic() - started
    return judge(entry, returncode, log.read_text(errors="replace"), seconds)


@contextmanager
def conveyor_cluster(root: Path) -> Iterator[Cluster]:
    """librdkafka's default scenario: 3 brokers, auto-create with 4 partitions."""
    cluster = Cluster(root, broker_count=3, coordinator_args=["--default-partitions", "4"])
    try:
        yield cluster.start()
    finally:
        cluster.stop()


def run_suite(
    entries: Iterable[Entry], bootstrap: str | None, out: Path, quick: bool
) -> list[Result]:
    """Run ``entries`` one by one against ``bootstrap`` (None: a cluster of our own)."""
    out.mkdir(parents=True, exist_ok=True)
    tests_dir = ensure_built(out / "build.log")
    results = []
    with tempfile.TemporaryDirectory(prefix="librdkafka-cluster-") as tmp, ExitStack() as stack:
        if bootstrap is None:
            bootstrap = stack.enter_context(conveyor_cluster(Path(tmp))).bootstrap
        conf = out / "test.conf"
        write_conf(conf, bootstrap)
        for entry in entries:
            result = run_entry(tests_dir, conf, entry, out, quick)
            print(f"{result.key:40} {result.outcome:8} {result.seconds:6.1f}s {result.reason}")
            results.append(result)
    return results


def _selection_skip(entry: Entry) -> Result:
    return Result(entry.key, "skipped", 0.0, entry.skip)


def summary_line(results: list[Result]) -> str:
    counts = {o: sum(r.outcome == o for r in results) for o in ("passed", "failed", "skipped")}
    return f"{counts['passed']} passed, {counts['failed']} failed, {counts['skipped']} skipped"


def markdown_table(results: list[Result]) -> str:
    lines = [
        f"librdkafka {LIBRDKAFKA_VERSION}, tests 0000-0100 and the group tests beyond, "
        f"`TEST_KAFKA_VERSION={TEST_KAFKA_VERSION}`: {summary_line(results)}.",
        "",
        "| test | result | seconds | why |",
        "|---|---|---|---|",
    ]
    for r in results:
        why = r.reason.replace("|", "\\|")
        seconds = f"{r.seconds:.1f}" if r.outcome != "skipped" or r.seconds else ""
        lines.append(f"| {r.key} | {r.outcome} | {seconds} | {why} |")
    return "\n".join(lines)


_ROW = re.compile(r"^\| (\S+) \| (passed|failed|skipped) \| ([\d.]*) \| (.*) \|$")


def table_results(path: Path) -> list[Result]:
    """The rows of the results table in ``path`` (what the last recorded runs found)."""
    text = path.read_text()
    table = text[text.index(MARK_START) : text.index(MARK_END)]
    rows = (_ROW.match(line) for line in table.splitlines())
    return [Result(m[1], m[2], float(m[3] or 0), m[4].replace("\\|", "|")) for m in rows if m]


def merged(path: Path, runs: list[Result]) -> list[Result]:
    """One row per entry of the selection: from ``runs`` when they ran it, else the
    selection's skip reason, else the table's current row (entries neither ran nor
    recorded are left out)."""
    ran = {r.key: r for r in runs}
    recorded = {r.key: r for r in table_results(path)}
    rows = []
    for entry in SELECTION:
        row = ran.get(entry.key) or (_selection_skip(entry) if entry.skip else None)
        row = row or recorded.get(entry.key)
        if row is not None:
            rows.append(row)
    return sorted(rows, key=lambda r: r.key)


def update_markdown(path: Path, table: str) -> None:
    text = path.read_text()
    start, end = text.index(MARK_START) + len(MARK_START), text.index(MARK_END)
    path.write_text(text[:start] + "\n" + table + "\n" + text[end:])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="the short subset, quick mode")
    parser.add_argument("--tests", help="comma-separated test numbers (default: the selection)")
    parser.add_argument("--bootstrap", help="run against this cluster instead of starting one")
    parser.add_argument("--out", type=Path, default=Path(tempfile.gettempdir()) / "librdkafka")
    parser.add_argument("--markdown", type=Path, help="rewrite the results table in this file")
    parser.add_argument(
        "--protocol",
        choices=("classic", "consumer"),
        help="only the entries run with this group protocol (classic: also non-group tests)",
    )
    parser.add_argument(
        "--merge",
        type=Path,
        nargs="+",
        metavar="RESULTS_JSON",
        help="run nothing: put these runs' results.json rows into --markdown's table",
    )
    args = parser.parse_args(argv)
    if args.merge:
        runs = [Result(**r) for path in args.merge for r in json.loads(path.read_text())]
        if args.markdown:
            update_markdown(args.markdown, markdown_table(merged(args.markdown, runs)))
        return 0
    protocol = {"classic": "", "consumer": "consumer", None: None}[args.protocol]
    chosen = [e for e in SELECTION if protocol is None or e.protocol == protocol]
    if args.tests:  # named tests run even when the selection skips them
        wanted = set(args.tests.split(","))
        entries = [e for e in chosen if e.test in wanted or e.key in wanted]
        results = run_suite(entries, args.bootstrap, args.out, args.quick)
    else:
        entries = [e for e in runnable(args.quick) if e in chosen]
        results = run_suite(entries, args.bootstrap, args.out, args.quick)
        if not args.quick:
            results += [_selection_skip(e) for e in chosen if e.skip]
    results.sort(key=lambda r: r.key)
    (args.out / "results.json").write_text(json.dumps([asdict(r) for r in results], indent=1))
    if args.markdown:
        update_markdown(args.markdown, markdown_table(results))
    print(f"librdkafka: {summary_line(results)} (logs in {args.out})")
    return 1 if any(r.outcome == "failed" for r in results) else 0


if __name__ == "__main__":
    sys.exit(main())
