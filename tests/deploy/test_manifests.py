"""The deployment files, validated offline: the compose file against the Compose
specification and by docker-compose itself, the CI pipelines against their schemas, the
Kubernetes manifests with kubernetes-validate --strict, and the Dockerfile's promises."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.deploy.compose import COMPOSE_FILE, ha_env

REPO_ROOT = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent
KUBERNETES_DIR = REPO_ROOT / "deploy" / "kubernetes"
CONVEYOR_SERVICES = ("coordinator", "broker-1", "broker-2", "broker-3")
HA_SERVICES = ("coordinator-2", "coordinator-3", "etcd-1", "etcd-2", "etcd-3")
TIMEOUT_S = 120


def _run(*argv: str | Path, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(a) for a in argv],
        capture_output=True,
        text=True,
        timeout=TIMEOUT_S,
        check=False,
        env=env,
        cwd=REPO_ROOT,
    )


@pytest.mark.parametrize(
    ("schema", "path"),
    [
        ("vendor.compose-spec", "docker-compose.yml"),
        ("vendor.github-workflows", ".github/workflows/ci.yml"),
        ("vendor.gitlab-ci", ".gitlab-ci.yml"),
    ],
)
def test_file_matches_its_schema(schema: str, path: str) -> None:
    result = _run(BIN / "check-jsonschema", "--builtin-schema", schema, REPO_ROOT / path)
    assert result.returncode == 0, result.stdout + result.stderr


def _compose_config(
    env_extra: dict[str, str] | None = None, overrides: tuple[Path, ...] = ()
) -> dict[str, Any]:
    if shutil.which("docker-compose") is None:
        pytest.skip("docker-compose (v1) not installed: scripts/system-deps/50-containers.sh")
    env = {k: v for k, v in os.environ.items() if not k.startswith("CONVEYOR_")}
    env.update(env_extra or {})
    files = [arg for path in (COMPOSE_FILE, *overrides) for arg in ("-f", path)]
    result = _run("docker-compose", *files, "--profile", "demo", "config", env=env)
    assert result.returncode == 0, result.stdout + result.stderr
    config: dict[str, Any] = yaml.safe_load(result.stdout)
    return config


def test_docker_compose_accepts_the_file() -> None:
    services = _compose_config()["services"]
    assert set(services) == {
        *CONVEYOR_SERVICES,
        "init",
        "bootstrap",
        "prometheus",
        "grafana",
        "demo-producer",
        "demo-consumer",
        *HA_SERVICES,
    }


def test_every_broker_has_its_own_id_volume_port_and_advertised_name() -> None:
    services = _compose_config()["services"]
    brokers = {name: s for name, s in services.items() if name.startswith("broker-")}
    ids, volumes, ports = set(), set(), set()
    for name, service in brokers.items():
        env = service["environment"]
        number = name.removeprefix("broker-")
        assert env["CONVEYOR_ID"] == number
        assert env["CONVEYOR_ADVERTISED_URL"] == f"https://{name}:770{number}"
        assert env["CONVEYOR_LISTEN"] == f"0.0.0.0:770{number}"
        assert env["CONVEYOR_COORDINATOR"] == "https://coordinator:7700"
        # the Kafka listener: advertised as the host port it is published on
        kafka_port = 9091 + int(number)
        assert env["CONVEYOR_KAFKA_LISTEN"] == "0.0.0.0:9092"
        assert env["CONVEYOR_KAFKA_ADVERTISE"] == f"localhost:{kafka_port}"
        assert f"127.0.0.1:{kafka_port}:9092/tcp" in service["ports"]
        assert service["depends_on"] == {
            "init": {"condition": "service_completed_successfully"},
            "coordinator": {"condition": "service_healthy"},
        }
        ids.add(env["CONVEYOR_ID"])
        volumes.update(v.split(":")[0] for v in service["volumes"] if "/data" in v)
        ports.update(p.split(":")[1] for p in service["ports"])
    assert len(ids) == len(volumes) == len(brokers) == 3
    assert len(ports) == 6  # HTTP and Kafka, one of each per broker


def test_conveyor_services_are_healthchecked_restarted_and_init_wrapped() -> None:
    services = _compose_config()["services"]
    for name in CONVEYOR_SERVICES:
        service = services[name]
        assert service["restart"] == "unless-stopped", name
        assert service["init"] is True, name
        assert "/readyz" in " ".join(service["healthcheck"]["test"]), name
        # Published on loopback only unless the operator says otherwise.
        assert all(p.startswith("127.0.0.1:") for p in service["ports"]), name
    for name in ("demo-producer", "demo-consumer"):
        assert services[name]["profiles"] == ["demo"]
        assert services[name]["healthcheck"]["test"] == ["NONE"]


def test_publish_address_and_ports_come_from_the_environment() -> None:
    env = {
        "CONVEYOR_PUBLISH_ADDRESS": "0.0.0.0",
        "CONVEYOR_PUBLISH_BROKER_2": "17702",
        "CONVEYOR_PUBLISH_BROKER_2_KAFKA": "19093",
        "CONVEYOR_KAFKA_ADVERTISE_HOST": "queue.example.com",
    }
    services = _compose_config(env)["services"]
    assert services["broker-2"]["ports"] == ["0.0.0.0:17702:7702/tcp", "0.0.0.0:19093:9092/tcp"]
    assert services["broker-2"]["environment"]["CONVEYOR_KAFKA_ADVERTISE"] == (
        "queue.example.com:19093"
    )


def test_monitoring_mounts_the_shipped_files() -> None:
    services = _compose_config()["services"]
    prometheus = " ".join(services["prometheus"]["volumes"])
    grafana = " ".join(services["grafana"]["volumes"])
    for path in ("deploy/prometheus/prometheus-tls.yml", "deploy/prometheus/alerts.yml"):
        assert f"{REPO_ROOT / path}:/etc/prometheus/" in prometheus
    assert "secrets:/secrets:ro" in prometheus
    assert f"{REPO_ROOT / 'deploy/grafana/provisioning'}:/etc/grafana/provisioning" in grafana
    assert str(REPO_ROOT / "deploy/grafana/dashboards") in grafana
    grafana_env = services["grafana"]["environment"]
    assert grafana_env["GF_AUTH_ANONYMOUS_ENABLED"] == "true"
    assert grafana_env["GF_AUTH_ANONYMOUS_ORG_ROLE"] == "Viewer"


def test_conveyor_services_run_with_tls_and_auth_from_the_init_volume() -> None:
    """TLS and auth are the compose file's default: every server reads the certificates
    and the cluster secret from the volume the one-shot init service fills, read-only."""
    services = _compose_config()["services"]
    for name in CONVEYOR_SERVICES:
        service = services[name]
        env = service["environment"]
        assert "secrets:/secrets:ro" in service["volumes"], name
        assert service["depends_on"]["init"] == {"condition": "service_completed_successfully"}
        assert env["CONVEYOR_TLS_CERT"] == "/secrets/server.pem", name
        assert env["CONVEYOR_TLS_KEY"] == "/secrets/server-key.pem", name
        assert env["CONVEYOR_CA"] == "/secrets/ca.pem", name
        assert env["CONVEYOR_INTERNAL_MTLS"] == "true", name
        assert env["CONVEYOR_AUTH"] == "true", name
        assert env["CONVEYOR_CLUSTER_SECRET_FILE"] == "/secrets/cluster-secret", name
        assert "CONVEYOR_CLUSTER_SECRET" not in env, name  # never in `docker inspect`
    init = services["init"]
    assert init["restart"] == "no"
    assert "secrets:/secrets:rw" in init["volumes"]
    script = " ".join(init["command"])
    assert "conveyor certs init /secrets" in script
    assert "if [ ! -f client.pem ]" in script  # a rerun keeps the CA
    for name in ("demo-producer", "demo-consumer"):
        # clients as on the host: the brokers' advertised Kafka addresses reach them there
        assert services[name]["network_mode"] == "host"
        env = services[name]["environment"]
        assert env["CONVEYOR_BOOTSTRAP_SERVERS"] == "localhost:9092,localhost:9093,localhost:9094"
        assert env["CONVEYOR_URL"] == "https://localhost:7700"
        assert env["CONVEYOR_TOKEN_FILE"] == "/secrets/demo-token"
    assert services["demo-producer"]["depends_on"]["bootstrap"] == {
        "condition": "service_completed_successfully"
    }


PLAIN_HTTP = REPO_ROOT / "deploy" / "compose" / "plain-http.yml"


def test_the_plain_http_opt_out_turns_tls_and_auth_off_everywhere() -> None:
    """docs/deployment.md's opt-out, as rendered: no TLS, auth or CA anywhere, every URL
    http://, Prometheus on the plain scrape config (tests/deploy/test_compose.py runs it)."""
    services = _compose_config({"CONVEYOR_SCHEME": "http"}, (PLAIN_HTTP,))["services"]
    for name in CONVEYOR_SERVICES:
        env = services[name]["environment"]
        for setting in ("TLS_CERT", "TLS_KEY", "INTERNAL_MTLS", "AUTH", "CA"):
            assert env[f"CONVEYOR_{setting}"] == "", (name, setting)
        assert env["CONVEYOR_CLUSTER_SECRET_FILE"] == "", name
    # the `ha` profile (etcd with TLS) is not part of the opt-out: docs/deployment.md
    plain = {n: s for n, s in services.items() if "ha" not in s.get("profiles", ())}
    assert "coordinator" in plain and "etcd-1" not in plain
    for name, env in ((n, s.get("environment") or {}) for n, s in plain.items()):
        for key, value in env.items():
            assert "https://" not in str(value), (name, key, value)
    for name, url in (
        ("demo-producer", "http://localhost:7700"),  # on the host's network
        ("demo-consumer", "http://localhost:7700"),
        ("bootstrap", "http://coordinator:7700"),
    ):
        env = services[name]["environment"]
        assert env["CONVEYOR_URL"] == url
        assert env.get("CONVEYOR_TOKEN_FILE", "") == ""
    prometheus = services["prometheus"]["volumes"]
    config_mounts = [v for v in prometheus if v.endswith(":/etc/prometheus/prometheus.yml:ro")]
    assert config_mounts == [
        f"{REPO_ROOT / 'deploy/prometheus/prometheus.yml'}:/etc/prometheus/prometheus.yml:ro"
    ]


