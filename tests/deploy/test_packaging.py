"""The wheel a user installs: built from the repository, inspected, and installed with its
dependencies into a fresh virtual environment that shares nothing with the dev one: with
the server and cli extras (every role, as the image installs it), and alone (the client
library: no server-only package installed, the compiled record codec installed, and a
server command names its extra)."""

from __future__ import annotations

import shutil
import subprocess
import sys
import tomllib
import venv
import zipfile
from email.parser import Parser
from pathlib import Path

import pytest

from conveyor import __version__
from conveyor._extras import extra_of_module

REPO_ROOT = Path(__file__).resolve().parents[2]
PIP_TIMEOUT_S = 300

# Every module imports in the fresh install: no runtime dependency only the dev extra has.
IMPORT_ALL = """
import importlib, pkgutil, conveyor
modules = pkgutil.walk_packages(conveyor.__path__, "conveyor.")
names = [m.name for m in modules if not m.name.endswith(".__main__")]
for name in names:
    importlib.import_module(name)
print(len(names))
"""


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Built from a copy of what the Dockerfile's build stage gets (.dockerignore), so the
    build leaves nothing in the checkout and needs nothing else from it."""
    source = tmp_path_factory.mktemp("source")
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(REPO_ROOT / name, source / name)
    shutil.copytree(
        REPO_ROOT / "src",
        source / "src",
        ignore=shutil.ignore_patterns("__pycache__", "*.pyc", "*.egg-info", ".mypy_cache"),
    )
    out = tmp_path_factory.mktemp("wheel")
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--wheel-dir", str(out), "."],
        cwd=source,
        check=True,
        capture_output=True,
        timeout=PIP_TIMEOUT_S,
    )
    (path,) = out.glob("conveyor_mq-*.whl")
    return path


def _wheel_text(wheel: Path, suffix: str) -> str:
    with zipfile.ZipFile(wheel) as archive:
        (name,) = [n for n in archive.namelist() if n.endswith(suffix)]
        return archive.read(name).decode()


def test_wheel_metadata_has_the_console_script_and_dependencies(wheel: Path) -> None:
    assert wheel.name == f"conveyor_mq-{__version__}-py3-none-any.whl"
    entry_points = _wheel_text(wheel, ".dist-info/entry_points.txt")
    assert "conveyor = conveyor.cli.main:command" in entry_points
    metadata = Parser().parsestr(_wheel_text(wheel, ".dist-info/METADATA"))
    assert metadata["Name"] == "conveyor-mq"
    assert metadata["Version"] == __version__
    assert metadata["Requires-Python"] == ">=3.11"
    project = tomllib.loads((REPO_ROOT / "pyproject.toml").read_text())["project"]
    requires = set(metadata.get_all("Requires-Dist") or [])
    for dependency in project["dependencies"]:
        name = dependency.split(">=")[0].split(";")[0]
        assert any(r.startswith(name) for r in requires), dependency
    extras = set(metadata.get_all("Provides-Extra") or [])
    assert set(project["optional-dependencies"]) <= extras


def test_wheel_holds_every_package_and_the_type_marker(wheel: Path) -> None:
    with zipfile.ZipFile(wheel) as archive:
        names = set(archive.namelist())
    source = REPO_ROOT / "src"
    expected = {str(p.relative_to(source)) for p in source.glob("conveyor/**/*.py")}
    assert expected <= names
    assert "conveyor/py.typed" in names
    # The web console's templates and vendored assets (no network at run time).
    console = source / "conveyor" / "console"
    data = {
        str(p.relative_to(source))
        for folder in ("templates", "static")
        for p in (console / folder).iterdir()
    }
    assert data and data <= names


def _pip_install(python: Path, requirement: str) -> None:
    subprocess.run(
        [str(python), "-m", "pip", "install", "--quiet", requirement],
        check=True,
        capture_output=True,
        timeout=PIP_TIMEOUT_S,
    )


@pytest.fixture(scope="module")
def fresh_venv(wheel: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A virtualenv with the wheel alone (the client install). The full-install test adds
    the extras to this same one afterwards: the common dependencies are installed once."""
    env_dir = tmp_path_factory.mktemp("fresh") / "venv"
    venv.create(env_dir, with_pip=True, system_site_packages=False)
    _pip_install(env_dir / "bin" / "python", str(wheel))
    return env_dir


@pytest.mark.slow
def test_client_only_install_has_no_server_packages(fresh_venv: Path, tmp_path: Path) -> None:
    python, conveyor = fresh_venv / "bin" / "python", fresh_venv / "bin" / "conveyor"
    # every module of every extra (server: immutables, kafka, jinja2, ...): none installed
    extras = tuple(sorted(extra_of_module()))
    probe = (
        "import importlib.util, conveyor; from conveyor import Producer, Consumer; "
        "from conveyor.protocol.fastrecords import compiled_available; "
        f"print(sorted(m for m in {extras!r} if importlib.util.find_spec(m)), "
        "compiled_available())"
    )
    result = subprocess.run(
        [str(python), "-c", probe], capture_output=True, text=True, timeout=60, check=False
    )
    # and the compiled record codec came with it, from a wheel (no compiler here either)
    assert (result.returncode, result.stdout.strip()) == (0, "[] True"), result.stderr
    version = subprocess.run(
        [str(conveyor), "--version"], capture_output=True, text=True, timeout=60, check=False
    )
    assert version.stdout.strip() == f"conveyor {__version__}", version.stderr
    server = subprocess.run(
        [str(conveyor), "coordinator", "--data", str(tmp_path / "data")],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert server.returncode == 1
    assert server.stderr.strip().endswith("(pip install 'conveyor-mq[server]')"), server.stderr


@pytest.mark.slow
def test_fresh_venv_from_the_wheel_runs_conveyor(
    wheel: Path, fresh_venv: Path, tmp_path: Path
) -> None:
    env_dir = fresh_venv
    python, conveyor = env_dir / "bin" / "python", env_dir / "bin" / "conveyor"
    _pip_install(python, f"{wheel}[server,cli]")  # every role, as the image installs it

    def run(*argv: str) -> str:
        result = subprocess.run(
            list(argv), capture_output=True, text=True, timeout=60, check=False, cwd=tmp_path
        )
        assert result.returncode == 0, f"{argv[1:]}: {result.stdout}{result.stderr}"
        return result.stdout.strip()

    assert run(str(conveyor), "--version") == f"conveyor {__version__}"
    help_text = run(str(conveyor), "--help")
    for command in ("coordinator", "broker", "produce", "consume", "topic"):
        assert command in help_text
    assert int(run(str(python), "-c", IMPORT_ALL)) > 20
    # Installed, not borrowed from the checkout or the dev environment.
    location = run(str(python), "-c", "import conveyor; print(conveyor.__file__)")
    assert location.startswith(str(env_dir))
