"""The TLS options every service shares beyond ``--tls-cert``, ``--tls-key`` and ``--ca``
(which each service declares itself), and the one function that turns them into a
:class:`TLSConfig` with its checks.

Each option falls back to its environment variable: ``CONVEYOR_INTERNAL_MTLS``,
``CONVEYOR_TLS_CLIENT_CERT``, ``CONVEYOR_TLS_CLIENT_KEY``.
"""

from __future__ import annotations

import argparse
import os

from conveyor.protocol.errors import InvalidRequestError
from conveyor.transport.tls import TLSConfig


def _env_flag(name: str) -> bool:
    raw = os.environ.get(name) or ""
    if raw.lower() in ("", "0", "false", "no", "off"):
        return False
    if raw.lower() in ("1", "true", "yes", "on"):
        return True
    raise InvalidRequestError(f"{name} must be true or false, not {raw!r}")


def add_mtls_arguments(parser: argparse.ArgumentParser, *, client_cert: bool) -> None:
    parser.add_argument(
        "--internal-mtls",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="internal routes (heartbeats, replication) accept only connections with a "
        "client certificate signed by --ca (env CONVEYOR_INTERNAL_MTLS=true)",
    )
    if client_cert:
        parser.add_argument(
            "--tls-client-cert",
            metavar="PEM",
            default=os.environ.get("CONVEYOR_TLS_CLIENT_CERT") or None,
            help="certificate this process presents to the coordinator and other brokers "
            "(default with --internal-mtls: --tls-cert, which then needs clientAuth usage)",
        )
        parser.add_argument(
            "--tls-client-key",
            metavar="PEM",
            default=os.environ.get("CONVEYOR_TLS_CLIENT_KEY") or None,
        )


def tls_from_args(args: argparse.Namespace) -> TLSConfig:
    """The service's TLS settings; raises ``InvalidRequestError`` for inconsistent ones."""
    if args.tls_key and not args.tls_cert:
        raise InvalidRequestError("--tls-key needs --tls-cert")
    internal_mtls = args.internal_mtls
    if internal_mtls is None:
        internal_mtls = _env_flag("CONVEYOR_INTERNAL_MTLS")
    if internal_mtls and not args.tls_cert:
        raise InvalidRequestError("--internal-mtls needs --tls-cert (mutual TLS is TLS)")
    client_cert = getattr(args, "tls_client_cert", None)
    client_key = getattr(args, "tls_client_key", None)
    if client_key and not client_cert:
        raise InvalidRequestError("--tls-client-key needs --tls-client-cert")
    if client_cert is None and internal_mtls:
        client_cert, client_key = args.tls_cert, args.tls_key
    return TLSConfig(
        certfile=args.tls_cert,
        keyfile=args.tls_key,
        cafile=args.ca,
        internal_mtls=bool(internal_mtls),
        client_certfile=client_cert,
        client_keyfile=client_key,
    )
