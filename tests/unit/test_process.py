"""``conveyor/_process.py``: a package's ``__init__`` deferred to its first attribute read
(kafka-python's and aiokafka's clients are not imported by the Kafka codec), and the
entry points' exit without the last collection."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest


def _run(code: str, cwd: Path | None = None) -> str:
    result = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        cwd=cwd,
    )
    assert result.returncode == 0, result.stderr
    return result.stdout.strip()


def test_the_kafka_codec_imports_neither_library_s_client() -> None:
    out = _run(
        "import sys\n"
        "import conveyor.protocol.kafka.codec, conveyor.protocol.fastrecords as f\n"
        "heavy = ('kafka.admin', 'kafka.consumer', 'kafka.producer', 'kafka.net',\n"
        "         'aiokafka.consumer', 'aiokafka.producer', 'aiokafka.client')\n"
        "print(sorted(m for m in heavy if m in sys.modules), f.compiled_available())\n"
    )
    assert out == "[] True"


def test_the_libraries_clients_still_import_as_usual_afterwards() -> None:
    out = _run(
        "import conveyor.protocol.kafka.codec, conveyor.protocol.fastrecords\n"
        "import kafka, aiokafka\n"
        "from kafka import KafkaConsumer, TopicPartition\n"
        "from aiokafka import AIOKafkaProducer\n"
        "import kafka.errors as errors\n"
        "print(kafka.__version__ != '', KafkaConsumer.__module__, AIOKafkaProducer.__name__,\n"
        "      errors.KafkaError.__name__, TopicPartition('t', 0).partition)\n"
    )
    assert out == "True kafka.consumer.group AIOKafkaProducer KafkaError 0"


@pytest.fixture
def package(tmp_path: Path) -> Path:
    """A package whose ``__init__`` leaves a mark, with a submodule that imports from it."""
    root = tmp_path / "heavy"
    root.mkdir()
    (root / "__init__.py").write_text(
        "import os\nos.environ['HEAVY_INIT'] = str(int(os.environ.get('HEAVY_INIT', '0')) + 1)\n"
        "from heavy import sub\nCLIENT = 'client'\n"
    )
    (root / "sub.py").write_text("VALUE = 42\n")
    return tmp_path


def test_a_deferred_package_runs_its_init_once_at_the_first_attribute_read(
    package: Path,
) -> None:
    out = _run(
        "import os, sys\n"
        "sys.path.insert(0, '.')\n"
        "from conveyor._process import defer_package_init\n"
        "defer_package_init('heavy')\n"
        "from heavy.sub import VALUE\n"
        "before = os.environ.get('HEAVY_INIT')\n"
        "import heavy\n"
        "first, second = heavy.CLIENT, heavy.CLIENT\n"
        "try:\n"
        "    heavy.missing\n"
        "except AttributeError as exc:\n"
        "    missing = str(exc)\n"
        "print(VALUE, before, os.environ['HEAVY_INIT'], first, missing)\n",
        cwd=package,
    )
    assert out == "42 None 1 client module 'heavy' has no attribute 'missing'"


def test_a_package_imported_already_is_left_alone(package: Path) -> None:
    out = _run(
        "import os, sys\n"
        "sys.path.insert(0, '.')\n"
        "import heavy\n"
        "from conveyor._process import defer_package_init\n"
        "defer_package_init('heavy')\n"
        "defer_package_init('not_installed_anywhere')\n"
        "print(sys.modules['heavy'] is heavy, os.environ['HEAVY_INIT'],\n"
        "      'not_installed_anywhere' in sys.modules)\n",
        cwd=package,
    )
    assert out == "True 1 False"


@pytest.mark.parametrize(
    ("module", "args", "status"),
    [
        ("conveyor", ["--version"], 0),
        ("conveyor", ["no-such-command"], 2),
        ("conveyor.broker", ["--listen", "nowhere"], 2),
        ("conveyor.coordinator", ["--listen", "nowhere"], 2),
    ],
)
def test_the_entry_points_exit_with_their_status(module: str, args: list[str], status: int) -> None:
    result = subprocess.run(
        [sys.executable, "-m", module, *args],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == status, result.stderr


def test_a_coordinator_with_its_console_imports_no_client() -> None:
    """The console imports the client package (every client module) only for an offset
    reset: about 0.13 s of CPU at each coordinator start otherwise."""
    out = _run(
        "import sys\n"
        "import conveyor.coordinator.cli, conveyor.coordinator.http, conveyor.console\n"
        "print(sorted(m for m in ('conveyor.client', 'kafka.admin') if m in sys.modules))\n"
        "from conveyor.console import forms\n"
        "print(forms.reset_target({'topic': 't', 'to': 'time', 'time': '2026-01-01T00:00:00Z'}))\n"
    )
    assert out == "[]\n('t', Timestamp(timestamp_ms=1767225600000))"
