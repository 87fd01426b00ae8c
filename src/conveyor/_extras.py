"""Which optional extra provides which third-party module, for the one line a command
prints when its extra is not installed (``pip install conveyor-mq`` is the client only:
docs/client.md, "Installing")."""

from __future__ import annotations

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
