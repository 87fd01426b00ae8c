"""The broker: hosts partition replicas and serves produce and fetch for those it leads.

Layout (pure modules first)::

    rules.py       pure: topic names, limits, high watermark, backoff, metadata ages
    reconcile.py   pure: hosted replicas + the coordinator's assignments -> actions
    routing.py     pure: which partition each record of the topic endpoint goes to
    jsonrecords.py pure: JSON records <-> record batches (the JSON conveniences only)
    partition.py   one hosted replica: log, role, epoch, high watermark, wake-ups
    replicas.py    the data dir and the set of hosted replicas; applies reconcile actions
    metadata.py    cache of the coordinator's metadata (routing, NOT_LEADER details)
    service.py     BrokerService: produce, fetch, offsets, routing; no transport
    heartbeat.py   the heartbeat + reconcile loop
    http.py        the HTTP adapter (routes)
    cli.py         command line; ``python -m conveyor.broker``
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from conveyor.broker.config import BrokerConfig
    from conveyor.broker.service import BrokerService, FetchResult

__all__ = ["BrokerConfig", "BrokerService", "FetchResult"]


def __getattr__(name: str) -> Any:
    # Lazy, so that ``conveyor --help`` (which imports conveyor.broker.cli) stays fast.
    if name == "BrokerConfig":
        from conveyor.broker.config import BrokerConfig

        return BrokerConfig
    if name in ("BrokerService", "FetchResult"):
        from conveyor.broker import service

        return getattr(service, name)
    raise AttributeError(name)
