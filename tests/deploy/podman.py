"""Podman as the Docker engine of the deployment tests.

No Docker engine runs on the machines these tests run on, and no container registry is
reachable, so:

* the tools come from Debian (``scripts/system-deps/50-containers.sh``; root only);
* every podman call gets a ``containers.conf`` (through ``CONTAINERS_CONF``) choosing runc
  and ulimits that work here (the default crun and default ulimits do not);
* the base image is built with debootstrap from the Debian mirror apt already uses and
  imported (``tar | podman import``), once: it is kept and reused, as is the Prometheus
  image built on it from Debian's package;
* Debian's docker-compose (v1) talks to ``podman system service`` on a unix socket;
* podman runs health checks from systemd timers, and there is no systemd here, so
  :class:`HealthDriver` runs ``podman healthcheck run`` itself, as the timer would.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import re
import shutil
import subprocess
import tempfile
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from tests.waiting import wait_for

__all__ = ["REPO_ROOT", "Podman", "wait_for"]

REPO_ROOT = Path(__file__).resolve().parents[2]
SYSTEM_DEPS_SCRIPT = REPO_ROOT / "scripts" / "system-deps" / "50-containers.sh"
PROMETHEUS_DOCKERFILE = REPO_ROOT / "deploy" / "compose" / "prometheus-debian.Dockerfile"
ETCD_DOCKERFILE = REPO_ROOT / "deploy" / "compose" / "etcd-debian.Dockerfile"

BASE_IMAGE = "localhost/conveyor-base:bookworm"
PROMETHEUS_IMAGE = "localhost/conveyor-test-prometheus:bookworm"
ETCD_IMAGE = "localhost/conveyor-test-etcd:bookworm"
TOOLS = ("podman", "debootstrap", "docker-compose", "runc", "catatonit")
CONTAINERS_CONF = """\
[containers]
default_ulimits = ["nofile=20000:20000", "nproc=4096:4096"]

[engine]
runtime = "runc"
"""
BUILD_TIMEOUT_S = 900.0
COMMAND_TIMEOUT_S = 120.0


def missing_tools() -> list[str]:
    return [tool for tool in TOOLS if shutil.which(tool) is None]


def install_tools() -> str | None:
    """Install the tools when missing; returns why the tests must skip, or None.
    Everything here runs rootful podman (debootstrap, chroot, iptables port mappings)."""
    if os.geteuid() != 0:
        return "the container tests need root (rootful podman, debootstrap); not root here"
    if not missing_tools():
        return None
    if shutil.which("apt-get") is None:
        return f"podman & co missing ({', '.join(missing_tools())}) and no apt-get here"
    result = subprocess.run(
        ["bash", str(SYSTEM_DEPS_SCRIPT)],
        capture_output=True,
        text=True,
        timeout=BUILD_TIMEOUT_S,
        check=False,
    )
    still_missing = missing_tools()
    if still_missing:  # root with apt: a failed install is an error, not a reason to skip
        raise RuntimeError(
            f"{SYSTEM_DEPS_SCRIPT.name} left {still_missing} missing:\n"
            f"{result.stdout}{result.stderr}"
        )
    return None


@dataclass
class Podman:
    """Runs podman (and docker-compose) with this suite's containers.conf."""

    conf_path: Path

    @classmethod
    def create(cls, work_dir: Path) -> Podman:
        conf_path = work_dir / "containers.conf"
        conf_path.write_text(CONTAINERS_CONF)
        return cls(conf_path)

    def env(self, extra: dict[str, str] | None = None) -> dict[str, str]:
        # The services read CONVEYOR_* too: none of the caller's may leak into them.
        env = {k: v for k, v in os.environ.items() if not k.startswith("CONVEYOR_")}
        env["CONTAINERS_CONF"] = str(self.conf_path)
        env.update(extra or {})
        return env

    def run(
        self,
        *args: str,
        timeout_s: float = COMMAND_TIMEOUT_S,
        check: bool = True,
        stdin: int | None = None,
    ) -> subprocess.CompletedProcess[str]:
        result = subprocess.run(
            ["podman", *args],
            env=self.env(),
            capture_output=True,
            text=True,
            timeout=timeout_s,
            check=False,
            stdin=stdin,
        )
        if check and result.returncode != 0:
            raise RuntimeError(
                f"podman {' '.join(args)} failed ({result.returncode}):\n"
                f"{result.stdout}{_without_systemd_noise(result.stderr)}"
            )
        return result

    def image_exists(self, image: str) -> bool:
        return self.run("image", "exists", image, check=False).returncode == 0

    def build(self, tag: str, context: Path, dockerfile: Path, **build_args: str) -> None:
        # docker format keeps HEALTHCHECK (OCI images drop it); --layers=false leaves no
        # intermediate images behind.
        argv = ["build", "--format", "docker", "--layers=false", "-t", tag, "-f", str(dockerfile)]
        for name, value in build_args.items():
            argv += ["--build-arg", f"{name}={value}"]
        self.run(*argv, str(context), timeout_s=BUILD_TIMEOUT_S)

    def inspect(self, container: str, template: str) -> str:
        return self.run("inspect", "--format", template, container).stdout.strip()