def test_compose_prometheus_config_is_the_rendered_one_with_the_ca() -> None:
    """prometheus-tls.yml is what ``prometheus_config`` renders for the compose services
    with the CA of the secrets volume (prometheus.yml, without it, is kept identical by
    tests/monitoring/test_promtool.py)."""
    from conveyor.cli.monitoring import SHIPPED_TARGETS, prometheus_config

    shipped = (REPO_ROOT / "deploy" / "prometheus" / "prometheus-tls.yml").read_text()
    assert shipped == prometheus_config(*SHIPPED_TARGETS, ca_file="/secrets/ca.pem")


def _kubernetes_files() -> list[Path]:
    return sorted(p for p in KUBERNETES_DIR.glob("*.yaml") if p.name != "kustomization.yaml")


def test_kubernetes_manifests_validate_strictly() -> None:
    result = _run(BIN / "kubernetes-validate", "--strict", *_kubernetes_files())
    assert result.returncode == 0, result.stdout + result.stderr
    assert "passed" in result.stdout + result.stderr


def test_kustomization_lists_every_manifest() -> None:
    kustomization = yaml.safe_load((KUBERNETES_DIR / "kustomization.yaml").read_text())
    assert sorted(kustomization["resources"]) == [p.name for p in _kubernetes_files()]


