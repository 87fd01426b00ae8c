"""``conveyor profile add|list|show|use|remove``: named cluster connections, as rpk's
profiles and the nats CLI's contexts.

A profile is a settings file of the client (``[client]`` table: ``url``, ``ca``,
``token_file`` or ``user`` with ``password_file``, ``tls_client_cert``/``key``) in
``$CONVEYOR_PROFILES_DIR``, else ``$XDG_CONFIG_HOME/conveyor/profiles``, else
``~/.config/conveyor/profiles`` (files mode 0600; secrets stay in the files they name).
``--profile NAME`` on any command (or ``CONVEYOR_PROFILE``, or the one ``profile use``
chose) makes that file the command's settings file, so a flag or a ``CONVEYOR_*``
variable still wins over it, as for ``--config`` (docs/cli.md#profiles).
"""

from __future__ import annotations

import argparse
import json
import os
from pathlib import Path
from typing import TYPE_CHECKING

from conveyor.cli.common import EXIT_OK
from conveyor.cli.output import add_json_flag, print_json, print_line, print_table
from conveyor.protocol.errors import ErrorCode, InvalidRequestError

if TYPE_CHECKING:
    from conveyor.cli.common import Subparsers

CURRENT_FILE = "current"  # names the default profile (the name kind refuses it)
# profile add's flags -> the client settings they write (the secrets as *_file)
FIELDS = (
    ("url", "url"),
    ("ca", "ca"),
    ("token_file", "token_file"),
    ("user", "user"),
    ("password_file", "password_file"),
    ("tls_client_cert", "tls_client_cert"),
    ("tls_client_key", "tls_client_key"),
)


def profiles_dir() -> Path:
    from conveyor.settings import catalog, read_before_file

    chosen = read_before_file(catalog.PROFILES_DIR)  # CONVEYOR_PROFILES_DIR
    if chosen is not None:
        return chosen
    base = os.environ.get("XDG_CONFIG_HOME") or str(Path.home() / ".config")
    return Path(base) / "conveyor" / "profiles"


def _check_name(name: str) -> str:
    from conveyor.settings.kinds import PROFILE_NAME, BadValueError

    try:
        return PROFILE_NAME.parse(name)
    except BadValueError as error:
        raise InvalidRequestError(
            f"profile name {name[:70]!r}: expected {error.accepted}", code=ErrorCode.INVALID_CONFIG
        ) from None


def profile_path(name: str) -> Path:
    return profiles_dir() / f"{_check_name(name)}.toml"


def register(subparsers: Subparsers) -> None:
    profile = subparsers.add_parser(
        "profile", help="named cluster connections (--profile NAME on any command)"
    )
    actions = profile.add_subparsers(
        title="actions", dest="action", metavar="ACTION", required=True
    )
    add = actions.add_parser("add", help="add (or replace) a profile")
    add.add_argument("name")
    add.add_argument("--url", required=True, help="the coordinator's URL (or several, commas)")
    add.add_argument("--ca", metavar="PEM", help="CA certificate to verify the cluster against")
    add.add_argument("--token-file", metavar="FILE", help="a file holding the API token")
    add.add_argument("--user", help="user name (with --password-file)")
    add.add_argument("--password-file", metavar="FILE", help="a file holding the password")
    add.add_argument("--tls-client-cert", metavar="PEM", help="client certificate (mTLS)")
    add.add_argument("--tls-client-key", metavar="PEM", help="its key")
    add.add_argument("--use", action="store_true", help="make it the default profile")
    add.set_defaults(handler=_add)
    listing = actions.add_parser("list", help="profiles, the default one marked")
    add_json_flag(listing)
    listing.set_defaults(handler=_list)
    show = actions.add_parser("show", help="a profile's settings")
    show.add_argument("name")
    add_json_flag(show)
    show.set_defaults(handler=_show)
    use = actions.add_parser("use", help="make a profile the default ('-' for none)")
    use.add_argument("name")
    use.set_defaults(handler=_use)
    remove = actions.add_parser("remove", help="delete a profile")
    remove.add_argument("name")
    remove.set_defaults(handler=_remove)


def render(values: dict[str, str], name: str) -> str:
    """The profile's TOML (strings only: JSON's escapes are TOML's basic strings)."""
    lines = [f"# conveyor profile {name!r} (conveyor profile add)", "[client]"]
    lines += [f"{key} = {json.dumps(value)}" for key, value in values.items()]
    return "\n".join(lines) + "\n"


