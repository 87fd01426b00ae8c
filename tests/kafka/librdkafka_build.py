"""Get librdkafka's source from the npm registry and build its own test runner.

The npm package ``node-rdkafka`` ships librdkafka's whole source tree, tests/ included
(node-rdkafka 3.6.1 carries librdkafka 2.12.0), and npm is a registry CI reaches. The
tarball is pinned by its sha512 integrity (checked here on the bytes, not taken from npm's
word) and only ``package/deps/librdkafka/`` is extracted.

The build (``./configure && make libs``, then ``make -C tests build``: about 3 minutes on
2 cores) lives outside the repository, in ``$CONVEYOR_CACHE_DIR`` (default
``~/.cache/conveyor``) under ``librdkafka-<version>/``, so every clone and worktree on the
machine shares one build; a stamp file marks it complete and a file lock keeps two test
runs from building at once. Anything missing (npm, a compiler, a header) raises
``UnavailableError`` with the reason, and the suite skips with it
(scripts/system-deps/62-librdkafka-build.sh installs the build dependencies).
"""

from __future__ import annotations

import base64
import fcntl
import hashlib
import os
import shutil
import subprocess
import tarfile
import tempfile
from pathlib import Path

NODE_RDKAFKA = "node-rdkafka@3.6.1"
LIBRDKAFKA_VERSION = "2.12.0"
# `npm view node-rdkafka@3.6.1 dist.integrity`, checked against the downloaded bytes.
NODE_RDKAFKA_INTEGRITY = (
    "sha512-sfpTbrT35429cs0RE8Yb9avGX9BiRRvpV7aweQsghKTjtrVZP3jBrKOPItWXAqHb8doyh3Sku"
    "GuUVBLgig1SRg=="
)
_SOURCE_PREFIX = "package/deps/librdkafka/"
# GSSAPI (Kerberos) and libcurl (OIDC) are not tested here: leaving them out keeps the
# build dependencies to OpenSSL, zlib, zstd and lz4. --no-download: mklove must not fetch.
_CONFIGURE_ARGS = ("--no-download", "--disable-gssapi", "--disable-curl")
_BUILD_TIMEOUT_S = 1800.0
_STAMP = ".conveyor-built"


class UnavailableError(Exception):
    """The suite cannot run here (no npm, no compiler, ...); the message says why."""


def cache_root() -> Path:
    explicit = os.environ.get("CONVEYOR_CACHE_DIR")
    if explicit:
        return Path(explicit)
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "conveyor"


def build_dir() -> Path:
    return cache_root() / f"librdkafka-{LIBRDKAFKA_VERSION}"


def tests_dir() -> Path:
    """Where ``test-runner`` is (and runs from: the tests read fixtures relative to it)."""
    return build_dir() / "src" / "tests"


def ensure_built(log: Path | None = None) -> Path:
    """Return the tests directory with a built ``test-runner``, building it if needed."""
    root = build_dir()
    if (root / _STAMP).exists():
        return tests_dir()
    _check_tools()
    root.mkdir(parents=True, exist_ok=True)
    with (root / ".lock").open("w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # another run may be building: wait for it
        if not (root / _STAMP).exists():
            _build(root, log or root / "build.log")
    return tests_dir()


def _check_tools() -> None:
    missing = [tool for tool in ("npm", "gcc", "g++", "make") if shutil.which(tool) is None]
    headers = ("openssl/ssl.h", "zlib.h", "zstd.h", "lz4.h")
    missing += [h for h in headers if not Path("/usr/include", h).exists()]
    if missing:
        raise UnavailableError(
            f"cannot build librdkafka's test suite: missing {', '.join(missing)} "
            "(scripts/system-deps/62-librdkafka-build.sh installs them)"
        )


def _build(root: Path, log: Path) -> None:
    source = root / "src"
    shutil.rmtree(source, ignore_errors=True)
    tarball = _download(root)
    _extract(tarball, source)
    env = dict(os.environ, MAKEFLAGS=f"-j{os.cpu_count() or 2}")
    steps = (
        ["./configure", *_CONFIGURE_ARGS],
        ["make", "libs"],
        ["make", "-C", "tests", "build"],
    )
    with log.open("wb") as out:
        for argv in steps:
            result = subprocess.run(
                argv, cwd=source, stdout=out, stderr=subprocess.STDOUT, env=env,
                timeout=_BUILD_TIMEOUT_S, check=False,
            )  # fmt: skip
            if result.returncode != 0:
                raise UnavailableError(f"librdkafka build step {argv} failed; see {log}")
    if not (source / "tests" / "test-runner").exists():
        raise UnavailableError(f"librdkafka build produced no tests/test-runner; see {log}")
    (root / _STAMP).write_text(f"{NODE_RDKAFKA} librdkafka {LIBRDKAFKA_VERSION}\n")


def _download(root: Path) -> Path:
    with tempfile.TemporaryDirectory(dir=root) as tmp:
        result = subprocess.run(
            ["npm", "pack", NODE_RDKAFKA, "--pack-destination", tmp, "--silent"],
            cwd=tmp, capture_output=True, timeout=600, check=False,
        )  # fmt: skip
        packed = list(Path(tmp).glob("*.tgz"))
        if result.returncode != 0 or len(packed) != 1:
            detail = result.stderr.decode(errors="replace")[-500:]
            raise UnavailableError(f"npm pack {NODE_RDKAFKA} failed: {detail}")
        verify_integrity(packed[0].read_bytes(), NODE_RDKAFKA_INTEGRITY)
        target = root / packed[0].name
        packed[0].replace(target)
    return target


def verify_integrity(data: bytes, integrity: str) -> None:
    """Check ``data`` against an npm/SRI integrity string (``sha512-<base64>``)."""
    algorithm, _, expected = integrity.partition("-")
    if algorithm != "sha512":
        raise ValueError(f"unsupported integrity algorithm {algorithm!r}")
    actual = base64.b64encode(hashlib.sha512(data).digest()).decode()
    if actual != expected:
        raise UnavailableError(f"{NODE_RDKAFKA} tarball integrity mismatch: sha512-{actual}")


def _extract(tarball: Path, source: Path) -> None:
    with tarfile.open(tarball, "r:gz") as archive:
        members = []
        for member in archive.getmembers():
            if not member.name.startswith(_SOURCE_PREFIX):
                continue
            member.name = member.name[len(_SOURCE_PREFIX) :]
            if member.name:
                members.append(member)
        # The "data" filter refuses absolute paths, links out of the tree and devices.
        archive.extractall(source, members=members, filter="data")
