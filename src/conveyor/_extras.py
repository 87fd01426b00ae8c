"""Which optional extra provides which third-party module, for the one line a command
prints when its extra is not installed (``pip install conveyor-mq`` is the client only:
docs/client.md, "Installing")."""

from __future__ import annotations

import logging
import sys
from collections.abc import Callable
from typing import Final

EXTRA_OF_MODULE: Final = {
    "prometheus_client": "server",
    "uvloop": "server",
    "cryptography": "server",
    "kafka": "server",  # kafka-python: the Kafka listener's wire types
    "jinja2": "server",  # the web console
    "rich": "cli",
}


def missing_extra(exc: ModuleNotFoundError) -> str | None:
    """One line naming the extra to install, or None when ``exc`` is not about one."""
    module = (exc.name or "").partition(".")[0]
    extra = EXTRA_OF_MODULE.get(module)
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
