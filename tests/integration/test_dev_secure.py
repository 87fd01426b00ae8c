"""``conveyor dev --tls --auth``: the whole local cluster on HTTPS with auth, and the admin
token it prints working from the CLI."""

from __future__ import annotations

import os
import re
import ssl
import subprocess
import sys
import urllib.request
from pathlib import Path

from tests.integration.cluster import conveyor_dev, free_port, wait_for


def test_dev_tls_auth_runs_https_and_prints_a_working_admin_token(tmp_path: Path) -> None:
    with conveyor_dev(tmp_path, "--tls", "--auth", "--kafka-port", str(free_port())) as dev:
        port, data, log_path = dev.port, dev.data, dev.log_path
        wait_for(lambda: "CONVEYOR_TOKEN=" in log_path.read_text(), 60, "conveyor dev ready")
        output = log_path.read_text()
        token = re.search(r"CONVEYOR_TOKEN=(\S+)", output)
        assert token is not None
        assert f"CONVEYOR_URL=https://127.0.0.1:{port}" in output
        console = f"https://127.0.0.1:{port}/console/"
        assert f"web console: {console}" in output
        # The printed URL serves the console (its sign-in page: auth is on).
        context = ssl.create_default_context(cafile=str(data / "certs" / "ca.pem"))
        with urllib.request.urlopen(console + "login", context=context, timeout=10) as page:
            assert page.status == 200 and b"Sign in" in page.read()
        env = dict(os.environ, CONVEYOR_URL=f"https://127.0.0.1:{port}")
        env["CONVEYOR_CA"] = str(data / "certs" / "ca.pem")
        env.pop("CONVEYOR_TOKEN", None)

        def cli(*args: str, **extra: str) -> subprocess.CompletedProcess[str]:
            return subprocess.run(
                [sys.executable, "-m", "conveyor", *args],
                capture_output=True,
                text=True,
                env={**env, **extra},
                timeout=60,
                check=False,
            )

        refused = cli("topic", "list")
        assert refused.returncode == 1 and "UNAUTHENTICATED" in refused.stderr
        produced = cli("produce", "demo", "hello", CONVEYOR_TOKEN=token.group(1))
        assert produced.returncode == 0, produced.stderr
        consumed = cli(
            "consume", "demo", "--from-beginning", "--max", "1", CONVEYOR_TOKEN=token.group(1)
        )
        assert consumed.stdout.split() == ["hello"], consumed.stderr
        assert (data / "cluster-secret").stat().st_mode & 0o077 == 0
        secret = (data / "cluster-secret").read_text().strip()
        assert secret not in log_path.read_text()