def _add(args: argparse.Namespace) -> int:
    from conveyor.settings import load

    name = _check_name(args.name)
    values = {key: str(getattr(args, dest)) for key, dest in FIELDS if getattr(args, dest)}
    for key in ("ca", "token_file", "password_file", "tls_client_cert", "tls_client_key"):
        if key in values:
            values[key] = str(Path(values[key]).expanduser().resolve())
    directory = profiles_dir()
    directory.mkdir(parents=True, exist_ok=True, mode=0o700)
    path = profile_path(name)
    temp = path.with_suffix(".tmp")
    temp.write_text(render(values, name), encoding="utf-8")
    temp.chmod(0o600)
    try:
        load("client", {"config": str(temp)}, env={})  # every value checked, secrets read
    except InvalidRequestError:
        temp.unlink()
        raise
    temp.replace(path)
    if args.use:
        (directory / CURRENT_FILE).write_text(name + "\n", encoding="utf-8")
    print_line(
        f"profile [bold]{name}[/bold] saved in {path}" + (" (the default)" if args.use else "")
    )
    return EXIT_OK


def _read(name: str) -> dict[str, str]:
    import tomllib

    path = profile_path(name)
    if not path.exists():
        raise InvalidRequestError(
            f"no profile {name!r} (conveyor profile list)", code=ErrorCode.INVALID_CONFIG
        )
    with path.open("rb") as f:
        table = tomllib.load(f).get("client", {})
    return {str(k): str(v) for k, v in table.items()}


def current() -> str | None:
    path = profiles_dir() / CURRENT_FILE
    try:
        name = path.read_text(encoding="utf-8").strip()
    except FileNotFoundError:
        return None
    return name or None


def _list(args: argparse.Namespace) -> int:
    directory = profiles_dir()
    names = sorted(p.stem for p in directory.glob("*.toml")) if directory.exists() else []
    default = current()
    urls = {name: _read(name).get("url") for name in names}
    if args.json:
        print_json([{"name": n, "default": n == default, "url": urls[n]} for n in names])
    else:
        table = [(n + (" *" if n == default else ""), urls[n]) for n in names]
        print_table(f"profiles in {directory}", ("profile", "url"), table)
    return EXIT_OK


def _show(args: argparse.Namespace) -> int:
    values = _read(args.name)
    if args.json:
        print_json({"name": args.name, **values})
    else:
        print_table(f"profile {args.name}", ("setting", "value"), sorted(values.items()))
    return EXIT_OK


def _use(args: argparse.Namespace) -> int:
    directory = profiles_dir()
    if args.name == "-":
        (directory / CURRENT_FILE).unlink(missing_ok=True)
        print_line("no default profile")
        return EXIT_OK
    _read(args.name)  # it must exist
    directory.mkdir(parents=True, exist_ok=True, mode=0o700)
    (directory / CURRENT_FILE).write_text(args.name + "\n", encoding="utf-8")
    print_line(f"default profile: [bold]{args.name}[/bold]")
    return EXIT_OK


def _remove(args: argparse.Namespace) -> int:
    path = profile_path(args.name)
    if not path.exists():
        raise InvalidRequestError(f"no profile {args.name!r}", code=ErrorCode.INVALID_CONFIG)
    path.unlink()
    if current() == args.name:
        (profiles_dir() / CURRENT_FILE).unlink(missing_ok=True)
    print_line(f"removed profile [bold]{args.name}[/bold]")
    return EXIT_OK


def apply_profile(args: argparse.Namespace) -> None:
    """Before a command runs: the chosen profile becomes its settings file. One named by
    ``--profile`` or ``CONVEYOR_PROFILE`` wins over a ``--config``/``CONVEYOR_CONFIG``
    file; the default one (``profile use``) does not."""
    from conveyor.settings import catalog, read_before_file, set_client_flag
    from conveyor.settings.core import CONFIG_ENV

    if getattr(args, "command", None) == "profile":
        return  # managing profiles never reads one
    flag = getattr(args, "profile", None) or None
    if flag is not None:
        set_client_flag("profile", flag)  # so `config show` says where it came from
    name = read_before_file(catalog.PROFILE, flag)  # --profile, else CONVEYOR_PROFILE
    if name is None:
        name = current()
        if name is None or os.environ.get(CONFIG_ENV):
            return
    path = profile_path(name)
    if not path.exists():
        raise InvalidRequestError(
            f"no profile {name!r} (conveyor profile list)", code=ErrorCode.INVALID_CONFIG
        )
    set_client_flag("config", str(path))
    os.environ[CONFIG_ENV] = str(path)  # for the processes a command starts