def _kubernetes_objects() -> dict[tuple[str, str], dict[str, Any]]:
    objects = {}
    for path in _kubernetes_files():
        for document in yaml.safe_load_all(path.read_text()):
            objects[(document["kind"], document["metadata"]["name"])] = document
    return objects


def test_kubernetes_brokers_have_stable_ids_volumes_probes_and_limits() -> None:
    objects = _kubernetes_objects()
    brokers = objects[("StatefulSet", "conveyor-broker")]
    assert objects[("Service", brokers["spec"]["serviceName"])]["spec"]["clusterIP"] == "None"
    assert brokers["spec"]["volumeClaimTemplates"][0]["metadata"]["name"] == "data"
    pod = brokers["spec"]["template"]
    assert pod["metadata"]["annotations"]["prometheus.io/scrape"] == "true"
    (container,) = pod["spec"]["containers"]
    command = " ".join(container["command"] + container["args"])
    assert '--id "${HOSTNAME##*-}"' in command  # the pod's ordinal
    assert container["readinessProbe"]["httpGet"]["path"] == "/readyz"
    assert container["livenessProbe"]["httpGet"]["path"] == "/healthz"
    assert '--advertised-url "https://' in command
    assert {"cpu", "memory"} <= container["resources"]["requests"].keys()
    assert {"cpu", "memory"} <= container["resources"]["limits"].keys()
    budget = objects[("PodDisruptionBudget", "conveyor-broker")]
    assert budget["spec"]["maxUnavailable"] == 1
    coordinator = objects[("StatefulSet", "conveyor-coordinator")]
    assert coordinator["spec"]["replicas"] == 1


