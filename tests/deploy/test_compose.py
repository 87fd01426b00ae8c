"""The image and the docker-compose deployment, for real: built and run through podman,
used from the host through the ports published on 127.0.0.1: a broker crashed and brought
back by its restart policy, and a rolling restart, both under load and checked against
every acknowledged message; the coordinator's backup and restore; the demo clients;
Prometheus with the shipped files; the Kubernetes pod commands under their security
context.

Runtime here: about 80 s with the base images cached; the first run builds them (debootstrap
and Debian's Prometheus) and takes about 2 min 15 s. See tests/deploy/podman.py for how
podman stands in for Docker.
"""

from __future__ import annotations

import collections
import http.client
import json
import os
import re
import secrets
import signal
import threading
import time
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml

from conveyor import __version__
from conveyor.transport.certs import init_certs
from tests.deploy.compose import ComposeProject
from tests.deploy.conftest import CLUSTER_SERVICES, Deployment
from tests.deploy.http import HostView, HTTPStatusError, http_ok, request_json
from tests.deploy.podman import REPO_ROOT, Podman, wait_for

pytestmark = [pytest.mark.slow, pytest.mark.timeout(1200)]

TOPIC = "deploy-check"
PARTITIONS = 6
RECORDS_PER_REQUEST = 3
RESTART_TIMEOUT_S = 90.0
PROMETHEUS_CONFIG = REPO_ROOT / "deploy" / "prometheus" / "prometheus-tls.yml"
PROMETHEUS_RULES = REPO_ROOT / "deploy" / "prometheus" / "alerts.yml"
COMPOSE_TARGETS = {"coordinator:7700", "broker-1:7701", "broker-2:7702", "broker-3:7703"}


def test_one_non_root_image_serves_every_role(podman: Podman, conveyor_image: str) -> None:
    (image,) = json.loads(podman.run("image", "inspect", conveyor_image).stdout)
    config = image["Config"]
    healthcheck = image.get("Healthcheck") or config.get("Healthcheck")  # podman / Docker
    assert config["Entrypoint"] == ["conveyor"]
    assert config["User"] == "conveyor:conveyor"
    assert "/data" in config["Volumes"]
    # a broker's Kafka listener (Conveyor's clients speak Kafka to brokers): a fixed port
    assert {"7700/tcp", "7701/tcp", "9092/tcp"} <= set(config["ExposedPorts"])
    assert "CONVEYOR_KAFKA_LISTEN=0.0.0.0:9092" in config["Env"]
    assert "/healthz" in " ".join(healthcheck["Test"])
    assert config["Labels"]["org.opencontainers.image.version"] == __version__
    version = podman.run("run", "--rm", conveyor_image, "--version").stdout.strip()
    assert version == f"conveyor {__version__}"
    uid = podman.run("run", "--rm", "--entrypoint", "id", conveyor_image, "-u").stdout.strip()
    assert uid != "0"


def test_every_service_is_healthy_with_a_restart_policy(deployment: Deployment) -> None:
    project = deployment.project
    for service in CLUSTER_SERVICES:
        container = project.container(service)
        assert project.health(service) == "healthy", service
        policy = project.podman.inspect(container, "{{.HostConfig.RestartPolicy.Name}}")
        assert policy == "unless-stopped", service
    for broker_id in (1, 2, 3):
        assert deployment.host.ok(f"{deployment.host.broker_url(broker_id)}/readyz")
    assert deployment.host.ok(f"{deployment.host.coordinator_url}/readyz")
    init = project.container("init")
    assert project.podman.inspect(init, "{{.State.ExitCode}}") == "0"


