"""The ``Authorization`` header a client sends. Kept apart from ``transport/auth.py`` (the
services' middleware, which needs aiohttp's server and prometheus_client) so that the
client library imports nothing of the server side (docs/client.md, "Installing")."""

from __future__ import annotations

import base64

from conveyor.protocol.errors import ConveyorError, ErrorCode


def authorization_header(
    token: str | None = None, user: str | None = None, password: str | None = None
) -> str | None:
    """Bearer for a token, else Basic for a user and password, else None."""
    if token:
        return f"Bearer {token}"
    if user is not None and password is not None:
        return "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()
    if user is not None:
        raise ConveyorError("a user name needs a password", code=ErrorCode.INVALID_REQUEST)
    return None