def test_dockerfile_keeps_its_promises() -> None:
    text = (REPO_ROOT / "Dockerfile").read_text()
    assert re.search(r"^ARG BASE_IMAGE=python:3\.11-slim$", text, re.MULTILINE)
    assert len(re.findall(r"^FROM \$\{BASE_IMAGE\}", text, re.MULTILINE)) == 2
    assert re.search(r"^USER conveyor", text, re.MULTILINE)
    assert re.search(r'^ENTRYPOINT \["conveyor"\]$', text, re.MULTILINE)
    assert re.search(r"^HEALTHCHECK .*\n.*/healthz", text, re.MULTILINE)
    assert re.search(r'^VOLUME \["/data"\]$', text, re.MULTILINE)
    assert "org.opencontainers.image.version" in text
    # every role: the wheel with the server and cli extras (alone it is the client library)
    assert re.search(r'pip install "\$\(ls /tmp/wheels/\*\.whl\)\[server,cli\]"', text)


def test_dockerignore_sends_only_what_the_build_needs() -> None:
    lines = (REPO_ROOT / ".dockerignore").read_text().splitlines()
    rules = [line for line in lines if line and not line.startswith("#")]
    assert rules[0] == "*"
    assert {"!pyproject.toml", "!README.md", "!src/"} <= set(rules)


def test_kubernetes_pods_run_with_tls_and_auth_from_the_init_job_secret() -> None:
    objects = _kubernetes_objects()
    config = objects[("ConfigMap", "conveyor-config")]["data"]
    assert config["CONVEYOR_AUTH"] == "true"
    assert config["CONVEYOR_INTERNAL_MTLS"] == "true"
    assert config["CONVEYOR_CLUSTER_SECRET_FILE"] == "/secrets/cluster-secret"
    assert config["CONVEYOR_URL"].startswith("https://")
    assert config["CONVEYOR_COORDINATOR"].startswith("https://")
    for name in ("conveyor-broker", "conveyor-coordinator"):
        pod = objects[("StatefulSet", name)]["spec"]["template"]
        assert pod["metadata"]["annotations"]["prometheus.io/scheme"] == "https"
        (container,) = pod["spec"]["containers"]
        for probe in ("readinessProbe", "livenessProbe"):
            assert container[probe]["httpGet"]["scheme"] == "HTTPS", (name, probe)
        mounts = {m["name"]: m for m in container["volumeMounts"]}
        assert mounts["secrets"] == {"name": "secrets", "mountPath": "/secrets", "readOnly": True}
        volumes = {v["name"]: v for v in pod["spec"]["volumes"]}
        assert volumes["secrets"]["secret"]["secretName"] == "conveyor-secrets"
    job = objects[("Job", "conveyor-secrets-init")]["spec"]["template"]["spec"]
    (certs,) = job["initContainers"]
    assert certs["image"] == "conveyor"
    assert "conveyor certs init /out" in " ".join(certs["args"])
    (creator,) = job["containers"]
    # every third-party image is pinned by digest (a tag can be moved under us)
    assert re.fullmatch(r"[\w./-]+:[\w.-]+@sha256:[0-9a-f]{64}", creator["image"])
    script = " ".join(creator["args"])
    assert "kubectl get secret conveyor-secrets" in script  # only when absent
    assert "kubectl create secret generic conveyor-secrets" in script
    role = objects[("Role", "conveyor-secrets-init")]
    assert {r["resources"][0] for r in role["rules"]} == {"secrets"}
    assert {v for r in role["rules"] for v in r["verbs"]} == {"get", "create"}
    binding = objects[("RoleBinding", "conveyor-secrets-init")]
    assert binding["subjects"][0]["name"] == job["serviceAccountName"]


