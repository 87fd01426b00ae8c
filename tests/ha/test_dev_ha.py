"""``conveyor dev --ha``: 3 etcd members, 3 coordinators (one active), brokers that know
all three; a takeover when the active one is killed; a clean stop."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

import conveyor
from conveyor.cli.dev_control import DevControl
from tests.ha.conftest import require_etcd
from tests.ha.harness import status
from tests.integration.cluster import free_port_block, http_ok, wait_for


@pytest.mark.slow
def test_dev_ha_runs_three_coordinators_on_etcd_and_fails_over(tmp_path: Path) -> None:
    require_etcd()
    port = free_port_block(201)  # coordinators at +0/+100/+200, brokers +1.., etcd +50..+55
    coordinators = [f"http://127.0.0.1:{port + 100 * i}" for i in range(3)]
    url = ",".join(coordinators)
    argv = [sys.executable, "-m", "conveyor", "dev", "--ha", "--brokers", "2",
            "--kafka-port", str(free_port_block(2)),
            "--port", str(port), "--data", str(tmp_path / "dev")]  # fmt: skip
    log_path = tmp_path / "dev.log"
    with log_path.open("ab") as log:
        dev = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)

    def roles() -> list[str | None]:
        return [(status(u) or {}).get("role") for u in coordinators]

    try:
        wait_for(
            lambda: (
                sorted(map(str, roles())) == ["active", "standby", "standby"]
                and all(http_ok(f"http://127.0.0.1:{port + b}/readyz") for b in (1, 2))
            ),
            90,
            "3 coordinators (one active) and 2 ready brokers",
        )
        wait_for(lambda: f"export CONVEYOR_URL={url}" in log_path.read_text(), 30, "the ready hint")
        with conveyor.Admin(url) as admin:
            admin.create_topic("demo", partitions=2)
        active = roles().index("active")
        old_epoch = (status(coordinators[active]) or {}).get("epoch", 0)
        state = DevControl(tmp_path / "dev").read_state()
        assert state is not None
        pid = next(c.pid for c in state.children if c.name == f"coordinator-{active + 1}")
        assert pid is not None
        os.kill(pid, signal.SIGKILL)

        def new_epoch_active() -> bool:
            # `conveyor dev` restarts the killed coordinator (--restart-dead), and it may
            # win the election as well as a standby: the takeover is a new epoch, anywhere
            for u in coordinators:
                answer = status(u) or {}
                if answer.get("role") == "active" and answer.get("epoch", 0) > old_epoch:
                    return True
            return False

        wait_for(new_epoch_active, 15, "a takeover at a newer epoch")
        with conveyor.Admin(url) as admin:
            assert "demo" in {t.name for t in admin.list_topics()}
        dev.send_signal(signal.SIGINT)
        assert dev.wait(60) == 0, log_path.read_text()[-3000:]
        assert not any(http_ok(u + "/healthz") for u in coordinators)
    finally:
        if dev.poll() is None:
            dev.send_signal(signal.SIGINT)
            dev.wait(60)
