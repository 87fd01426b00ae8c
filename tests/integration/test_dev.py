"""``make run`` (``conveyor dev``) as a new user drives it: a broker killed to watch failover
is shown and restarted while the others keep running; ``stop-broker`` keeps one down
(its partitions fail over) until ``start-broker``; Ctrl-C stops everything and make exits
0."""

from __future__ import annotations

import fcntl
import json
import os
import signal
import subprocess
import sys
import termios
from pathlib import Path

import pytest

from tests.integration.cluster import free_port_block, http_ok, wait_for

ROOT = Path(__file__).resolve().parents[2]
STAMP = Path(sys.prefix) / ".installed"  # the Makefile's "venv is installed" stamp


def conveyor(url: str, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "conveyor", *args],
        capture_output=True,
        text=True,
        env=dict(os.environ, CONVEYOR_URL=url),
        timeout=90,
        check=False,
    )


def leaders(url: str, topic: str) -> set[int | None]:
    described = conveyor(url, "topic", "describe", topic, "--json")
    assert described.returncode == 0, described.stderr
    return {p["leader"] for p in json.loads(described.stdout)["partitions"]}


@pytest.mark.skipif(not STAMP.exists(), reason=f"the tests do not run from a `make` venv: {STAMP}")
def test_make_run_survives_a_broker_death_and_stops_cleanly(tmp_path: Path) -> None:
    port = free_port_block(3)
    url = f"http://127.0.0.1:{port}"
    data = tmp_path / "dev"
    broker_2 = f"http://127.0.0.1:{port + 2}"
    log_path = tmp_path / "make-run.log"
    argv = ["make", "--no-print-directory", "-C", str(ROOT), "-o", str(STAMP), "run"]
    dev_args = f"--brokers 2 --port {port} --kafka-port {free_port_block(2)} --data {data}"
    argv += [f"VENV={sys.prefix}", f"DEV_ARGS={dev_args}"]
    # A terminal of its own (a pty), so that Ctrl-C is a real ^C typed on it: the line
    # discipline sends SIGINT to the terminal's foreground process group.
    terminal, terminal_slave = os.openpty()
    with log_path.open("ab") as log:
        make = subprocess.Popen(
            argv,
            stdin=terminal_slave,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            preexec_fn=lambda: fcntl.ioctl(0, termios.TIOCSCTTY, 0),  # noqa: PLW1509
        )
    os.close(terminal_slave)

    def log_text() -> str:
        return log_path.read_text(errors="replace")

    def dev(*args: str) -> subprocess.CompletedProcess[str]:
        return conveyor(url, "dev", *args, "--data", str(data))

    def state() -> dict[str, dict[str, object]]:
        raw = json.loads((data / ".dev" / "state.json").read_text())
        return {c["name"]: c for c in raw["children"]}

    try:
        wait_for(lambda: "ready. In another terminal" in log_text(), 90, "make run ready")
        created = conveyor(
            url, "topic", "create", "demo", "--partitions", "4", "--replication-factor", "2"
        )
        assert created.returncode == 0, created.stderr
        wait_for(lambda: leaders(url, "demo") == {1, 2}, 30, "leaders on both brokers")

        # A crash: shown, the others keep running, restarted.
        victim = state()["broker-2"]["pid"]
        assert isinstance(victim, int)
        os.kill(victim, signal.SIGKILL)
        wait_for(lambda: "broker-2 exited (killed by SIGKILL)" in log_text(), 10, "the death")
        assert http_ok(url + "/readyz") and http_ok(f"http://127.0.0.1:{port + 1}/readyz")
        wait_for(lambda: "broker-2 is ready again" in log_text(), 60, "the restart")
        assert state()["broker-2"]["pid"] != victim and http_ok(broker_2 + "/readyz")

        # On command: down until started again; its partitions fail over to broker 1.
        stopped = dev("stop-broker", "2")
        assert stopped.returncode == 0, stopped.stderr
        assert "stays down until `conveyor dev start-broker 2`" in stopped.stdout
        assert state()["broker-2"]["state"] == "held" and not http_ok(broker_2 + "/healthz")
        wait_for(lambda: leaders(url, "demo") == {1}, 30, "failover to broker 1")
        produced = conveyor(url, "produce", "demo", "--key", "k", "during failover")
        assert produced.returncode == 0, produced.stderr
        assert state()["broker-2"]["state"] == "held"  # not restarted behind our back
        started = dev("start-broker", "2")
        assert started.returncode == 0, started.stderr
        assert http_ok(broker_2 + "/readyz")
        assert log_text().count("broker-2 started again") == 2  # the crash, start-broker

        assert dev("stop-broker", "7").returncode == 1  # no such broker: one clear line
    finally:
        os.write(terminal, b"\x03")  # Ctrl-C
        try:
            code = make.wait(90)
        finally:
            os.close(terminal)
            if make.poll() is None:
                os.killpg(make.pid, signal.SIGKILL)
    assert code == 0, log_text()[-3000:]  # make saw conveyor dev exit 0, not an Interrupt
    assert "Interrupt" not in log_text()
    assert "stopping the cluster" in log_text()
    for p in range(port, port + 3):
        assert not http_ok(f"http://127.0.0.1:{p}/healthz")