def _settings_env(env: dict[str, Any]) -> dict[str, str]:
    """A container's variables as the settings layer sees them; the secrets' ``_FILE``
    variables are left out (the files exist only inside the pods and containers)."""
    return {k: str(v) for k, v in env.items() if not k.endswith("_FILE") and v is not None}


def _role(name: str) -> str:
    return "coordinator" if "coordinator" in name else "broker"


def test_kubernetes_environment_passes_the_settings_layer() -> None:
    from conveyor.settings import env_warnings, load

    objects = _kubernetes_objects()
    config = objects[("ConfigMap", "conveyor-config")]["data"]
    for name in ("conveyor-coordinator", "conveyor-broker"):
        (container,) = objects[("StatefulSet", name)]["spec"]["template"]["spec"]["containers"]
        values = {e["name"]: e["value"] for e in container.get("env", []) if "value" in e}
        env = _settings_env({**config, **values})
        flags = {"id": "1"} if _role(name) == "broker" else {}  # the broker's from its hostname
        load(_role(name), flags, env)  # raises SettingsError for a refused value
        assert env_warnings(env) == []


def test_compose_ha_profile_runs_three_coordinators_on_three_etcd_members() -> None:
    """The `ha` profile: three etcd members with TLS for clients and peers and client
    certificates required; with deploy/compose/ha.env, all three coordinators on them (each
    advertising its own name, on its own volume), brokers and clients given all three."""
    services = _compose_config(ha_env())["services"]
    coordinators = ("coordinator", "coordinator-2", "coordinator-3")
    urls = ",".join(f"https://{name}:7700" for name in coordinators)
    data_volumes = set()
    for name in coordinators:
        service = services[name]
        env = service["environment"]
        assert env["CONVEYOR_STORE"] == "etcds://etcd-1:2379,etcd-2:2379,etcd-3:2379", name
        assert env["CONVEYOR_PREFIX"] == "/conveyor/compose"
        assert env["CONVEYOR_ADVERTISED_URL"] == f"https://{name}:7700"
        assert (env["CONVEYOR_ETCD_CA"], env["CONVEYOR_ETCD_CERT"], env["CONVEYOR_ETCD_KEY"]) == (
            "/secrets/ca.pem", "/secrets/client.pem", "/secrets/client-key.pem"
        )  # fmt: skip
        assert env["CONVEYOR_AUTH"] == "true" and env["CONVEYOR_INTERNAL_MTLS"] == "true"
        assert "/readyz" in " ".join(service["healthcheck"]["test"]), name
        data_volumes.update(v.split(":")[0] for v in service["volumes"] if ":/data" in v)
        if name != "coordinator":
            assert service["profiles"] == ["ha"]
    assert len(data_volumes) == 3
    for name in ("broker-1", "broker-2", "broker-3"):
        assert services[name]["environment"]["CONVEYOR_COORDINATOR"] == urls
    # the demo clients, on the host's network, reach the first coordinator's published port
    assert services["demo-consumer"]["environment"]["CONVEYOR_URL"] == "https://localhost:7700"
    cluster = "etcd-1=https://etcd-1:2380,etcd-2=https://etcd-2:2380,etcd-3=https://etcd-3:2380"
    for number in (1, 2, 3):
        member = services[f"etcd-{number}"]
        env = member["environment"]
        assert member["profiles"] == ["ha"]
        assert env["ETCD_NAME"] == f"etcd-{number}"
        assert env["ETCD_ADVERTISE_CLIENT_URLS"] == f"https://etcd-{number}:2379"
        assert env["ETCD_INITIAL_ADVERTISE_PEER_URLS"] == f"https://etcd-{number}:2380"
        assert env["ETCD_INITIAL_CLUSTER"] == cluster
        assert env["ETCD_CLIENT_CERT_AUTH"] == env["ETCD_PEER_CLIENT_CERT_AUTH"] == "true"
        assert env["ETCD_TRUSTED_CA_FILE"] == env["ETCD_PEER_TRUSTED_CA_FILE"] == "/secrets/ca.pem"
        assert env["ETCD_AUTO_COMPACTION_MODE"] == "revision"
        assert f"etcd-{number}-data:/etcd-data:rw" in member["volumes"]
        assert "secrets:/secrets:ro" in member["volumes"]
        assert "ports" not in member  # inside the network only
        assert "endpoint" in member["healthcheck"]["test"]
    script = " ".join(services["init"]["command"])
    for host in ("coordinator-2", "coordinator-3", "etcd-1", "etcd-2", "etcd-3"):
        assert f"--host {host}" in script  # in the server certificate's names
    # each coordinator's environment is one the settings layer takes
    from conveyor.settings import env_warnings, load

    for name in coordinators:
        env = _settings_env(services[name]["environment"])
        loaded = load("coordinator", {}, env)
        assert env_warnings(env) == []
        assert loaded.values["store"].value.startswith("etcds://"), name