def _without_systemd_noise(stderr: str) -> str:
    """podman logs an error for each health-check timer it cannot create without systemd."""
    return "\n".join(line for line in stderr.splitlines() if "systemd" not in line)


# ---- the base image --------------------------------------------------------------------


def os_codename() -> str:
    text = Path("/etc/os-release").read_text()
    match = re.search(r"^VERSION_CODENAME=\"?([a-z]+)\"?$", text, re.MULTILINE)
    if match is None:
        raise RuntimeError("no VERSION_CODENAME in /etc/os-release")
    return match.group(1)


def debian_mirror(codename: str, apt_dir: Path = Path("/etc/apt")) -> str:
    """The URI apt uses for ``codename`` itself (not -updates or -security), from
    sources.list (one-line format) or sources.list.d/*.sources (deb822)."""
    files = [apt_dir / "sources.list", *sorted((apt_dir / "sources.list.d").glob("*.list"))]
    for path in filter(Path.is_file, files):
        for line in path.read_text().splitlines():
            fields = re.sub(r"\[[^]]*\]", "", line.split("#", 1)[0]).split()
            if len(fields) >= 3 and fields[0] == "deb" and fields[2] == codename:
                return fields[1].rstrip("/")
    for path in sorted((apt_dir / "sources.list.d").glob("*.sources")):
        for stanza in re.split(r"\n\s*\n", path.read_text()):
            entry = _deb822(stanza)
            enabled = entry.get("Enabled", "yes").lower() != "no"
            is_deb = "deb" in entry.get("Types", "").split()
            if enabled and is_deb and codename in entry.get("Suites", "").split():
                return entry["URIs"].split()[0].rstrip("/")
    raise RuntimeError(f"no apt source for {codename!r} under {apt_dir}")


def _deb822(stanza: str) -> dict[str, str]:
    entry: dict[str, str] = {}
    for line in stanza.splitlines():
        if line.startswith("#") or ":" not in line or line[0].isspace():
            continue
        key, _, value = line.partition(":")
        entry[key.strip()] = value.strip()
    return entry


