"""librdkafka's own tests against a real Conveyor cluster: the short subset of `make test`.

`make test-kafka` runs the whole selection (tests/kafka/librdkafka_suite.py); here the
entries marked ``quick`` run in librdkafka's quick mode against one cluster shaped like
its default scenario. The first run on a machine builds librdkafka (about 3 minutes, then
cached outside the tree: tests/kafka/librdkafka_build.py).
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.kafka.librdkafka_build import UnavailableError, ensure_built
from tests.kafka.librdkafka_selection import Entry, runnable
from tests.kafka.librdkafka_suite import conveyor_cluster, run_entry, write_conf

_BUILD_TIMEOUT_S = 1800


@pytest.fixture(scope="module")
def runner_dir() -> Path:
    try:
        return ensure_built()
    except UnavailableError as e:
        pytest.skip(str(e))


@pytest.fixture(scope="module")
def suite_conf(
    runner_dir: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[Path, Path]]:
    root = tmp_path_factory.mktemp("librdkafka")
    with conveyor_cluster(root / "cluster") as cluster:
        conf = root / "test.conf"
        write_conf(conf, cluster.bootstrap)
        yield conf, root


@pytest.mark.timeout(_BUILD_TIMEOUT_S)
@pytest.mark.parametrize("entry", runnable(quick_only=True), ids=lambda e: e.key)
def test_librdkafka_quick(runner_dir: Path, suite_conf: tuple[Path, Path], entry: Entry) -> None:
    conf, log_dir = suite_conf
    result = run_entry(runner_dir, conf, entry, log_dir, quick=True)
    if result.outcome == "skipped":
        pytest.skip(result.reason)
    name = entry.key.replace("/", "_").replace("@", "_")
    log = (log_dir / f"{name}.log").read_text(errors="replace")
    assert result.outcome == "passed", f"{result.reason}\n--- runner output (tail):\n{log[-4000:]}"