def test_compose_environment_passes_the_settings_layer() -> None:
    from conveyor.settings import SettingsError, env_warnings, load

    services = _compose_config()["services"]
    for name in CONVEYOR_SERVICES:
        env = _settings_env(services[name].get("environment", {}))
        load(_role(name), {}, env)
        assert env_warnings(env) == []
    # A typo in the host's .env reaches the coordinator, which then refuses to start.
    typo = _compose_config({"CONVEYOR_AUTO_CREATE_TOPICS": "ture"})["services"]["coordinator"]
    with pytest.raises(SettingsError, match="CONVEYOR_AUTO_CREATE_TOPICS='ture'"):
        load("coordinator", {}, _settings_env(typo["environment"]))


# ---- Kubernetes, high availability (deploy/kubernetes/ha: an overlay of the base) ----------

HA_KUBERNETES_DIR = KUBERNETES_DIR / "ha"


def _ha_files() -> list[Path]:
    return sorted(p for p in HA_KUBERNETES_DIR.glob("*.yaml") if p.name != "kustomization.yaml")


def _ha_objects() -> dict[tuple[str, str], dict[str, Any]]:
    objects = {}
    for path in _ha_files():
        for document in yaml.safe_load_all(path.read_text()):
            objects[(document["kind"], document["metadata"]["name"])] = document
    return objects


def test_kubernetes_ha_manifests_validate_strictly() -> None:
    resources = [p for p in _ha_files() if "$patch" not in p.read_text()]
    result = _run(BIN / "kubernetes-validate", "--strict", *resources)
    assert result.returncode == 0, result.stdout + result.stderr


def test_kubernetes_ha_overlay_replaces_the_single_coordinator() -> None:
    kustomization = yaml.safe_load((HA_KUBERNETES_DIR / "kustomization.yaml").read_text())
    patches = [p["path"] for p in kustomization["patches"]]
    listed = sorted([*[r for r in kustomization["resources"] if r != "../"], *patches])
    assert "../" in kustomization["resources"]  # everything else of the base
    assert listed == [p.name for p in _ha_files()]
    (patch,) = yaml.safe_load_all((HA_KUBERNETES_DIR / patches[0]).read_text())
    assert patch == {
        "$patch": "delete",
        "apiVersion": "apps/v1",
        "kind": "StatefulSet",
        "metadata": {"name": "conveyor-coordinator"},
    }
    assert {i["name"] for i in kustomization["images"]} == {"conveyor", "etcd"}