def ensure_base_image(podman: Podman) -> None:
    """Build ``BASE_IMAGE`` (Debian minbase + python3 + venv) unless it exists already.
    A lock file keeps two concurrent test runs from building it twice."""
    lock_path = Path(tempfile.gettempdir()) / "conveyor-base-image.lock"
    with lock_path.open("w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if podman.image_exists(BASE_IMAGE):
            return
        with tempfile.TemporaryDirectory(prefix="conveyor-rootfs-") as tmp:
            rootfs = Path(tmp) / "rootfs"
            _debootstrap(rootfs)
            _import_rootfs(podman, rootfs)


def _debootstrap(rootfs: Path) -> None:
    codename = os_codename()
    subprocess.run(
        [
            "debootstrap",
            "--variant=minbase",
            "--include=python3,python3-venv,ca-certificates",
            codename,
            str(rootfs),
            debian_mirror(codename),
        ],
        capture_output=True,
        check=True,
        timeout=BUILD_TIMEOUT_S,
    )
    # Trust what this host trusts (its local CAs, e.g. a TLS-inspecting proxy's), so pip
    # inside image builds reaches PyPI exactly as pip on the host does.
    local_cas = sorted(Path("/usr/local/share/ca-certificates").glob("**/*.crt"))
    for ca in local_cas:
        shutil.copy(ca, rootfs / "usr/local/share/ca-certificates" / ca.name)
    if local_cas:
        subprocess.run(
            ["chroot", str(rootfs), "update-ca-certificates"],
            capture_output=True,
            check=True,
            timeout=COMMAND_TIMEOUT_S,
        )
    for cache in ("var/cache/apt/archives", "var/lib/apt/lists"):
        for path in (rootfs / cache).glob("*"):
            if path.is_file():
                path.unlink()


def _import_rootfs(podman: Podman, rootfs: Path) -> None:
    with subprocess.Popen(["tar", "-C", str(rootfs), "-c", "."], stdout=subprocess.PIPE) as tar:
        assert tar.stdout is not None
        podman.run(
            "import",
            "--change",
            "ENV LANG=C.UTF-8",
            "-",
            BASE_IMAGE,
            stdin=tar.stdout.fileno(),
            timeout_s=BUILD_TIMEOUT_S,
        )
        tar.stdout.close()
    if tar.returncode != 0:
        raise RuntimeError(f"tar of {rootfs} failed ({tar.returncode})")


def ensure_prometheus_image(podman: Podman) -> None:
    """Prometheus from Debian's package on the base image (kept and reused)."""
    _ensure_debian_image(podman, PROMETHEUS_IMAGE, PROMETHEUS_DOCKERFILE)


def ensure_etcd_image(podman: Podman) -> None:
    """etcd from Debian's etcd-server and etcd-client on the base image (kept and reused)."""
    _ensure_debian_image(podman, ETCD_IMAGE, ETCD_DOCKERFILE)


def _ensure_debian_image(podman: Podman, tag: str, dockerfile: Path) -> None:
    if not podman.image_exists(tag):
        podman.build(tag, dockerfile.parent, dockerfile, BASE_IMAGE=BASE_IMAGE)


# ---- the Docker-compatible API and health checks ---------------------------------------


@contextlib.contextmanager
def api_service(podman: Podman, socket_path: Path) -> Iterator[str]:
    """``podman system service`` on ``socket_path`` while the block runs; yields the
    DOCKER_HOST value for docker-compose."""
    log_path = socket_path.with_suffix(".log")
    with log_path.open("w") as log:
        process = subprocess.Popen(
            ["podman", "system", "service", "--time=0", f"unix://{socket_path}"],
            env=podman.env(),
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    try:
        wait_for(socket_path.exists, 30, f"podman API socket {socket_path}")
        yield f"unix://{socket_path}"
    finally:
        process.terminate()
        try:
            process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=20)


class HealthDriver:
    """Runs every health check of a compose project's running containers every
    ``interval_s``: what podman's systemd timers would do if systemd ran here."""

    def __init__(self, podman: Podman, project: str, interval_s: float = 1.0) -> None:
        self._podman = podman
        self._project = project
        self._interval_s = interval_s
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="health-driver", daemon=True)

    def __enter__(self) -> HealthDriver:
        self._thread.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self._stop.set()
        self._thread.join(timeout=60)

    def _loop(self) -> None:
        while not self._stop.wait(self._interval_s):
            try:
                names = self._podman.run(
                    "ps",
                    "--filter",
                    f"label=com.docker.compose.project={self._project}",
                    "--format",
                    "{{.Names}}",
                    check=False,
                    timeout_s=30,
                ).stdout.split()
            except subprocess.TimeoutExpired:
                continue
            for name in names:
                # A container without a health check (the demo clients) just says so.
                with contextlib.suppress(subprocess.TimeoutExpired):
                    self._podman.run("healthcheck", "run", name, check=False, timeout_s=30)
