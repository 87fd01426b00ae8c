"""Real browser, real cluster: Debian's chromium driven by Playwright, a coordinator and a
broker as processes on free ports (tests/integration/cluster.py).

Chromium is launched headless with the flags that keep it quiet on a machine without
network (no background networking, component updates, sync or QUIC); Playwright gives
every launch a fresh temporary profile (its own ``--user-data-dir``). Screenshots go to
``build/console/`` (git-ignored): the test run's artifacts.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

if TYPE_CHECKING:
    from playwright.sync_api import Browser, BrowserContext, Page

CHROMIUM = Path("/usr/bin/chromium")
ROOT = Path(__file__).resolve().parents[2]
AXE = Path(__file__).parent / "axe" / "node_modules" / "axe-core" / "axe.min.js"
ARTIFACTS = ROOT / "build" / "console"
LAUNCH_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
DESKTOP = {"width": 1280, "height": 800}
PHONE = {"width": 390, "height": 844}


def launch() -> Iterator[Browser]:
    if not CHROMIUM.exists():
        pytest.skip("chromium not installed: run scripts/system-deps/70-console-browser.sh as root")
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        pytest.skip("the playwright package is not installed (pip install -e '.[dev]')")
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(
            executable_path=str(CHROMIUM), headless=True, args=LAUNCH_ARGS
        )
        try:
            yield browser
        finally:
            browser.close()


@dataclass
class Tab:
    """A page that records every JavaScript error and console error it logs."""

    context: BrowserContext
    page: Page
    errors: list[str] = field(default_factory=list)

    def close(self) -> None:
        self.context.close()

    def assert_no_errors(self) -> None:
        assert self.errors == [], f"JavaScript errors: {self.errors}"


def open_tab(browser: Browser, viewport: dict[str, int] = DESKTOP, **options: Any) -> Tab:
    context = browser.new_context(
        viewport=viewport,  # type: ignore[arg-type]
        ignore_https_errors=True,  # the test CA is not in chromium's store
        accept_downloads=True,
        **options,
    )
    context.set_default_timeout(15_000)
    page = context.new_page()
    tab = Tab(context, page)
    page.on("pageerror", lambda exc: tab.errors.append(f"pageerror: {exc}"))
    page.on(
        "console",
        lambda message: (
            tab.errors.append(f"console.{message.type}: {message.text}")
            if message.type == "error" and not expected_status(message.text)
            else None
        ),
    )
    return tab


def expected_status(text: str) -> bool:
    """Chromium logs every 4xx answer as a console error; the refusals the tests provoke
    (400, 401, 403, 409) are asserted by status instead. A 404 or 5xx still counts."""
    prefix = "Failed to load resource: the server responded with a status of "
    return any(text.startswith(f"{prefix}{code}") for code in (400, 401, 403, 409))


def sign_in(tab: Tab, base: str, user: str, password: str) -> None:
    page = tab.page
    page.goto(f"{base}/console/")
    page.wait_for_url("**/console/login**")
    page.fill("#user", user)
    page.fill("#password", password)
    page.click("button[type=submit]")
    page.wait_for_url(f"{base}/console/")


def csrf_of(page: Page) -> str:
    headers = page.get_attribute("body", "hx-headers") or "{}"
    return str(json.loads(headers)["X-CSRF-Token"])


def screenshot(page: Page, name: str) -> Path:
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    path = ARTIFACTS / f"{name}.png"
    page.screenshot(path=str(path), full_page=False)
    return path


def set_theme(page: Page, theme: str) -> None:
    page.evaluate("t => document.documentElement.setAttribute('data-theme', t)", theme)


def axe_violations(page: Page) -> list[dict[str, Any]]:
    """axe-core's violations of impact "critical" on the current page. The script is
    injected into a context made with ``bypass_csp`` (the console's CSP refuses it)."""
    page.add_script_tag(path=str(AXE))
    result = page.evaluate("async () => await axe.run(document, {resultTypes: ['violations']})")
    return [v for v in result["violations"] if v.get("impact") == "critical"]


def env_without(*names: str) -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if k not in names}
