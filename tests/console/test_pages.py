"""Every page in light and dark at 1280x800 (screenshots in build/console/), at phone
width, with axe-core (no critical violations), keyboard access, and no JavaScript error."""

from __future__ import annotations

import json
from collections.abc import Iterator

import pytest

import conveyor
from conveyor.client.admin import Admin
from conveyor.client.group import GroupAdmin
from tests.console.conftest import ADMIN_PASSWORD, SecureCluster
from tests.console.harness import (
    AXE,
    PHONE,
    axe_violations,
    open_tab,
    screenshot,
    set_theme,
    sign_in,
)

pytestmark = pytest.mark.timeout(300)
TOPIC, GROUP = "ui-shop-orders", "ui-billing"


@pytest.fixture(scope="module")
def pages(secure: SecureCluster) -> Iterator[dict[str, str]]:
    """The console's pages, with a topic holding messages and a group with lag."""
    credentials = {"tls": secure.tls(), "user": "admin", "password": ADMIN_PASSWORD}
    Admin(secure.base, **credentials).create_topic(TOPIC, partitions=3)  # type: ignore[arg-type]
    with conveyor.Producer(secure.base, **credentials) as producer:  # type: ignore[arg-type]
        for i in range(30):
            value = json.dumps({"order": i, "customer": f"c-{i % 7}", "total": 10.5 * i})
            producer.send(TOPIC, value.encode(), key=f"customer-{i % 7}".encode())
        producer.flush()
    with GroupAdmin(secure.base, **credentials) as groups:  # type: ignore[arg-type]
        groups.reset_offsets(GROUP, TOPIC, 3)
    base = f"{secure.base}/console"
    yield {
        "overview": f"{base}/",
        "topics": f"{base}/topics",
        "topic": f"{base}/topics/{TOPIC}",
        "messages": f"{base}/topics/{TOPIC}/messages",
        "produce": f"{base}/topics/{TOPIC}/produce",
        "groups": f"{base}/groups",
        "group": f"{base}/groups/{GROUP}",
        "access": f"{base}/access",
    }


def test_every_page_light_and_dark_with_no_errors(browser, secure: SecureCluster, pages) -> None:  # type: ignore[no-untyped-def]
    tab = open_tab(browser)
    tab.page.goto(f"{secure.base}/console/login")
    for theme in ("light", "dark"):
        set_theme(tab.page, theme)
        screenshot(tab.page, f"login-{theme}")
    sign_in(tab, secure.base, "admin", ADMIN_PASSWORD)
    for name, url in pages.items():
        tab.page.goto(url)
        if name == "messages":
            tab.page.locator("#messages-table summary").first.click()
        for theme in ("light", "dark"):
            set_theme(tab.page, theme)
            path = screenshot(tab.page, f"{name}-{theme}")
            assert path.stat().st_size > 10_000
    # The theme button switches and remembers the choice (a cookie the server reads).
    tab.page.goto(pages["overview"])
    tab.page.evaluate("document.documentElement.setAttribute('data-theme', 'light')")
    tab.page.click("[data-theme-toggle]")
    tab.page.goto(pages["topics"])
    assert tab.page.get_attribute("html", "data-theme") == "dark"
    tab.assert_no_errors()
    tab.close()


def test_phone_width_has_no_horizontal_scroll(browser, secure: SecureCluster, pages) -> None:  # type: ignore[no-untyped-def]
    tab = open_tab(browser, viewport=PHONE)
    sign_in(tab, secure.base, "admin", ADMIN_PASSWORD)
    for name, url in pages.items():
        tab.page.goto(url)
        width = tab.page.evaluate("document.documentElement.scrollWidth")
        assert width <= PHONE["width"] + 1, f"{name} is {width} px wide on a phone"
        if name in ("overview", "messages", "group"):
            screenshot(tab.page, f"{name}-phone")
    tab.assert_no_errors()
    tab.close()


def test_keyboard_reaches_the_content_and_the_navigation(
    browser, secure: SecureCluster, pages
) -> None:  # type: ignore[no-untyped-def]
    tab = open_tab(browser)
    sign_in(tab, secure.base, "admin", ADMIN_PASSWORD)
    page = tab.page
    page.goto(pages["overview"])
    page.keyboard.press("Tab")
    assert page.evaluate("document.activeElement.textContent") == "Skip to content"
    page.keyboard.press("Enter")
    assert page.evaluate("location.hash") == "#main"
    page.goto(pages["overview"])
    for _ in range(6):  # skip link, brand, Overview, Topics: then Enter follows the link
        page.keyboard.press("Tab")
        if page.evaluate("document.activeElement.textContent") == "Topics":
            break
    page.keyboard.press("Enter")
    page.wait_for_url(pages["topics"])
    # Focus is visible (Pico draws an outline or a box-shadow on :focus-visible).
    page.keyboard.press("Tab")
    style = page.evaluate(
        "(() => { const s = getComputedStyle(document.activeElement);"
        " return s.outlineStyle + ' ' + s.boxShadow; })()"
    )
    assert style != "none none"
    tab.assert_no_errors()
    tab.close()


def test_axe_finds_no_critical_violation(browser, secure: SecureCluster, pages) -> None:  # type: ignore[no-untyped-def]
    if not AXE.exists():
        pytest.skip("axe-core not installed: run scripts/system-deps/70-console-browser.sh")
    # axe is injected as a script, which the console's CSP refuses: this context bypasses it.
    tab = open_tab(browser, bypass_csp=True)
    page = tab.page
    page.goto(f"{secure.base}/console/login")
    found = {"login": axe_violations(page)}
    sign_in(tab, secure.base, "admin", ADMIN_PASSWORD)
    for name, url in pages.items():
        for theme in ("light", "dark"):
            page.goto(url)
            set_theme(page, theme)
            found[f"{name}-{theme}"] = axe_violations(page)
    critical = {k: [v["id"] for v in vs] for k, vs in found.items() if vs}
    assert critical == {}
    tab.close()