def test_plain_http_and_missing_credentials_are_refused(deployment: Deployment) -> None:
    """TLS and auth are on by default: plain HTTP to a published port fails (the connection
    is dropped, no answer), a request without a token or with a wrong one gets 401, and
    the services stay healthy."""
    host = deployment.host
    urls = [host.coordinator_url] + [host.broker_url(b) for b in (1, 2, 3)]
    for url in urls:
        plain = url.replace("https://", "http://")
        with pytest.raises((OSError, http.client.HTTPException)):
            urllib.request.urlopen(f"{plain}/healthz", timeout=10)
    topics_url = f"{host.coordinator_url}/v1/topics"
    for token in (None, "cvt_wrong_token"):
        with pytest.raises(HTTPStatusError) as refused:
            request_json("GET", topics_url, context=host.context, token=token)
        assert refused.value.status == 401
    produce_url = f"{host.broker_url(1)}/v1/topics/{TOPIC}/records"
    with pytest.raises(HTTPStatusError) as refused:
        request_json("POST", produce_url, {"records": [{"value": "x"}]}, context=host.context)
    assert refused.value.status == 401
    for url in urls:
        assert host.ok(f"{url}/readyz")  # probes stay public


class AckLog:
    """Every acknowledged record: (partition, offset) -> (value, when acknowledged)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._acks: dict[tuple[int, int], tuple[str, float]] = {}
        self.failures = 0

    def add(self, partition: int, base_offset: int, values: list[str]) -> None:
        now = time.monotonic()
        with self._lock:
            for i, value in enumerate(values):
                key = (partition, base_offset + i)
                assert key not in self._acks, f"offset {key} acknowledged twice"
                self._acks[key] = (value, now)

    def snapshot(self) -> dict[tuple[int, int], tuple[str, float]]:
        with self._lock:
            return dict(self._acks)

    def partitions_acked_since(self, since: float) -> set[int]:
        return {p for (p, _), (_, when) in self.snapshot().items() if when > since}


class BackgroundProducer(threading.Thread):
    """Produces to every partition in turn with acks=all, each request with fresh values,
    never retrying: a failed request counts as not written. Leaders come from the
    coordinator, refreshed after every failure."""

    def __init__(self, host: HostView, acks: AckLog, tag: str) -> None:
        super().__init__(name=f"background-producer-{tag}", daemon=True)
        self._tag = tag  # values are unique across producers sharing the topic
        self._host = host
        self._acks = acks
        self._stopping = threading.Event()

    def stop(self) -> None:
        self._stopping.set()
        self.join(timeout=60)
        assert not self.is_alive()

    def run(self) -> None:
        leaders = self._host.leaders(TOPIC)
        sequence = 0
        while not self._stopping.is_set():
            for partition, leader in sorted(leaders.items()):
                sequence += 1
                values = [
                    f"{self._tag}-p{partition}-r{sequence}-{i}" for i in range(RECORDS_PER_REQUEST)
                ]
                try:
                    if leader is None:
                        raise ConnectionError(f"partition {partition} has no leader")
                    offset = self._host.produce(leader, TOPIC, partition, values)
                except (OSError, HTTPStatusError):
                    self._acks.failures += 1
                    leaders = self._refreshed(leaders)
                    continue
                self._acks.add(partition, offset, values)
            self._stopping.wait(0.05)  # a pause between rounds, not a wait for a condition

    def _refreshed(self, leaders: dict[int, int | None]) -> dict[int, int | None]:
        try:
            return self._host.leaders(TOPIC)
        except (OSError, HTTPStatusError):
            return leaders


def crash_service_process(podman: Podman, container: str) -> None:
    """SIGKILL the conveyor process of ``container`` (the only child of its init), as a
    crash or the OOM killer would. Unlike ``podman kill``, which counts as stopped by the
    user, this leaves the restart policy to bring the container back."""
    init_pid = int(podman.inspect(container, "{{.State.Pid}}"))
    children = Path(f"/proc/{init_pid}/task/{init_pid}/children").read_text().split()
    assert len(children) == 1, f"expected one process under the init of {container}: {children}"
    os.kill(int(children[0]), signal.SIGKILL)


def test_acknowledged_messages_survive_a_broker_crash(
    podman: Podman, deployment: Deployment
) -> None:
    host, project = deployment.host, deployment.project
    host.create_topic(TOPIC, PARTITIONS)
    wait_for(lambda: None not in host.leaders(TOPIC).values(), 30, "a leader per partition")
    acks = AckLog()
    producer = BackgroundProducer(host, acks, "crash")
    producer.start()
    try:
        wait_for(lambda: len(acks.partitions_acked_since(0)) == PARTITIONS, 60, "first acks")
        victim = host.leaders(TOPIC)[0]
        assert victim is not None
        service = f"broker-{victim}"
        container = project.container(service)
        restarts = int(podman.inspect(container, "{{.RestartCount}}"))
        crash_service_process(podman, container)
        wait_for(
            lambda: int(podman.inspect(container, "{{.RestartCount}}")) > restarts,
            RESTART_TIMEOUT_S,
            f"the restart policy to restart {service}",
        )
        restarted_at = time.monotonic()
        project.wait_healthy((service,), RESTART_TIMEOUT_S)
        wait_for(lambda: host.alive_brokers() == {1, 2, 3}, RESTART_TIMEOUT_S, "3 live brokers")
        wait_for(
            lambda: len(acks.partitions_acked_since(restarted_at)) == PARTITIONS,
            RESTART_TIMEOUT_S,
            "every partition to take acknowledged writes again after the restart",
        )
    finally:
        producer.stop()
    print(f"acks={len(acks.snapshot())} failures={acks.failures}")
    _assert_every_ack_is_stored(host, acks)


def _stored_records(host: HostView, partition: int) -> dict[int, str]:
    """Every record of ``partition`` read from its leader. Right after a failover the
    coordinator may name a leader that has not yet heard it leads (421 NOT_LEADER, within
    a heartbeat): ask again, with the coordinator's newest answer, until a deadline."""
    found: dict[int, str] = {}

    def read() -> bool:
        leader = host.leaders(TOPIC)[partition]
        if leader is None:
            return False
        try:
            found.update(host.fetch_all(leader, TOPIC, partition))
        except HTTPStatusError as exc:
            if exc.status in (421, 503):
                return False
            raise
        return True

    wait_for(read, RESTART_TIMEOUT_S, f"a leader of partition {partition} to serve it")
    return found


