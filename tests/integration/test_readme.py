"""Every code block of the README, run as written against a real cluster: the quick
start's commands (the consumer of "terminal 2" in the background, as a reader runs it),
the Python snippet (which must run to completion), and the curl examples.

A command is left out only by an explicit rule below, with the test that covers it
instead; any other command that fails (or a Python block that does not end) fails here.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.integration.cluster import Cluster, wait_for
from tests.integration.docs import (
    ROOT,
    CodeBlock,
    code_blocks,
    run_shell,
    shell_commands,
    shell_env,
)

README = ROOT / "README.md"
# command (or prefix) -> why it is not run here
NOT_RUN = {
    "make run": "this test's cluster stands in for it (tests/integration/test_dev.py runs it)",
    "make test": "that is this suite",
    "source .venv/bin/activate": "this venv is first on PATH",
    "conveyor dev ": "needs `conveyor dev` running (tests/integration/test_dev.py runs these)",
}


def not_run(command: str) -> str | None:
    for known, why in NOT_RUN.items():
        if command == known or (known.endswith(" ") and command.startswith(known)):
            return why
    return None


def is_long_running(command: str) -> bool:
    """The quick start's consumer waits for messages until Ctrl-C."""
    return command.startswith("conveyor consume") and "--max" not in command


@pytest.fixture(scope="module")
def readme_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    c = Cluster(tmp_path_factory.mktemp("readme"), broker_count=1).start()
    try:
        yield c
    finally:
        c.stop()


def run_python(block: CodeBlock, env: dict[str, str], tmp_path: Path) -> None:
    script = tmp_path / f"readme-{block.line}.py"
    script.write_text(block.text)
    done = subprocess.run(
        [sys.executable, str(script)],
        capture_output=True,
        text=True,
        env=env,
        timeout=90,  # the snippet must end by itself
        check=False,
    )
    assert done.returncode == 0, f"README.md:{block.line}\n{done.stderr}"


def as_run_here(command: str, cluster: Cluster) -> str | None:
    """The command as this test runs it, or None to leave it out (see ``NOT_RUN``)."""
    if not_run(command) is not None:
        return None
    if "localhost:7701" in command:  # the curl examples, written for the dev cluster
        if cluster.ca is not None:
            return None  # they are plain HTTP; the HTTPS pass leaves them out
        if shutil.which("curl") is None:
            pytest.skip("curl is not installed")
        return command.replace("localhost:7701", f"127.0.0.1:{cluster.brokers[1].port}")
    if "127.0.0.1:9092" in command:  # the kcat examples: broker 1's Kafka listener
        kafka_port = cluster.brokers[1].kafka_port
        if cluster.ca is not None or kafka_port is None:
            return None  # plaintext Kafka for the dev cluster; the HTTPS pass leaves them out
        if shutil.which("kcat") is None:
            pytest.skip("kcat is not installed (scripts/system-deps)")
        return command.replace("127.0.0.1:9092", f"127.0.0.1:{kafka_port}")
    return command


# `bash -c` with SIGINT at its default, as in the reader's terminal: a test run started in
# the background by a non-interactive shell (`make test &`) inherits SIGINT ignored, which
# bash cannot undo and Python keeps, so Ctrl-C would not stop the quick start's consumer.
CTRL_C_STOPS_IT = [
    sys.executable,
    "-c",
    "import os, signal, sys; signal.signal(signal.SIGINT, signal.SIG_DFL);"
    " os.execvp('bash', ['bash', '-c', sys.argv[1]])",
]


def test_the_readme_runs_as_written(readme_cluster: Cluster, tmp_path: Path) -> None:
    env = shell_env(CONVEYOR_URL=readme_cluster.url)
    blocks = code_blocks(README)
    assert {b.lang for b in blocks} >= {"bash", "python"}
    background: list[tuple[str, subprocess.Popen[str], Path]] = []
    ran = 0
    try:
        for block in blocks:
            if block.lang == "python":
                run_python(block, env, tmp_path)
                ran += 1
            for written in shell_commands(block) if block.lang == "bash" else []:
                command = as_run_here(written, readme_cluster)
                if command is None:
                    continue
                if is_long_running(command):
                    log = tmp_path / f"background-{len(background)}.log"
                    with log.open("w") as out:
                        process = subprocess.Popen(
                            [*CTRL_C_STOPS_IT, f"exec {command}"],
                            stdout=out,
                            stderr=subprocess.STDOUT,
                            text=True,
                            env=env,
                            cwd=tmp_path,
                        )
                    background.append((command, process, log))
                    continue
                done = run_shell(command, env, tmp_path)
                assert done.returncode == 0, f"README.md:{block.line}: {command}\n{done.stderr}"
                ran += 1
        assert ran >= 6
        assert background, "the quick start's consumer did not run"
        for command, _, log in background:
            # "terminal 2" shows what "terminal 3" produced
            wait_for(lambda log=log: "hello" in log.read_text(), 30, f"{command} to print")
            assert "world" in log.read_text()
    finally:
        for _, process, _ in background:
            if process.poll() is None:
                process.send_signal(signal.SIGINT)  # Ctrl-C, as the reader stops it
        deadline = time.monotonic() + 30
        for command, process, log in background:
            try:
                code = process.wait(max(1.0, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                process.kill()  # never left running into the worker's later tests
                process.wait()
                raise
            assert code in (0, 130), f"{command} exited {code}: {log.read_text()[-2000:]}"


def test_every_skipped_command_is_still_in_the_readme() -> None:
    """The rules above must not outlive the commands they were written for."""
    commands = [c for b in code_blocks(README) if b.lang == "bash" for c in shell_commands(b)]
    for known in NOT_RUN:
        assert any(c == known or c.startswith(known) for c in commands), known
    assert os.path.exists(ROOT / "tests" / "integration" / "test_dev.py")
