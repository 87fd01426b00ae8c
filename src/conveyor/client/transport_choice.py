"""What a client's data path speaks: the brokers' Kafka listeners, and nothing else
(docs/client.md, "Transport").

``Producer``, ``AsyncProducer``, ``Consumer``, ``AsyncConsumer``, the seed functions and
the CLI's ``produce``/``consume`` send metadata, produce, fetch, list offsets, group
membership and commits only over Kafka. ``transport=`` is still accepted so that code
written for the two-transport client keeps working when it says ``"kafka"``; the old
``"http"`` fails at construction with :class:`KafkaOnlyError`, which names what to use
instead. ``Admin`` alone still offers ``"http"``: by default it reads over the brokers'
Kafka listeners and sends changes to the coordinator (``admin_routed.py``).
"""

from __future__ import annotations

from typing import Final, Literal

from conveyor.client.errors import KafkaOnlyError

Transport = Literal["http", "kafka"]
KAFKA_ONLY: Final = (
    "transport='http' was removed: the client's data path speaks only the Kafka protocol "
    "to the brokers' Kafka listeners (url= still bootstraps from the coordinator, or give "
    "bootstrap_servers=). Without a Kafka client (curl, other languages), use the brokers' "
    "HTTP REST API (docs/api.md)"
)


def data_transport(transport: str | None) -> Literal["kafka"]:
    """The data path's transport: Kafka, whatever was asked; ``"http"`` (removed) and
    anything else raise :class:`KafkaOnlyError` (an ``InvalidRequestError``)."""
    if transport is None or transport == "kafka":
        return "kafka"
    if transport == "http":
        raise KafkaOnlyError(KAFKA_ONLY)
    raise KafkaOnlyError(f"transport must be 'kafka' (or left out), not {transport!r}")


AdminRoute = Literal["http", "kafka", "routed"]


def pick_transport(transport: str | None, bootstrap_servers: str | None) -> AdminRoute:
    """An ``Admin``'s transport: ``transport`` ("http": every call to the coordinator;
    "kafka": every call Kafka carries to the brokers), else "kafka" when
    ``bootstrap_servers`` is given (no coordinator at all), else "routed": reads over the
    brokers' Kafka listeners, changes at the coordinator (``admin_routed.py``)."""
    if transport is None:
        return "routed" if bootstrap_servers is None else "kafka"
    if transport == "http" and bootstrap_servers is None:
        return "http"
    if transport == "kafka":
        return "kafka"
    raise ValueError(
        f"transport must be 'http' or 'kafka' (bootstrap_servers needs 'kafka'), not {transport!r}"
    )


def client_transport(
    transport: str | None, bootstrap_servers: str | None
) -> tuple[str | None, str | None]:
    """The transport and bootstrap servers of a client given neither: the client settings
    (``--transport``/``--bootstrap-server`` of the CLI, ``CONVEYOR_TRANSPORT``,
    ``CONVEYOR_BOOTSTRAP_SERVERS``, the config file); either given: those alone. The
    transport is as set (None when unset): each client checks it (``data_transport``,
    ``pick_transport``)."""
    if transport is None and bootstrap_servers is None:
        from conveyor.settings import catalog, client_settings

        settings = client_settings()
        transport, bootstrap_servers = (
            settings[catalog.TRANSPORT],
            settings[catalog.BOOTSTRAP_SERVERS],
        )
    return transport, bootstrap_servers