def _assert_every_ack_is_stored(host: HostView, acks: AckLog) -> None:
    acknowledged = acks.snapshot()
    stored = {p: _stored_records(host, p) for p in range(PARTITIONS)}
    lost = {
        key: value
        for key, (value, _) in acknowledged.items()
        if stored[key[0]].get(key[1]) != value
    }
    assert not lost, f"{len(lost)} of {len(acknowledged)} acknowledged records lost: {lost}"
    for partition, records in stored.items():
        duplicates = [v for v, n in collections.Counter(records.values()).items() if n > 1]
        assert not duplicates, f"partition {partition} stores values twice: {duplicates}"
    assert len(acknowledged) >= PARTITIONS * RECORDS_PER_REQUEST * 2


def _cluster_status_ok(project: ComposeProject) -> bool:
    """``conveyor cluster status`` inside the coordinator's container exits 0 only when
    every broker is alive and no partition is offline (the gate of a rolling restart)."""
    try:
        project.compose("exec", "-T", "coordinator", "conveyor", "cluster", "status")
    except RuntimeError:
        return False
    return True


def test_rolling_restart_as_documented_keeps_every_acknowledged_message(
    deployment: Deployment,
) -> None:
    """docs/deployment.md#rolling-restart: one broker at a time, each recreated (as for an
    upgrade) only once the cluster status is clean, the next only once it is clean again.
    With RF=1 a broker's partitions refuse writes while it restarts; nothing acknowledged
    may be lost either way."""
    host, project = deployment.host, deployment.project
    acks = AckLog()
    producer = BackgroundProducer(host, acks, "rolling")
    producer.start()
    try:
        for broker_id in (1, 2, 3):
            service = f"broker-{broker_id}"
            wait_for(lambda: _cluster_status_ok(project), RESTART_TIMEOUT_S, "a clean status")
            project.compose("up", "-d", "--no-deps", "--force-recreate", service)
            project.wait_healthy((service,), RESTART_TIMEOUT_S)
        wait_for(lambda: _cluster_status_ok(project), RESTART_TIMEOUT_S, "a clean status")
        done_at = time.monotonic()
        wait_for(
            lambda: len(acks.partitions_acked_since(done_at)) == PARTITIONS,
            RESTART_TIMEOUT_S,
            "every partition to take acknowledged writes after the rolling restart",
        )
    finally:
        producer.stop()
    print(f"acks={len(acks.snapshot())} failures={acks.failures}")
    _assert_every_ack_is_stored(host, acks)


