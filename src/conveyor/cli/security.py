"""``conveyor user``, ``conveyor token``, ``conveyor acl`` and ``conveyor whoami``: manage
principals and allow rules on the coordinator (needs ``admin`` on ``cluster``, or the
cluster secret). Credentials for the call itself: ``--token``, ``--user``/``--password``,
or ``CONVEYOR_TOKEN``, ``CONVEYOR_USER``/``CONVEYOR_PASSWORD``. docs/security.md.
"""

from __future__ import annotations

import argparse
import getpass
from typing import TYPE_CHECKING

from conveyor.cli.common import EXIT_OK, positive_int
from conveyor.cli.output import (
    add_json_flag,
    add_url_flag,
    print_json,
    print_line,
    print_note,
    print_table,
)
from conveyor.protocol.errors import InvalidRequestError
from conveyor.protocol.security import OPERATIONS

if TYPE_CHECKING:
    from conveyor.cli.common import Subparsers
    from conveyor.client.security import SecurityAdmin


def _common(parser: argparse.ArgumentParser) -> None:
    add_url_flag(parser)
    add_json_flag(parser)


def register(subparsers: Subparsers) -> None:
    user = subparsers.add_parser("user", help="manage users (password principals)")
    users = user.add_subparsers(title="actions", dest="user_action", metavar="ACTION")
    users.required = True
    add = users.add_parser("add", help="add a user; the password is read from stdin/prompt")
    add.add_argument("name")
    add.add_argument(
        "--new-password",
        default=None,
        help="the user's password (default: $CONVEYOR_NEW_PASSWORD, else a prompt)",
    )
    _common(add)
    add.set_defaults(handler=_user_add)
    remove = users.add_parser("remove", help="remove a user")
    remove.add_argument("name")
    _common(remove)
    remove.set_defaults(handler=_user_remove)
    listing = users.add_parser("list", help="list users")
    _common(listing)
    listing.set_defaults(handler=_user_list)

    token = subparsers.add_parser("token", help="manage API tokens")
    tokens = token.add_subparsers(title="actions", dest="token_action", metavar="ACTION")
    tokens.required = True
    create = tokens.add_parser("create", help="create a token; its secret is printed once")
    create.add_argument("principal", help="user:NAME or a service name")
    create.add_argument("--expires-in-s", type=positive_int, default=None)
    _common(create)
    create.set_defaults(handler=_token_create)
    revoke = tokens.add_parser("revoke", help="revoke a token by id")
    revoke.add_argument("token_id")
    _common(revoke)
    revoke.set_defaults(handler=_token_revoke)
    token_list = tokens.add_parser("list", help="list tokens (ids, never secrets)")
    _common(token_list)
    token_list.set_defaults(handler=_token_list)

    acl = subparsers.add_parser("acl", help="manage allow rules")
    acls = acl.add_subparsers(title="actions", dest="acl_action", metavar="ACTION")
    acls.required = True
    for action, handler, text in (
        ("add", _acl_add, "allow PRINCIPAL to do OPERATION on a resource"),
        ("remove", _acl_remove, "remove an allow rule"),
    ):
        sub = acls.add_parser(action, help=text)
        sub.add_argument("principal", help="user:NAME, a token's principal, or *")
        sub.add_argument("operation", choices=OPERATIONS)
        target = sub.add_mutually_exclusive_group(required=True)
        target.add_argument("--topic", metavar="NAME")
        target.add_argument("--group", metavar="NAME")
        target.add_argument(
            "--transactional-id",
            metavar="NAME",
            help="a Kafka transactional id (produce: use it; describe: see its state)",
        )
        target.add_argument("--cluster", action="store_true")
        sub.add_argument("--prefix", action="store_true", help="NAME is a prefix")
        _common(sub)
        sub.set_defaults(handler=handler)
    acl_list = acls.add_parser("list", help="list allow rules")
    _common(acl_list)
    acl_list.set_defaults(handler=_acl_list)

    whoami = subparsers.add_parser("whoami", help="the principal your credentials prove")
    _common(whoami)
    whoami.set_defaults(handler=_whoami)


