"""Connection limits of one listener: a pure policy, no sockets, no clock, no asyncio.

A listener (the HTTP server of a broker or the coordinator, the Kafka listener) owns one
:class:`ConnectionLimiter` built from :class:`ConnectionLimits` and asks it about every
accepted connection before reading a byte from it::

    limiter = ConnectionLimiter(ConnectionLimits(connections_max=4096))
    refusal = limiter.admit("10.0.0.7")      # counts the connection when admitted
    if refusal is not None:
        ...  # answer refusal.message (HTTP: 503 TOO_MANY_CONNECTIONS) and close
    ...
    limiter.release("10.0.0.7")               # exactly once per admitted connection

The limits (Kafka's ``max.connections`` and ``max.connections.per.ip``, NATS's
``max_connections``): at most ``connections_max`` open connections on the listener, and at
most ``connections_per_address_max`` from one client address, so one client that leaks
connections cannot take the whole listener from the others. ``idle_timeout_ms`` is how
long a connection may sit without a request in progress (Kafka's
``connections.max.idle.ms``): the listener closes it, which also bounds a client that
connects and never sends anything.

Addresses are compared as strings: the shell passes the peer's IP address without the
port (IPv4-mapped IPv6 addresses are normalised by :func:`peer_address`). Clients behind one
NAT or proxy share an address, which is why the per-address default is generous.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass
from typing import Final, Literal

CONNECTIONS_MAX_DEFAULT: Final = 4096
CONNECTIONS_PER_ADDRESS_MAX_DEFAULT: Final = 1024
# Longer than a client's own idle close (aiohttp's client keeps idle connections 15 s) and
# than a fetch long-poll (30 s at most), so a healthy client never meets it.
IDLE_TIMEOUT_MS_DEFAULT: Final = 120_000

RefusalReason = Literal["listener_full", "address_full"]


@dataclass(frozen=True, slots=True)
class ConnectionLimits:
    """The settings of one listener; every value must be >= 1."""

    connections_max: int = CONNECTIONS_MAX_DEFAULT
    connections_per_address_max: int = CONNECTIONS_PER_ADDRESS_MAX_DEFAULT
    idle_timeout_ms: int = IDLE_TIMEOUT_MS_DEFAULT

    def __post_init__(self) -> None:
        for name in ("connections_max", "connections_per_address_max", "idle_timeout_ms"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, not {getattr(self, name)}")


@dataclass(frozen=True, slots=True)
class Refusal:
    """Why a connection was refused, for the refusal answer and the log line."""

    reason: RefusalReason
    message: str


class ConnectionLimiter:
    """Counts the open connections of one listener, in total and per client address.

    Not thread-safe: a listener's accept and close callbacks run on one event loop.
    Memory is bounded by the open connections (an address with none is forgotten).
    """

    def __init__(self, limits: ConnectionLimits) -> None:
        self.limits = limits
        self.open_count = 0
        self._by_address: dict[str, int] = {}
        self.refused_count: dict[str, int] = {"listener_full": 0, "address_full": 0}

    def admit(self, address: str) -> Refusal | None:
        """Count a new connection from ``address``, or say why it must be refused (then
        nothing is counted and :meth:`release` must not be called for it)."""
        limits = self.limits
        refusal: Refusal | None = None
        if self.open_count >= limits.connections_max:
            refusal = Refusal(
                "listener_full",
                f"the listener has {self.open_count} connections open, its limit "
                f"(connections_max {limits.connections_max}); retry later",
            )
        elif self._by_address.get(address, 0) >= limits.connections_per_address_max:
            refusal = Refusal(
                "address_full",
                f"{address} has {self._by_address[address]} connections open, the limit per "
                f"client address (connections_per_address_max "
                f"{limits.connections_per_address_max}); close some or retry later",
            )
        if refusal is not None:
            self.refused_count[refusal.reason] += 1
            return refusal
        self.open_count += 1
        self._by_address[address] = self._by_address.get(address, 0) + 1
        return None

    def release(self, address: str) -> None:
        """An admitted connection from ``address`` closed."""
        count = self._by_address.get(address, 0)
        if count <= 0 or self.open_count <= 0:
            raise AssertionError(f"release of a connection never admitted from {address}")
        if count == 1:
            del self._by_address[address]
        else:
            self._by_address[address] = count - 1
        self.open_count -= 1

    def open_from(self, address: str) -> int:
        return self._by_address.get(address, 0)

    @property
    def addresses(self) -> int:
        """Client addresses with at least one open connection."""
        return len(self._by_address)


def peer_address(peername: object) -> str:
    """The client address of a socket's ``peername`` (a tuple whose first item is the
    host), without the port; IPv4-mapped IPv6 (``::ffff:10.0.0.7``) as plain IPv4, so one
    client counts once whatever the listening socket's family. Anything else (a Unix
    socket, a test transport without a peer) is ``"unknown"``: those share one count."""
    if not isinstance(peername, tuple) or not peername or not isinstance(peername[0], str):
        return "unknown"
    host = peername[0]
    try:
        ip = ipaddress.ip_address(host.split("%", 1)[0])
    except ValueError:
        return host
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        return str(ip.ipv4_mapped)
    return str(ip)