def test_prometheus_runs_with_the_shipped_config_and_rules(deployment: Deployment) -> None:
    url = f"http://127.0.0.1:{deployment.project.ports.prometheus}"
    assert http_ok(f"{url}/-/ready")
    shipped_rules = yaml.safe_load(PROMETHEUS_RULES.read_text()) or {}
    loaded = request_json("GET", f"{url}/api/v1/rules")["data"]["groups"]
    assert sorted(g["name"] for g in loaded) == sorted(
        g["name"] for g in shipped_rules.get("groups") or []
    )
    shipped_jobs = {
        c["job_name"] for c in yaml.safe_load(PROMETHEUS_CONFIG.read_text())["scrape_configs"]
    }
    loaded_config = yaml.safe_load(
        request_json("GET", f"{url}/api/v1/status/config")["data"]["yaml"]
    )
    assert {c["job_name"] for c in loaded_config["scrape_configs"]} == shipped_jobs


def test_prometheus_scrapes_every_conveyor_service(deployment: Deployment) -> None:
    """The shipped prometheus-tls.yml names the compose services as its targets and
    scrapes them over HTTPS, verified against the CA in the secrets volume."""
    url = f"http://127.0.0.1:{deployment.project.ports.prometheus}/api/v1/targets"

    def healthy_targets() -> set[str]:
        active = request_json("GET", url)["data"]["activeTargets"]
        return {t["labels"]["instance"] for t in active if t["health"] == "up"}

    targets = request_json("GET", url)["data"]["activeTargets"]
    active = {t["labels"]["instance"] for t in targets}
    assert COMPOSE_TARGETS.issubset(active)
    assert all(t["scrapeUrl"].startswith("https://") for t in targets)
    wait_for(lambda: COMPOSE_TARGETS.issubset(healthy_targets()), 90, "every conveyor target up")


DEMO_LINE = re.compile(r"^key-\d\tmessage \d+ from \S+$", re.MULTILINE)


def test_demo_producer_and_consumer_run_from_the_same_image(deployment: Deployment) -> None:
    project = deployment.project
    project.up("demo-producer", "demo-consumer", profiles=("demo",))
    wait_for(
        lambda: len(DEMO_LINE.findall(project.logs("demo-consumer"))) >= 3,
        120,
        "the demo consumer to print three messages of the demo producer",
    )
    assert re.search(r"^demo\[\d+\]@\d+$", project.logs("demo-producer"), re.MULTILINE)
    assert "demo" in _topic_names(deployment.host)
    # The demo token may use the demo topic only: listing topics needs describe on the
    # cluster, producing elsewhere needs produce on that topic.
    host = deployment.host
    demo_token = _secret_file(project, "demo-token")
    for method, url, body in (
        ("GET", f"{host.coordinator_url}/v1/topics", None),
        ("POST", f"{host.broker_url(1)}/v1/topics/{TOPIC}/records", {"records": [{"value": "x"}]}),
    ):
        with pytest.raises(HTTPStatusError) as refused:
            request_json(method, url, body, context=host.context, token=demo_token)
        assert refused.value.status == 403, (method, url)


def _secret_file(project: ComposeProject, name: str) -> str:
    """A file of the secrets volume, read inside the coordinator's container."""
    return project.compose("exec", "-T", "coordinator", "cat", f"/secrets/{name}").strip()


def test_a_rerun_of_init_keeps_the_ca_and_the_cluster_secret(deployment: Deployment) -> None:
    project = deployment.project
    before = {name: _secret_file(project, name) for name in ("ca.pem", "cluster-secret")}
    project.compose("run", "--rm", "init")
    after = {name: _secret_file(project, name) for name in ("ca.pem", "cluster-secret")}
    assert after == before
    assert before["ca.pem"].startswith("-----BEGIN CERTIFICATE-----")