def _client(args: argparse.Namespace) -> SecurityAdmin:
    from conveyor.client.security import SecurityAdmin

    return SecurityAdmin(args.url)  # credentials: the environment, which the flags set


def _user_add(args: argparse.Namespace) -> int:
    from conveyor.settings import catalog, client_settings

    password = args.new_password or client_settings()[catalog.NEW_PASSWORD]
    if not password:
        password = getpass.getpass(f"password for {args.name}: ")
    with _client(args) as client:
        user = client.add_user(args.name, password)
    if args.json:
        print_json(user)
    else:
        print_line(f"added {user.principal}")
    return EXIT_OK


def _user_remove(args: argparse.Namespace) -> int:
    with _client(args) as client:
        client.remove_user(args.name)
    print_line(f"removed user:{args.name}")
    return EXIT_OK


def _user_list(args: argparse.Namespace) -> int:
    with _client(args) as client:
        users = client.list_users()
    if args.json:
        print_json(users)
    else:
        print_table("users", ("principal",), [(u.principal,) for u in users])
    return EXIT_OK


def _token_create(args: argparse.Namespace) -> int:
    expires_ms = None if args.expires_in_s is None else args.expires_in_s * 1000
    with _client(args) as client:
        created = client.create_token(args.principal, expires_ms)
    if args.json:
        print_json(created)
    else:
        print_note(f"token {created.token_id} for {created.principal} (shown once):")
        print(created.token)
    return EXIT_OK


def _token_revoke(args: argparse.Namespace) -> int:
    with _client(args) as client:
        client.revoke_token(args.token_id)
    print_line(f"revoked token {args.token_id}")
    return EXIT_OK


def _token_list(args: argparse.Namespace) -> int:
    with _client(args) as client:
        tokens = client.list_tokens()
    if args.json:
        print_json(tokens)
    else:
        rows = [(t.token_id, t.principal, t.expires_ms) for t in tokens]
        print_table("tokens", ("id", "principal", "expires_ms"), rows)
    return EXIT_OK


def _rule(args: argparse.Namespace) -> tuple[str, str]:
    if args.cluster:
        if args.prefix:
            raise InvalidRequestError("--prefix applies to --topic, --group and --transactional-id")
        return "cluster", "cluster"
    if args.topic is not None:
        return "topic", args.topic
    if args.transactional_id is not None:
        return "transactional_id", args.transactional_id
    return "group", args.group


def _acl_add(args: argparse.Namespace) -> int:
    resource_type, name = _rule(args)
    pattern = "prefix" if args.prefix else "literal"
    with _client(args) as client:
        rule = client.add_acl(args.principal, args.operation, resource_type, name, pattern)  # type: ignore[arg-type]
    if args.json:
        print_json(rule)
    else:
        print_line(
            f"allowed {rule.principal} {rule.operation} on {resource_type} {name} ({pattern})"
        )
    return EXIT_OK


def _acl_remove(args: argparse.Namespace) -> int:
    from conveyor.protocol.security import AclRule

    resource_type, name = _rule(args)
    rule = AclRule(
        principal=args.principal,
        operation=args.operation,
        resource_type=resource_type,  # type: ignore[arg-type]
        name=name,
        pattern="prefix" if args.prefix else "literal",
    )
    with _client(args) as client:
        client.remove_acl(rule)
    print_line("removed")
    return EXIT_OK


def _acl_list(args: argparse.Namespace) -> int:
    with _client(args) as client:
        rules = client.list_acls()
    if args.json:
        print_json(rules)
    else:
        rows = [(r.principal, r.operation, r.resource_type, r.name, r.pattern) for r in rules]
        print_table("acls", ("principal", "operation", "resource", "name", "pattern"), rows)
    return EXIT_OK


def _whoami(args: argparse.Namespace) -> int:
    with _client(args) as client:
        me = client.whoami()
    if args.json:
        print_json(me)
    else:
        print_line(f"{me.principal} (auth {'on' if me.auth_enabled else 'off'})")
    return EXIT_OK
