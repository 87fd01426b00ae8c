"""The plain-HTTP opt-out of the compose deployment (deploy/compose/plain-http.yml), run
for real through podman: the coordinator and a broker healthy on plain HTTP, a produce and
a fetch without credentials, and HTTPS refused (nothing serves it)."""

from __future__ import annotations

import json
import ssl
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.deploy.compose import ComposeProject, running_project
from tests.deploy.podman import REPO_ROOT, Podman

pytestmark = [pytest.mark.slow, pytest.mark.timeout(900)]

PLAIN_HTTP = REPO_ROOT / "deploy" / "compose" / "plain-http.yml"
SERVICES = ("coordinator", "broker-1")


@pytest.fixture(scope="module")
def plain(
    podman: Podman, conveyor_image: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[ComposeProject]:
    with running_project(
        podman,
        conveyor_image,
        tmp_path_factory.mktemp("compose-plain"),
        "conveyorplain",
        SERVICES,
        logged=("init", *SERVICES),
        overrides=(PLAIN_HTTP,),
        extra_env={"CONVEYOR_SCHEME": "http"},
    ) as project:
        yield project


def _json(method: str, url: str, body: object = None) -> dict[str, object]:
    data = None if body is None else json.dumps(body).encode()
    request = urllib.request.Request(url, data=data, method=method)
    if data is not None:
        request.add_header("Content-Type", "application/json")
    with urllib.request.urlopen(request, timeout=30) as response:
        answer: dict[str, object] = json.loads(response.read())
    return answer


def test_the_opt_out_serves_plain_http_without_credentials(
    plain: ComposeProject, tmp_path: Path
) -> None:
    coordinator = f"http://127.0.0.1:{plain.ports.coordinator}"
    broker = f"http://127.0.0.1:{plain.ports.brokers[1]}"
    assert _json("GET", f"{coordinator}/healthz")["service"] == "coordinator"
    produced = _json("POST", f"{broker}/v1/topics/plain/records", {"records": [{"value": "v"}]})
    (result,) = produced["results"]  # type: ignore[misc]
    assert "error" not in result, result
    partition = result["partition"]
    fetched = _json("GET", f"{broker}/v1/topics/plain/partitions/{partition}/records?offset=0")
    assert [r["value"] for r in fetched["records"]] == ["v"]  # type: ignore[union-attr]
    context = ssl.create_default_context()
    with pytest.raises(OSError):  # nobody speaks TLS: the handshake fails
        urllib.request.urlopen(
            f"https://127.0.0.1:{plain.ports.coordinator}/healthz", timeout=10, context=context
        )
    env = plain.compose("exec", "-T", "broker-1", "env")
    assert "CONVEYOR_AUTH=\n" in env and "CONVEYOR_ADVERTISED_URL=http://broker-1:7701" in env