# The procedure of docs/deployment.md#backup-and-restore-of-the-coordinator, verbatim.
BACKUP = (
    "import sqlite3; sqlite3.connect('/data/coordinator.db')"
    ".backup(sqlite3.connect('/data/coordinator-backup.db'))"
)
RESTORE = (
    "cp /restore/coordinator-backup.db /data/coordinator.db"
    " && rm -f /data/coordinator.db-wal /data/coordinator.db-shm"
)


def _topic_names(host: HostView) -> set[str]:
    topics = host.request("GET", f"{host.coordinator_url}/v1/topics")["topics"]
    return {t["name"] for t in topics}


def test_coordinator_backup_and_restore_as_documented(
    podman: Podman, deployment: Deployment, tmp_path: Path
) -> None:
    host, project = deployment.host, deployment.project
    host.create_topic("kept-by-backup", 1)
    project.compose("exec", "-T", "coordinator", "python3", "-c", BACKUP)
    backup = tmp_path / "coordinator-backup.db"
    podman.run("cp", f"{project.container('coordinator')}:/data/coordinator-backup.db", str(backup))
    tmp_path.chmod(0o755)  # readable by the image's non-root user through the bind mount
    backup.chmod(0o644)
    host.create_topic("created-after-backup", 1)

    project.compose("stop", "coordinator")
    mount = f"{tmp_path}:/restore:ro"
    project.compose(
        "run", "--rm", "--no-deps", "-v", mount, "--entrypoint", "sh", "coordinator", "-c", RESTORE
    )
    project.compose("start", "coordinator")
    project.wait_healthy(("coordinator",), RESTART_TIMEOUT_S)
    wait_for(lambda: host.ok(f"{host.coordinator_url}/readyz"), 30, "coordinator ready")

    topics = _topic_names(host)
    assert {"kept-by-backup", TOPIC} <= topics
    assert "created-after-backup" not in topics
    wait_for(lambda: host.alive_brokers() == {1, 2, 3}, RESTART_TIMEOUT_S, "brokers back")


def test_the_image_stops_promptly_on_sigterm(podman: Podman, conveyor_image: str) -> None:
    """With --init (compose: init: true) the service stops on SIGTERM, well within the 10 s
    grace period: exit status 0, not the SIGKILL at the grace's end (137), and the
    container's own end (podman's record of it) soon after the stop was asked for.
    ``podman stop``'s duration is not the measure: it adds podman's clean-up (network,
    storage, conmon), which took 16.5 s in all once at load 50 while this machine's
    containers exit about a second after their SIGTERM."""
    name = f"conveyor-stop-{os.getpid()}"
    podman.run("run", "-d", "--init", "--name", name, conveyor_image, "coordinator")
    try:
        wait_for(lambda: "coordinator state loaded" in _logs(podman, name), 60, "coordinator up")
        asked_ns = time.time_ns()
        podman.run("stop", "--time", "10", name)
        status, finished_ns = podman.inspect(
            name, "{{.State.ExitCode}} {{.State.FinishedAt.UnixNano}}"
        ).split()
        stopped_in_s = (int(finished_ns) - asked_ns) / 1e9
        assert status == "0", f"killed after the grace period? {_logs(podman, name)[-2000:]}"
        assert stopped_in_s < 5, f"the container exited {stopped_in_s:.1f} s after the stop"
    finally:
        podman.run("rm", "--force", "--volumes", name, check=False)


def _logs(podman: Podman, name: str) -> str:
    result = podman.run("logs", name, check=False)
    return result.stdout + result.stderr


KUBERNETES_DIR = REPO_ROOT / "deploy" / "kubernetes"
PROBE = (
    "import ssl, sys, urllib.request as r; "
    "r.urlopen(sys.argv[1], timeout=4, context=ssl.create_default_context(cafile=sys.argv[2]))"
)


def _pod_container(manifest: str) -> tuple[dict[str, Any], dict[str, str]]:
    """The StatefulSet's container in ``manifest`` and the environment Kubernetes would
    give it (the ConfigMap, then literal values; the namespace for POD_NAMESPACE)."""
    (statefulset,) = [
        doc
        for doc in yaml.safe_load_all((KUBERNETES_DIR / manifest).read_text())
        if doc["kind"] == "StatefulSet"
    ]
    (container,) = statefulset["spec"]["template"]["spec"]["containers"]
    config_map = yaml.safe_load((KUBERNETES_DIR / "configmap.yaml").read_text())
    env = dict(config_map["data"])
    for variable in container.get("env", []):
        env[variable["name"]] = variable.get("value", "conveyor")  # fieldRef: the namespace
    return container, env


