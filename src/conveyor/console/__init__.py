"""The web console: see and operate the cluster from a browser, served by the coordinator.

An adapter beside the coordinator's HTTP API (``coordinator/http.py``), mounted on the same
listener under ``/console``: server-rendered pages (Jinja2 templates, autoescaped) with
htmx for live parts, assets shipped in this package (no Node, no network at run time).
Every action is a call to the cluster's public HTTP API with the signed-in user's own
credentials (``api.py``), so the console can do exactly what that user could do with the
CLI, and the services enforce it. docs/console.md describes the pages.
"""

from __future__ import annotations

from aiohttp import web

from conveyor.console.access import Access
from conveyor.console.api import ConsoleHTTP
from conveyor.console.core import PREFIX, Console
from conveyor.console.groups import Groups
from conveyor.console.messages import Messages
from conveyor.console.overview import Overview
from conveyor.console.rates import RateTable
from conveyor.console.settings import ConsoleSettings
from conveyor.console.signin import SignIn
from conveyor.console.topics import Topics
from conveyor.transport.tls import TLSConfig

__all__ = ["ConsoleSettings", "attach"]

CONSOLE_KEY = web.AppKey("conveyor_console", Console)


def attach(
    app: web.Application,
    settings: ConsoleSettings,
    tls: TLSConfig,
    auth_enabled: bool,
    forwarding_key: bytes | None = None,
) -> Console:
    """Mount the console's pages on ``app`` (before it starts). ``forwarding_key``: the
    services' key for the console's note of its users' addresses (``AuthSettings``)."""
    http = ConsoleHTTP(tls, settings.request_timeout_s)
    console = Console(settings, http, auth_enabled, forwarding_key if auth_enabled else None)
    app[CONSOLE_KEY] = console
    rates = RateTable()
    overview, topics, messages = Overview(rates), Topics(rates), Messages()
    groups, access, sign_in = Groups(), Access(), SignIn(console)
    page, action = console.page, console.action

    async def to_console(_: web.Request) -> web.Response:
        raise web.HTTPPermanentRedirect(PREFIX + "/")

    routes = [
        ("GET", "", to_console),
        ("GET", "/", page(overview.page)),
        ("GET", "/login", sign_in.get),
        ("POST", "/login", sign_in.post),
        ("POST", "/logout", action(sign_in.sign_out)),
        ("GET", "/static/{name}", console.static_file),
        ("GET", "/topics", page(topics.listing)),
        ("POST", "/topics", action(topics.create)),
        ("GET", "/topics/{topic}", page(topics.detail)),
        ("POST", "/topics/{topic}/delete", action(topics.delete)),
        ("POST", "/topics/{topic}/config", action(topics.alter_config)),
        ("POST", "/topics/{topic}/partitions", action(topics.add_partitions)),
        ("GET", "/topics/{topic}/messages", page(messages.browse)),
        ("GET", "/topics/{topic}/messages.json", page(messages.download)),
        ("GET", "/topics/{topic}/produce", page(messages.produce_form)),
        ("POST", "/topics/{topic}/produce", action(messages.produce)),
        ("GET", "/groups", page(groups.listing)),
        ("GET", "/groups/{group}", page(groups.detail)),
        ("POST", "/groups/{group}/reset", action(groups.reset)),
        ("POST", "/groups/{group}/delete", action(groups.delete)),
        ("GET", "/access", page(access.page)),
        ("POST", "/access/users", action(access.add_user)),
        ("POST", "/access/users/{name}/delete", action(access.remove_user)),
        ("POST", "/access/tokens", action(access.create_token)),
        ("POST", "/access/tokens/{token_id}/revoke", action(access.revoke_token)),
        ("POST", "/access/acls", action(access.add_acl)),
        ("POST", "/access/acls/delete", action(access.remove_acl)),
    ]
    for method, path, handler in routes:
        app.router.add_route(method, PREFIX + path, handler)

    async def close(_: web.Application) -> None:
        await console.http.close()

    app.on_cleanup.append(close)
    return console
