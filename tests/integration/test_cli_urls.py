"""A wrong ``CONVEYOR_URL`` as a new user types it: one clear line at once, never a minute
of retries (cli/preflight.py); a broker's URL is named as one."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Iterator

import pytest

import conveyor
from conveyor.protocol.errors import InvalidRequestError
from tests.integration.cluster import Cluster, free_port


@pytest.fixture(scope="module")
def url_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    c = Cluster(tmp_path_factory.mktemp("urls"), broker_count=1).start()
    try:
        yield c
    finally:
        c.stop()


def produce_with(url: str) -> tuple[subprocess.CompletedProcess[str], float]:
    started = time.monotonic()
    done = subprocess.run(
        [sys.executable, "-m", "conveyor", "produce", "demo", "hello"],
        capture_output=True,
        text=True,
        env={**os.environ, "CONVEYOR_URL": url},
        timeout=60,
        check=False,
    )
    return done, time.monotonic() - started


def one_error_line(done: subprocess.CompletedProcess[str], code: int = 1) -> str:
    assert done.returncode == code, done
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1, done.stderr  # no retry lines
    assert lines[0].startswith("conveyor: error: ")
    return lines[0]


@pytest.mark.parametrize("url", ["notaurl", "ftp://127.0.0.1:7700", "http://", "http://h:99999"])
def test_a_malformed_url_fails_at_once(url: str) -> None:
    done, took_s = produce_with(url)
    line = one_error_line(done, code=2)  # a bad setting: refused like a bad flag
    assert f"CONVEYOR_URL={url!r}" in line and "expected an http:// or https:// URL" in line
    assert took_s < 20  # the interpreter's start under load; it used to retry for 60 s


def test_nothing_listening_fails_in_seconds_with_what_to_check() -> None:
    done, took_s = produce_with(f"http://127.0.0.1:{free_port()}")
    line = one_error_line(done)
    assert "connection refused" in line and "is the cluster running" in line
    assert took_s < 20


def test_the_library_says_once_that_nothing_listens() -> None:
    """The library retries a refused connection (a cluster may be starting) until its
    deadline, saying so once, not once per retry (the lines hold a new exception object
    each time: the repeat filter compares their text)."""
    code = (
        "import sys, conveyor\n"
        "with conveyor.Producer(sys.argv[1], max_block_ms=14000) as producer:\n"
        "    try:\n"
        "        producer.send('demo', b'hello').get(timeout=30)\n"
        "    except conveyor.ConveyorError as exc:\n"
        "        print('gave up:', exc.code.name)\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", code, f"http://127.0.0.1:{free_port()}"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith("gave up:"), done.stdout
    retries = [line for line in done.stderr.splitlines() if "metadata refresh failed" in line]
    assert len(retries) == 1, done.stderr  # a retry every few seconds, one line
    assert "retrying" in retries[0]


def test_the_wrong_scheme_for_the_cluster_fails_at_once(url_cluster: Cluster) -> None:
    port = url_cluster.coordinator.port
    if url_cluster.ca is None:  # plain HTTP cluster: https:// cannot work
        line = one_error_line(produce_with(f"https://127.0.0.1:{port}")[0])
        assert "TLS_ERROR" in line and "use http://" in line
    else:  # HTTPS cluster: http:// cannot work
        line = one_error_line(produce_with(f"http://127.0.0.1:{port}")[0])
        assert "use an https:// URL" in line


def test_a_broker_url_is_named_as_a_broker(url_cluster: Cluster) -> None:
    broker_url = url_cluster.brokers[1].url
    line = one_error_line(produce_with(broker_url)[0])
    assert "is a broker, not the coordinator" in line
    # the library hits a coordinator path on the broker: the broker says what it is
    with conveyor.Admin(broker_url) as admin, pytest.raises(InvalidRequestError) as refused:
        admin.list_topics()
    assert "this is a broker (broker 1), not the coordinator" in refused.value.message
    assert url_cluster.url in refused.value.message  # and where the coordinator is


def test_the_right_url_still_works(url_cluster: Cluster) -> None:
    done, _ = produce_with(url_cluster.url)
    assert done.returncode == 0, done.stderr