@dataclass(frozen=True)
class Pod:
    manifest: str
    hostname: str
    port: int
    expected_log: str


PODS = [
    Pod(
        "broker.yaml",
        "conveyor-broker-2",
        7701,
        "broker 2 starting: listen 0.0.0.0:7701, "
        "advertised https://conveyor-broker-2.conveyor-broker.conveyor.svc:7701",
    ),
    Pod("coordinator.yaml", "conveyor-coordinator-0", 7700, "coordinator state loaded"),
]


def _kubernetes_secret(directory: Path) -> Path:
    """What the Job of secrets-init.yaml puts in the Secret ``conveyor-secrets`` (its
    command's certificates, without the CA key, and a cluster secret), as files readable by
    the pod's user, as the Secret's mount makes them."""
    (job,) = [
        doc
        for doc in yaml.safe_load_all((KUBERNETES_DIR / "secrets-init.yaml").read_text())
        if doc["kind"] == "Job"
    ]
    (certs,) = job["spec"]["template"]["spec"]["initContainers"]
    hosts = re.findall(r'--host "?([^" ]+)"?', " ".join(certs["args"]))
    hosts = [h.replace("${POD_NAMESPACE}", "conveyor") for h in hosts]
    secret = directory / "secret"
    init_certs(secret, hosts)
    (secret / "ca-key.pem").unlink()
    (secret / "cluster-secret").write_text(secrets.token_urlsafe(32) + "\n")
    secret.chmod(0o755)
    for path in secret.iterdir():
        path.chmod(0o644)
    directory.chmod(0o755)
    return secret


@pytest.mark.parametrize("pod", PODS, ids=lambda pod: pod.manifest)
def test_kubernetes_pods_run_as_their_manifests_say(
    podman: Podman, conveyor_image: str, pod: Pod, tmp_path: Path
) -> None:
    """The StatefulSet's command under its security context (uid 10001, read-only root
    filesystem with /data and /tmp writable, no capabilities) with the Secret the init
    Job creates mounted: the broker takes its id from the pod ordinal in its hostname and
    advertises its stable DNS name over HTTPS; the probe answers over HTTPS."""
    container, env = _pod_container(pod.manifest)
    name = f"conveyor-k8s-{pod.hostname}-{os.getpid()}"
    argv = ["run", "-d", "--name", name, "--hostname", pod.hostname, "--read-only"]
    argv += ["--tmpfs", "/tmp", "--user", "10001:10001", "--cap-drop", "ALL"]
    argv += ["--security-opt", "no-new-privileges"]
    argv += ["-v", f"{_kubernetes_secret(tmp_path)}:/secrets:ro"]
    for key, value in env.items():
        argv += ["-e", f"{key}={value}"]
    if "command" in container:
        argv += ["--entrypoint", json.dumps(container["command"])]
    podman.run(*argv, conveyor_image, *container["args"])
    try:
        wait_for(lambda: pod.expected_log in _logs(podman, name), 60, pod.expected_log)
        probe = container["livenessProbe"]["httpGet"]
        url = f"{probe['scheme'].lower()}://127.0.0.1:{pod.port}{probe['path']}"

        def probe_answers() -> bool:
            # As the kubelet does: the probe is retried (the log line comes before the
            # listeners are open); it must answer within the deadline.
            result = podman.run(
                "exec", name, "python3", "-c", PROBE, url, env["CONVEYOR_CA"], check=False
            )
            return result.returncode == 0

        try:
            wait_for(probe_answers, 60, f"{url} answering inside {name}")
        except TimeoutError:
            raise AssertionError(
                f"probe never answered; the pod's log:\n{_logs(podman, name)}"
            ) from None
    finally:
        podman.run("rm", "--force", "--volumes", name, check=False)
