"""A broker's copy of the coordinator's users, tokens and ACLs (``transport/auth.py``).

With auth on, every heartbeat round also asks the coordinator for the security state
newer than the version the broker holds (``GET /internal/v1/security?version=N``, 204
when nothing changed), so a change (a revoked token, a removed rule) is enforced by every
broker within one heartbeat interval (plus one refresh round trip), and checks need no
coordinator round trip.

A broker that cannot reach the coordinator keeps enforcing the last state it received for
``max_staleness_ms`` (``--security-max-staleness-ms``, 10 s) after its last confirmed
refresh, then refuses client requests (503 ``NOT_READY``) until it is confirmed again: a
revocation reaches every broker, or the broker stops serving, within that bound.
"""

from __future__ import annotations

import logging

import msgspec

from conveyor.protocol.security import SecuritySnapshot
from conveyor.transport.auth import BrokerSecurity
from conveyor.transport.client import AsyncHTTP

log = logging.getLogger(__name__)

SECURITY_PATH = "/internal/v1/security"


async def refresh_security(
    security: BrokerSecurity, http: AsyncHTTP, coordinator_url: str, timeout_s: float
) -> None:
    """Fetch the security state newer than the one held (narrow: the holder, the HTTP
    client, where the coordinator is)."""
    if not security.enabled:
        return
    known = -1 if security.snapshot is None else security.snapshot.version
    url = f"{coordinator_url.rstrip('/')}{SECURITY_PATH}?version={known}"
    status, _, body = await http.request("GET", url, timeout_s=timeout_s)
    if status == 204:
        security.confirm()
        return
    snapshot = msgspec.json.decode(body, type=SecuritySnapshot)
    security.confirm()
    if security.update(snapshot):
        log.info(
            "security state version %d: %d users, %d tokens, %d acl rules",
            snapshot.version,
            len(snapshot.users),
            len(snapshot.tokens),
            len(snapshot.acls),
        )
