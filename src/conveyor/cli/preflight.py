"""Before a command talks to the cluster: is the URL a coordinator that answers?

One ``GET /healthz`` (public, even with auth on) on the URL the command will use, so a
wrong ``CONVEYOR_URL`` or ``--url`` ends in one clear line at once, instead of the client
library's retries (which are right for a running application, whose coordinator may be
restarting, and wrong for a person who typed the URL):

* not an ``http(s)://HOST:PORT`` URL: ``INVALID_REQUEST``, at once;
* a TLS handshake that fails (``https://`` to a plain-HTTP service, an unknown CA):
  ``TLS_ERROR``, at once;
* a broker's URL: "this is a broker, not the coordinator", at once;
* nothing answering (connection refused, unknown host, a plain-HTTP request to an HTTPS
  service): ``NETWORK_ERROR`` after ``WAIT_S`` (a cluster being started in another
  terminal gets that long), with what to check.
"""

from __future__ import annotations

import time
from typing import Final

import msgspec

from conveyor.protocol.errors import ConveyorError, ErrorCode, InvalidRequestError
from conveyor.protocol.messages import Health
from conveyor.transport.client import SyncHTTP, coordinator_set

WAIT_S: Final = 2.0


def needs_coordinator() -> bool:
    """Whether a command's clients go to the coordinator: not when they speak Kafka to
    bootstrap servers (``--bootstrap-server``, ``CONVEYOR_BOOTSTRAP_SERVERS``), where only
    the brokers' Kafka listeners may be reachable (their own errors say what failed)."""
    from conveyor.client.transport_choice import client_transport

    transport, servers = client_transport(None, None)
    return transport == "http" or servers is None


def check_coordinator(url: str | None) -> str:
    """The first coordinator URL that answers (several may be given, comma-separated:
    coordinator high availability); raises one typed error otherwise."""
    urls = coordinator_set(url).urls  # INVALID_REQUEST for a malformed list
    http = SyncHTTP(timeout_s=2.0, pool_size=1)
    deadline = time.monotonic() + WAIT_S
    try:
        while True:
            last: ConveyorError | None = None
            for base in urls:
                try:
                    response = http.request("GET", f"{base}/healthz")
                except ConveyorError as exc:
                    if exc.code is not ErrorCode.NETWORK_ERROR:
                        raise
                    last = exc
                    continue
                return _checked(base, response.data)
            assert last is not None
            if time.monotonic() >= deadline:
                raise _unreachable(",".join(urls), last) from None
            time.sleep(0.2)
    finally:
        http.close()


def _checked(base: str, data: bytes) -> str:
    try:
        health = msgspec.json.decode(data, type=Health)
    except (msgspec.DecodeError, msgspec.ValidationError):
        raise InvalidRequestError(f"{base} answered, but it is not a Conveyor service") from None
    if health.service != "coordinator":
        raise InvalidRequestError(
            f"{base} is a {health.service}, not the coordinator: point CONVEYOR_URL (or --url) "
            "at the coordinator (port 7700 in `conveyor dev`)"
        )
    return base


def _reason(message: str) -> str:
    """The gist of a connection failure from urllib3's message."""
    lowered = message.lower()
    for needle, reason in (
        ("connection refused", "connection refused"),
        ("failed to resolve", "unknown host"),
        ("name or service not known", "unknown host"),
        ("timed out", "timed out"),
        ("disconnect", "the server closed the connection"),
        ("connection aborted", "the server closed the connection"),
        ("connection reset", "the server closed the connection"),
    ):
        if needle in lowered:
            return reason
    return message.split(": ", 1)[-1]


def _unreachable(base: str, exc: ConveyorError) -> ConveyorError:
    reason = _reason(exc.message)
    hint = "is the cluster running (`make run`)? Check CONVEYOR_URL or --url"
    if base.startswith("http://") and reason == "the server closed the connection":
        hint = "if the cluster serves HTTPS, use an https:// URL"
    return ConveyorError(
        f"cannot reach the coordinator at {base} ({reason}): {hint}", code=ErrorCode.NETWORK_ERROR
    )