def test_kubernetes_etcd_members_use_tls_and_start_together() -> None:
    objects = _ha_objects()
    etcd = objects[("StatefulSet", "conveyor-etcd")]["spec"]
    assert etcd["replicas"] == 3 and etcd["podManagementPolicy"] == "Parallel"
    service = objects[("Service", etcd["serviceName"])]["spec"]
    assert service["clusterIP"] == "None" and service["publishNotReadyAddresses"] is True
    (container,) = etcd["template"]["spec"]["containers"]
    env = {e["name"]: e.get("value") for e in container["env"]}
    members = env["ETCD_INITIAL_CLUSTER"].split(",")
    assert [m.split("=")[0] for m in members] == [f"conveyor-etcd-{i}" for i in range(3)]
    assert all(m.split("=")[1].startswith("https://") for m in members)
    assert env["ETCD_CLIENT_CERT_AUTH"] == env["ETCD_PEER_CLIENT_CERT_AUTH"] == "true"
    assert env["ETCD_CERT_FILE"] == env["ETCD_PEER_CERT_FILE"] == "/secrets/server.pem"
    assert env["ETCD_TRUSTED_CA_FILE"] == "/secrets/ca.pem"
    assert env["ETCD_AUTO_COMPACTION_MODE"] == "revision"
    assert container["readinessProbe"]["httpGet"]["path"] == "/health"
    assert container["livenessProbe"]["tcpSocket"]["port"] == "metrics"
    assert etcd["volumeClaimTemplates"][0]["metadata"]["name"] == "data"
    budget = objects[("PodDisruptionBudget", "conveyor-etcd")]["spec"]
    assert budget["maxUnavailable"] == 1
    # the certificate names the members as the coordinators and their peers reach them
    job = _kubernetes_objects()[("Job", "conveyor-secrets-init")]["spec"]["template"]["spec"]
    script = " ".join(job["initContainers"][0]["args"])
    assert '--host "*.conveyor-etcd"' in script
    assert '--host "*.conveyor-etcd.${POD_NAMESPACE}.svc"' in script


def test_kubernetes_coordinators_are_three_on_etcd_with_tls_and_auth() -> None:
    from conveyor.settings import env_warnings, load

    objects = _ha_objects()
    deployment = objects[("Deployment", "conveyor-coordinator")]["spec"]
    assert deployment["replicas"] == 3
    pod = deployment["template"]
    assert pod["metadata"]["labels"]["app.kubernetes.io/component"] == "coordinator"
    (container,) = pod["spec"]["containers"]
    command = " ".join(container["command"] + container["args"])
    assert "conveyor coordinator --advertised-url" in command
    assert ".conveyor-coordinator-headless.${POD_NAMESPACE}.svc:7700" in command
    for probe in ("readinessProbe", "livenessProbe"):
        assert container[probe]["httpGet"]["scheme"] == "HTTPS", probe
    mounts = {m["name"]: m for m in container["volumeMounts"]}
    assert mounts["secrets"] == {"name": "secrets", "mountPath": "/secrets", "readOnly": True}
    volumes = {v["name"]: v for v in pod["spec"]["volumes"]}
    assert volumes["secrets"]["secret"]["secretName"] == "conveyor-secrets"
    env = {e["name"]: e["value"] for e in container["env"] if "value" in e}
    assert env["CONVEYOR_STORE"].startswith("etcds://conveyor-etcd-0.conveyor-etcd:2379,")
    assert env["CONVEYOR_STORE"].count(",") == 2
    assert (env["CONVEYOR_ETCD_CERT"], env["CONVEYOR_ETCD_KEY"]) == (
        "/secrets/client.pem", "/secrets/client-key.pem"
    )  # fmt: skip
    config = _kubernetes_objects()[("ConfigMap", "conveyor-config")]["data"]
    assert config["CONVEYOR_AUTH"] == "true" and config["CONVEYOR_INTERNAL_MTLS"] == "true"
    settings_env = _settings_env({**config, **env, "CONVEYOR_ADVERTISED_URL": "https://c:7700"})
    loaded = load("coordinator", {}, settings_env)
    assert loaded.values["store"].value.startswith("etcds://")
    assert env_warnings(settings_env) == []
    assert objects[("PodDisruptionBudget", "conveyor-coordinator")]["spec"]["maxUnavailable"] == 1
