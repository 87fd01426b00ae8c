"""Which optional extra provides which third-party module, for the one line a command
prints when its extra is not installed (``pip install conveyor-mq`` is the client only:
docs/client.md, "Installing")."""

from __future__ import annotations

import functools
import logging
import re
import sys
from collections.abc import Callable
from typing import Final

DISTRIBUTION: Final = "conveyor-mq"
# The extras a user installs, in the order a module found in several is credited to
# (``dev``, ``bench`` and ``deploy-test`` are the project's own).
USER_EXTRAS: Final = ("server", "cli", "zstd", "lz4")
# Distributions whose import name is not their normalized name (a unit test checks every
# package of the user extras imports under the name this gives).
IMPORT_NAMES: Final = {"kafka-python": "kafka", "pyyaml": "yaml"}
_REQUIREMENT = re.compile(r"\s*([A-Za-z0-9][A-Za-z0-9._-]*)")
_EXTRA_MARKER = re.compile(r"""extra\s*==\s*["']([^"']+)["']""")


def import_name(distribution: str) -> str:
    """The top-level module a distribution provides (``prometheus-client`` ->
    ``prometheus_client``)."""
    name = distribution.lower()
    return IMPORT_NAMES.get(name, re.sub(r"[-.]", "_", name))


@functools.cache
def extra_of_module() -> dict[str, str]:
    """Top-level module -> the extra that installs it, read from the installed package's
    own metadata, so a package added to an extra in pyproject.toml is covered without a
    second list to keep (``immutables`` once was missing from one). Imported here: only
    a failing command pays for importlib.metadata."""
    from importlib import metadata

    try:
        requirements = metadata.requires(DISTRIBUTION) or []
    except metadata.PackageNotFoundError:
        return {}
    found: dict[str, str] = {}
    for requirement in requirements:
        name, extra = _REQUIREMENT.match(requirement), _EXTRA_MARKER.search(requirement)
        if name is None or extra is None or extra.group(1) not in USER_EXTRAS:
            continue
        module = import_name(name.group(1))
        known = found.get(module)
        if known is None or USER_EXTRAS.index(extra.group(1)) < USER_EXTRAS.index(known):
            found[module] = extra.group(1)
    return found


def missing_extra(exc: ModuleNotFoundError) -> str | None:
    """One line naming the extra to install, or None when ``exc`` is not about one."""
    module = (exc.name or "").partition(".")[0]
    extra = extra_of_module().get(module)
    if extra is None:
        return None
    return (
        f"{module} is not installed: this needs conveyor-mq's {extra} extra "
        f"(pip install 'conveyor-mq[{extra}]')"
    )


def service_main(service: str, run: Callable[[], int]) -> int:
    """A service's ``python -m`` entry around ``run``: one line on stderr and exit code 2
    for an invalid setting, 1 for a missing extra or an operating error, 130 on Ctrl-C."""
    from conveyor.protocol.errors import ConveyorError
    from conveyor.settings.core import SettingsError

    prefix = f"conveyor {service}: error:"
    try:
        return run()
    except SettingsError as exc:
        print(f"{prefix} {exc.message}", file=sys.stderr)
        return 2
    except ModuleNotFoundError as exc:
        message = missing_extra(exc)
        if message is None:
            raise
        print(f"{prefix} {message}", file=sys.stderr)
        return 1
    except ConveyorError as exc:
        logging.getLogger(f"conveyor.{service}").error("%s failed: %s", service, exc)
        print(f"{prefix} {exc.message} ({exc.code.name})", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130
