"""Which transport a client's data path speaks (docs/client.md, "Transports").

Apart from the Kafka transport's modules so that the client imports them, and with them
kafka-python's protocol module (the ``server`` extra today), only when a client asks for
``transport="kafka"`` or ``bootstrap_servers``: the client-only install stays without it.
"""

from __future__ import annotations

from typing import Literal

Transport = Literal["http", "kafka"]


def pick_transport(
    transport: str | None, bootstrap_servers: str | None, default: Transport = "kafka"
) -> Transport:
    """``transport``, else "kafka" when ``bootstrap_servers`` is given, else ``default``
    (the data path: Kafka; ``Admin``: the coordinator's HTTP API, admin_transport.py)."""
    if transport is None:
        return default if bootstrap_servers is None else "kafka"
    if transport == "http" and bootstrap_servers is None:
        return "http"
    if transport == "kafka":
        return "kafka"
    raise ValueError(
        f"transport must be 'http' or 'kafka' (bootstrap_servers needs 'kafka'), not {transport!r}"
    )


def client_transport(
    transport: str | None, bootstrap_servers: str | None, default: Transport = "kafka"
) -> tuple[Transport, str | None]:
    """The transport and bootstrap servers of a client given neither: the client settings
    (``--transport``/``--bootstrap-server`` of the CLI, ``CONVEYOR_TRANSPORT``,
    ``CONVEYOR_BOOTSTRAP_SERVERS``, the config file); either given: those alone."""
    if transport is None and bootstrap_servers is None:
        from conveyor.settings import catalog, client_settings

        settings = client_settings()
        transport, bootstrap_servers = (
            settings[catalog.TRANSPORT],
            settings[catalog.BOOTSTRAP_SERVERS],
        )
    return pick_transport(transport, bootstrap_servers, default), bootstrap_servers
