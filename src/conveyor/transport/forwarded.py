"""The browser's address on the web console's calls to the API, for the password-guessing
limit (``authlimit.py``). Pure: the caller passes the time and the key.

The console (``conveyor.console``) calls the services' HTTP API for its users, so every
password they type reaches the coordinator from the console's own address (loopback, or
another coordinator's with high availability). Keyed by that address, the per-address
limit on failed passwords would count every console user as one client: one guesser
would lock everybody else out of the console. So the console names the address it saw
in :data:`HEADER`, and the services key the limit by it instead of the peer's.

Nobody else may choose that key (a guesser would name a new address for every try), so
the value carries an HMAC-SHA256 of the address and the time under a key only the
services hold: derived from the cluster secret (:func:`derive_key`), so every coordinator
and broker of the cluster accepts what any coordinator's console signed; without a
secret, a random key of the process (its own console only). A value that does not verify
(no MAC, a wrong one, older than :data:`WINDOW_MS`, not an IP address) is ignored: the
peer's address counts, as for any client. The header changes nothing else: who is
authenticated and what they may do come from the credentials, as always.

Format: ``ADDRESS;TIME_MS;HEX_MAC`` where MAC = HMAC-SHA256(key, ``ADDRESS;TIME_MS``).
"""

from __future__ import annotations

import hashlib
import hmac
import ipaddress
from typing import Final

HEADER: Final = "X-Conveyor-Console-Client"
WINDOW_MS: Final = 60_000  # a signed value is accepted this long (clocks of one cluster)
VALUE_CHARS_MAX: Final = 200
_CONTEXT: Final = b"conveyor: the web console's client address, v1"


def derive_key(cluster_secret: str) -> bytes:
    """The signing key every service of a cluster derives from its shared secret (not
    the secret itself: a value that leaked would not authenticate anything)."""
    return hmac.new(cluster_secret.encode(), _CONTEXT, hashlib.sha256).digest()


def _mac(key: bytes, message: str) -> str:
    return hmac.new(key, message.encode(), hashlib.sha256).hexdigest()


def sign(key: bytes, address: str, now_ms: int) -> str:
    message = f"{address};{now_ms}"
    return f"{message};{_mac(key, message)}"


def verified(key: bytes | None, value: str | None, now_ms: int) -> str | None:
    """The address ``value`` names when it was signed with ``key`` within the window,
    else None (the caller then uses the peer's address)."""
    if key is None or not value or len(value) > VALUE_CHARS_MAX:
        return None
    address, sep, rest = value.partition(";")
    moment, sep2, mac = rest.partition(";")
    if not sep or not sep2 or not moment.isdigit() or len(moment) > 16:
        return None
    if not hmac.compare_digest(mac.encode(), _mac(key, f"{address};{moment}").encode()):
        return None
    if abs(now_ms - int(moment)) > WINDOW_MS:
        return None
    try:
        return str(ipaddress.ip_address(address))
    except ValueError:
        return None
