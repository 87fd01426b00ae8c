"""Which transport a client's data path speaks (docs/client.md, "Transports").

Apart from the Kafka transport's modules so that the client imports them, and with them
kafka-python's protocol module (the ``server`` extra today), only when a client asks for
``transport="kafka"`` or ``bootstrap_servers``: the client-only install stays without it.
"""

from __future__ import annotations

from typing import Literal

Transport = Literal["http", "kafka"]


def pick_transport(transport: str | None, bootstrap_servers: str | None) -> Transport:
    """``transport``, else "kafka" when ``bootstrap_servers`` is given, else "http"."""
    if transport is None:
        return "http" if bootstrap_servers is None else "kafka"
    if transport == "http" and bootstrap_servers is None:
        return "http"
    if transport == "kafka":
        return "kafka"
    raise ValueError(
        f"transport must be 'http' or 'kafka' (bootstrap_servers needs 'kafka'), not {transport!r}"
    )


def client_transport(
    transport: str | None, bootstrap_servers: str | None
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
    return pick_transport(transport, bootstrap_servers), bootstrap_servers
