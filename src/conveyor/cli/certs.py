"""``conveyor certs init DIR`` and ``conveyor certs renew DIR``: a local CA and the
certificates a cluster needs for HTTPS and mutual TLS (``conveyor.transport.certs``).

``init`` refuses to overwrite an existing CA unless ``--force`` (a new CA invalidates every
certificate the cluster trusts); ``renew`` reissues the server certificate from the existing
CA, after which ``kill -HUP`` makes running services serve it without a restart.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import TYPE_CHECKING

from conveyor.cli.common import EXIT_OK, positive_int
from conveyor.cli.output import print_line
from conveyor.protocol.errors import InvalidRequestError

if TYPE_CHECKING:
    from conveyor.cli.common import Subparsers


def register(subparsers: Subparsers) -> None:
    certs = subparsers.add_parser(
        "certs",
        help="create a local CA and TLS certificates (development, tests)",
        description="Create a local certificate authority and the certificates for HTTPS "
        "and mutual TLS. See docs/security.md.",
    )
    actions = certs.add_subparsers(title="actions", dest="certs_action", metavar="ACTION")
    actions.required = True
    init = actions.add_parser(
        "init",
        help="create DIR/ca.pem, server.pem, client.pem and their keys",
        description="Create a CA, a server certificate (SANs 127.0.0.1, ::1, localhost and "
        "each --host; usable as a client certificate for mutual TLS) and a client "
        "certificate, all signed by the CA, in DIR. Private keys are mode 0600.",
    )
    init.add_argument("directory", metavar="DIR", type=Path)
    _host_and_days(init)
    init.add_argument(
        "--force", action="store_true", help="replace an existing CA (and every certificate)"
    )
    init.set_defaults(handler=_init)
    renew = actions.add_parser(
        "renew",
        help="reissue DIR/server.pem from DIR's CA (then SIGHUP the services)",
        description="Issue a new server certificate and key (new serial) signed by the CA "
        "in DIR, replacing server.pem and server-key.pem atomically. Running services load "
        "it on SIGHUP without dropping connections.",
    )
    renew.add_argument("directory", metavar="DIR", type=Path)
    _host_and_days(renew)
    renew.set_defaults(handler=_renew)


def _host_and_days(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--host",
        action="append",
        default=[],
        metavar="NAME|IP",
        help="another name or address the services are reached at (repeatable)",
    )
    parser.add_argument(
        "--days", type=positive_int, default=825, help="server/client validity (825)"
    )


def _init(args: argparse.Namespace) -> int:
    from conveyor.transport.certs import CertPaths, init_certs

    paths = CertPaths(args.directory)
    if paths.ca.exists() and not args.force:
        raise InvalidRequestError(
            f"{paths.ca} exists: use --force to replace the CA, or 'conveyor certs renew' "
            "to reissue the server certificate"
        )
    init_certs(args.directory, args.host, days=args.days)
    print_line(f"created in {args.directory}:")
    for path in paths.all():
        print_line(f"  {path.name}")
    print_line("servers:")
    print_line(f"  --tls-cert {paths.server_cert}")
    print_line(f"  --tls-key {paths.server_key}")
    print_line(f"  --ca {paths.ca} [--internal-mtls]")
    print_line(f"clients: export CONVEYOR_CA={paths.ca}")
    return EXIT_OK


def _renew(args: argparse.Namespace) -> int:
    from conveyor.transport.certs import CertPaths, issue_server_cert

    paths = CertPaths(args.directory)
    if not (paths.ca.is_file() and paths.ca_key.is_file()):
        raise InvalidRequestError(f"no CA in {args.directory}: run 'conveyor certs init' first")
    cert = issue_server_cert(paths, args.host, days=args.days)
    print_line(
        f"reissued {paths.server_cert} (serial {cert.serial_number:x}); "
        "send SIGHUP to the services to serve it"
    )
    return EXIT_OK
