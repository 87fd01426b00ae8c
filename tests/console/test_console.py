"""The console in a real browser against a cluster on HTTPS with auth on (one cluster and
one browser for the module; each test uses its own topics and groups)."""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from playwright.sync_api import Error as PlaywrightError

import conveyor
from conveyor.client.admin import Admin
from conveyor.client.group import GroupAdmin
from tests.console.conftest import ADMIN_PASSWORD, READER_PASSWORD, SecureCluster
from tests.console.harness import Tab, csrf_of, open_tab, sign_in
from tests.integration.cluster import wait_for

pytestmark = pytest.mark.timeout(300)


def unique(prefix: str) -> str:
    return f"ui-{prefix}-{uuid.uuid4().hex[:6]}"


@pytest.fixture
def admin_tab(browser, secure: SecureCluster) -> Iterator[Tab]:  # type: ignore[no-untyped-def]
    tab = open_tab(browser)
    sign_in(tab, secure.base, "admin", ADMIN_PASSWORD)
    yield tab
    tab.assert_no_errors()
    tab.close()


def admin(secure: SecureCluster) -> Admin:
    return Admin(secure.base, tls=secure.tls(), user="admin", password=ADMIN_PASSWORD)


def group_admin(secure: SecureCluster) -> GroupAdmin:
    return GroupAdmin(secure.base, tls=secure.tls(), user="admin", password=ADMIN_PASSWORD)


def consumer(secure: SecureCluster, topic: str, group: str, client_id: str) -> conveyor.Consumer:
    """A member of ``group`` signed in as admin, committing only when told."""
    return conveyor.Consumer(
        secure.base,
        topic,
        group_id=group,
        tls=secure.tls(),
        user="admin",
        password=ADMIN_PASSWORD,
        enable_auto_commit=False,
        client_id=client_id,
    )


def produce(secure: SecureCluster, topic: str, count: int, key: bytes | None = None) -> None:
    with conveyor.Producer(
        secure.base, tls=secure.tls(), user="admin", password=ADMIN_PASSWORD
    ) as producer:
        for i in range(count):
            producer.send(topic, b"value-%d" % i, key=key)
        producer.flush()


def test_sign_in_with_password_and_token_and_out(browser, secure: SecureCluster) -> None:  # type: ignore[no-untyped-def]
    tab = open_tab(browser)
    page = tab.page
    page.goto(f"{secure.base}/console/topics")
    page.wait_for_url("**/console/login?next=%2Fconsole%2Ftopics")
    page.fill("#user", "admin")
    page.fill("#password", "wrong-password")
    page.click("button[type=submit]")
    assert "Wrong user name, password or token" in page.inner_text("main")
    page.fill("#user", "admin")
    page.fill("#password", ADMIN_PASSWORD)
    page.click("button[type=submit]")
    page.wait_for_url(f"{secure.base}/console/topics")  # back where the visit started
    cookie = next(c for c in tab.context.cookies() if c["name"] == "conveyor_console")
    assert cookie["httpOnly"] and cookie["secure"] and cookie["sameSite"] == "Strict"
    assert cookie["path"] == "/console"
    page.click("button:has-text('Sign out')")
    page.wait_for_url("**/console/login?signed_out=1")
    page.goto(f"{secure.base}/console/")
    page.wait_for_url("**/console/login**")  # the old cookie no longer works
    with secure.security() as security:
        token = security.create_token("user:admin").token
    page.fill("#token", token)
    page.click("button[type=submit]")
    page.wait_for_url(f"{secure.base}/console/")
    assert "user:admin" in page.inner_text("header")
    tab.assert_no_errors()
    tab.close()


def test_a_revoked_token_ends_the_session(browser, secure: SecureCluster) -> None:  # type: ignore[no-untyped-def]
    with secure.security() as security:
        created = security.create_token("user:admin")
    tab = open_tab(browser)
    page = tab.page
    page.goto(f"{secure.base}/console/login")
    page.fill("#token", created.token)
    page.click("button[type=submit]")
    page.wait_for_url(f"{secure.base}/console/")
    with secure.security() as security:
        security.revoke_token(created.token_id)

    def ended() -> bool:
        """The console caches permissions for 5 s; a page asked for after that, or the
        open page's own refresh (which may interrupt the navigation), ends the session."""
        try:
            page.goto(f"{secure.base}/console/topics")
        except PlaywrightError:
            page.wait_for_load_state()
        return "expired=1" in page.url

    wait_for(ended, 20, "the console to end the revoked token's session", interval_s=1)
    assert "Your session ended" in page.inner_text("main")
    tab.close()


def test_create_topic_produce_and_find_by_key(admin_tab: Tab, secure: SecureCluster) -> None:
    page, base = admin_tab.page, secure.base
    topic = unique("orders")
    page.goto(f"{base}/console/topics")
    page.click("summary:has-text('Create a topic')")
    page.fill("input[name=name]", topic)
    page.fill("input[name=partitions]", "3")
    page.fill("input[name=retention_ms]", "3600000")
    page.click("button:has-text('Create topic')")
    page.wait_for_url(f"{base}/console/topics/{topic}")
    assert f"Created topic {topic}" in page.inner_text("main")
    assert page.locator("#partitions-table tbody tr").count() == 3
    assert "3600000" in page.inner_text("main")
    produce(secure, topic, 20)  # noise around the one we look for
    page.click("text=Produce")
    needle = f"needle-{uuid.uuid4().hex[:8]}"
    page.fill("input[name=key]", needle)
    page.fill("textarea[name=value]", '{"order": 42, "items": ["a", "b"]}')
    page.fill("textarea[name=headers]", "trace: abc\nsource: console")
    page.click("button:has-text('Send')")
    result = page.inner_text("#produce-result")
    assert "partition" in result and "offset" in result
    # A chosen partition, no key: it lands there (the form keeps what was typed).
    page.select_option("select[name=partition]", "2")
    page.fill("input[name=key]", "")
    page.click("button:has-text('Send')")
    assert "Sent: partition 2, offset" in page.inner_text("#produce-result")
    page.goto(f"{base}/console/topics/{topic}/messages")
    page.fill("input[name=key]", needle)
    page.click("button:has-text('Show')")
    rows = page.locator("#messages-table tr.message")
    assert rows.count() == 1
    assert needle in rows.first.inner_text()
    assert "scanned 22" in page.inner_text("#page-info")  # the bound is shown with the count
    rows.first.locator("summary").click()
    assert page.locator(".pane-json").first.is_visible()  # JSON detected, shown pretty
    assert '"order": 42' in page.locator(".pane-json").first.inner_text()
    page.locator("label:has-text('Hex')").first.click()
    assert page.locator(".pane-hex").first.is_visible()
    assert "7b 22 6f 72" in page.locator(".pane-hex").first.inner_text()  # {"or
    assert "source" in rows.first.inner_text() and "console" in rows.first.inner_text()
    with page.expect_download() as download:
        page.click("text=Download page as JSON")
    body = json.loads(Path(download.value.path()).read_text())
    assert [m["key"] for m in body["messages"]] == [needle]
    assert body["messages"][0]["headers"] == {"trace": "abc", "source": "console"}
    # Paging: 22 messages, 5 a page from the beginning, all partitions, nothing twice.
    seen: list[tuple[int, int]] = []
    page.goto(f"{base}/console/topics/{topic}/messages?start=beginning&limit=5")
    for _ in range(10):
        for row in page.locator("#messages-table tr.message").all():
            seen.append(
                (
                    int(row.get_attribute("data-partition") or -1),
                    int(row.get_attribute("data-offset") or -1),
                )
            )
        newer = page.locator("a[rel=next]")
        if newer.count() == 0:
            break
        newer.click()
        page.wait_for_load_state()
    assert len(seen) == 22 and len(set(seen)) == 22


def test_edit_configs_and_add_partitions(admin_tab: Tab, secure: SecureCluster) -> None:
    page, base = admin_tab.page, secure.base
    topic = unique("cfg")
    admin(secure).create_topic(topic, partitions=1, replication_factor=1)
    page.goto(f"{base}/console/topics/{topic}")
    page.click("summary:has-text('Edit configs')")
    form = page.locator("#edit-configs form")
    form.locator("input[name=retention_ms]").fill("3600000")
    form.locator("input[name=min_insync_replicas]").fill("3")  # more than RF 1: refused
    form.locator("button:has-text('Save configs')").click()
    error = page.locator("#edit-configs .form-error")
    assert "min_insync_replicas" in error.inner_text()
    # The form keeps what was typed, and nothing changed (all or nothing).
    assert form.locator("input[name=retention_ms]").input_value() == "3600000"
    assert admin(secure).describe_topic(topic).config.retention_ms == 7 * 24 * 3600 * 1000
    form.locator("input[name=min_insync_replicas]").fill("")
    form.locator("button:has-text('Save configs')").click()
    page.wait_for_url(f"{base}/console/topics/{topic}")
    assert f"Changed retention_ms of {topic}" in page.inner_text("main")
    assert page.inner_text("[data-config=retention_ms]") == "3600000"
    assert admin(secure).describe_topic(topic).config.retention_ms == 3_600_000
    page.click("summary:has-text('Edit configs')")  # cleared: back to the default
    page.locator("#edit-configs input[name=retention_ms]").fill("")
    page.locator("#edit-configs select[name=unclean_leader_election]").select_option("true")
    page.click("button:has-text('Save configs')")
    page.wait_for_url(f"{base}/console/topics/{topic}")
    config = admin(secure).describe_topic(topic).config
    assert config.retention_ms == 7 * 24 * 3600 * 1000 and config.unclean_leader_election
    page.click("summary:has-text('Add partitions')")
    page.fill("#new-partitions", "3")
    page.click("button:has-text('Add partitions')")
    page.wait_for_url(f"{base}/console/topics/{topic}")
    assert f"Topic {topic} now has 3 partitions" in page.inner_text("main")
    assert page.locator("#partitions-table tbody tr").count() == 3
    assert len(admin(secure).describe_topic(topic).partitions) == 3
    no_csrf = page.request.post(
        f"{base}/console/topics/{topic}/partitions", form={"partitions": "5"}
    )
    assert no_csrf.status == 403
    # Shrinking (past the form's own min) is refused with the reason, on the form.
    shrink = page.request.post(
        f"{base}/console/topics/{topic}/partitions",
        form={"csrf_token": csrf_of(page), "partitions": "2"},
    )
    assert shrink.status == 400 and "never removed" in shrink.text()
    assert len(admin(secure).describe_topic(topic).partitions) == 3


def test_xss_in_key_and_value_is_shown_inert(admin_tab: Tab, secure: SecureCluster) -> None:
    page, base = admin_tab.page, secure.base
    topic = unique("xss")
    admin(secure).create_topic(topic, partitions=1)
    key = '<img src=x onerror="window.__xss=1">'
    value = (
        '<script>window.__xss=2</script><b id="injected">bold</b>"\'><svg onload=window.__xss=3>'
    )
    with conveyor.Producer(
        secure.base, tls=secure.tls(), user="admin", password=ADMIN_PASSWORD
    ) as p:
        p.send(topic, value.encode(), key=key.encode(), headers={"<i>h</i>": "<u>v</u>"})
        p.flush()
    page.goto(f"{base}/console/topics/{topic}/messages?start=beginning")
    row = page.locator("#messages-table tr.message").first
    row.locator("summary").click()
    page.locator("label:has-text('Text')").first.click()
    assert key in row.locator("td.key").inner_text()  # shown as text
    assert value in row.locator(".pane-text").inner_text()
    assert page.locator("#injected").count() == 0
    assert (
        page.locator(
            ", ".join(f"#messages-table {tag}" for tag in ("img", "script", "svg", "i", "u"))
        ).count()
        == 0
    )
    assert page.evaluate("window.__xss") is None
    # The topic list and the group page print names the same way; the copy button carries
    # the record as JSON text, not markup.
    copy = row.locator("button.copy").get_attribute("data-copy") or ""
    assert json.loads(copy)["value"] == value


def test_group_lag_grows_while_producing_and_shrinks_when_a_consumer_runs(
    admin_tab: Tab, secure: SecureCluster
) -> None:
    page, base = admin_tab.page, secure.base
    topic, group = unique("lag"), unique("g")
    admin(secure).create_topic(topic, partitions=2)
    produce(secure, topic, 10)

    def consume_all(expected: int) -> None:
        with consumer(secure, topic, group, "ui-test") as member:
            got = 0
            deadline = time.monotonic() + 30
            while got < expected and time.monotonic() < deadline:
                got += len(member.poll(0.5))
            member.commit()
            assert got >= expected

    consume_all(10)
    page.goto(f"{base}/console/groups/{group}")
    lag = page.locator("#group-lag")
    page.wait_for_function(
        "() => document.querySelector('#group-lag').textContent.trim() === '0'", timeout=20_000
    )
    produce(secure, topic, 50)
    # The page updates itself (polling), no reload: the lag shows the 50 new messages.
    page.wait_for_function(
        "() => document.querySelector('#group-lag').textContent.trim() === '50'", timeout=20_000
    )
    assert page.locator(".sparkline polyline").get_attribute("points")
    consume_all(50)
    page.wait_for_function(
        "() => document.querySelector('#group-lag').textContent.trim() === '0'", timeout=20_000
    )
    assert lag.inner_text() == "0"
    # The group list shows it too, and the member's host was recorded while it ran.
    page.goto(f"{base}/console/groups?q={group}")
    assert group in page.inner_text("#groups-table")


def test_reset_offsets_of_an_empty_group_then_delete_it(
    admin_tab: Tab, secure: SecureCluster
) -> None:
    page, base = admin_tab.page, secure.base
    topic, group = unique("reset"), unique("g")
    admin(secure).create_topic(topic, partitions=2)
    produce(secure, topic, 30)
    with group_admin(secure) as groups:
        wait_for(
            lambda: (
                sum(p.high_watermark or 0 for p in admin(secure).describe_topic(topic).partitions)
                == 30
            ),
            10,
            "reports",
        )
        groups.reset_offsets(group, topic, "latest")
    page.goto(f"{base}/console/groups/{group}")
    assert page.inner_text("#group-state") == "empty"
    page.select_option("select[name=to]", "earliest")
    page.click("button:has-text('Preview (dry run)')")
    preview = page.locator("#reset-preview")
    assert "to earliest" in preview.inner_text()
    rows = preview.locator("tbody tr")
    assert rows.count() == 2
    with group_admin(secure) as groups:
        before = {p.partition: p.committed_offset for p in groups.describe_group(group).partitions}
    assert sum(before.values()) == 30  # the preview changed nothing
    page.click("button:has-text('Apply this reset')")
    page.wait_for_url(f"{base}/console/groups/{group}")
    assert "Reset group" in page.inner_text("main")
    with group_admin(secure) as groups:
        after = {p.partition: p.committed_offset for p in groups.describe_group(group).partitions}
    assert after == {0: 0, 1: 0}
    page.click("summary:has-text('Delete this group')")
    page.fill("#confirm-delete", group)
    page.click("button:has-text('Delete group')")
    page.wait_for_url(f"{base}/console/groups")
    assert group not in page.inner_text("#groups-table")


def test_read_only_user_sees_no_changes_and_forged_requests_get_403(
    browser,
    secure: SecureCluster,  # type: ignore[no-untyped-def]
) -> None:
    topic = unique("ro")
    admin(secure).create_topic(topic, partitions=1)
    tab = open_tab(browser)
    sign_in(tab, secure.base, "reader", READER_PASSWORD)
    page, base = tab.page, secure.base
    page.goto(f"{base}/console/topics")
    assert topic in page.inner_text("#topics-table")
    assert page.locator("summary:has-text('Create a topic')").count() == 0
    page.goto(f"{base}/console/topics/{topic}")
    assert page.locator("text=Delete this topic").count() == 0
    assert page.locator("a:has-text('Produce')").count() == 0
    assert page.locator("a:has-text('Browse messages')").count() == 1
    assert page.locator("summary:has-text('Edit configs')").count() == 0
    assert page.locator("summary:has-text('Add partitions')").count() == 0
    assert "need admin on the cluster" in page.inner_text("main")
    assert "Access" in page.inner_text("header")
    page.goto(f"{base}/console/access")
    assert "needs admin on the cluster" in page.inner_text("main").replace("\n", " ").replace(
        "  ", " "
    ) or "Managing users" in page.inner_text("main")
    # Forged requests with a valid session and CSRF token: the API refuses them.
    csrf = csrf_of(page)
    deleted = page.request.post(
        f"{base}/console/topics/{topic}/delete", form={"csrf_token": csrf, "confirm": topic}
    )
    assert deleted.status == 403
    assert "FORBIDDEN" in deleted.text()
    created = page.request.post(
        f"{base}/console/topics", form={"csrf_token": csrf, "name": unique("forged")}
    )
    assert created.status == 403
    produced = page.request.post(
        f"{base}/console/topics/{topic}/produce", form={"csrf_token": csrf, "value": "x"}
    )
    assert produced.status == 403
    altered = page.request.post(
        f"{base}/console/topics/{topic}/config",
        form={"csrf_token": csrf, "retention_ms": "1", "was_retention_ms": ""},
    )
    assert altered.status == 403
    grown = page.request.post(
        f"{base}/console/topics/{topic}/partitions", form={"csrf_token": csrf, "partitions": "4"}
    )
    assert grown.status == 403
    described = admin(secure).describe_topic(topic)
    assert len(described.partitions) == 1 and described.config.retention_ms != 1
    assert topic in [t.name for t in admin(secure).list_topics()]
    tab.assert_no_errors()
    tab.close()


def test_state_changes_without_the_csrf_token_are_refused(
    admin_tab: Tab, secure: SecureCluster
) -> None:
    page, base = admin_tab.page, secure.base
    page.goto(f"{base}/console/topics")
    name = unique("csrf")
    missing = page.request.post(f"{base}/console/topics", form={"name": name})
    assert missing.status == 403 and "CSRF" in missing.text()
    wrong = page.request.post(f"{base}/console/topics", form={"name": name, "csrf_token": "x" * 43})
    assert wrong.status == 403
    cross_site = page.request.post(
        f"{base}/console/topics",
        form={"name": name, "csrf_token": csrf_of(page)},
        headers={"Origin": "https://evil.example"},
    )
    assert cross_site.status == 403
    assert name not in [t.name for t in admin(secure).list_topics()]
    # With the token it works (the same request).
    ok = page.request.post(
        f"{base}/console/topics", form={"name": name, "csrf_token": csrf_of(page)}
    )
    assert ok.status == 200 and name in [t.name for t in admin(secure).list_topics()]


def test_access_page_users_tokens_shown_once_and_acls(
    admin_tab: Tab, secure: SecureCluster
) -> None:
    page, base = admin_tab.page, secure.base
    page.goto(f"{base}/console/access")
    user = f"ui{uuid.uuid4().hex[:6]}"
    page.fill("input[name=name] >> nth=0", user)
    page.fill("input[name=password]", "a-long-password")
    page.click("button:has-text('Add user')")
    page.wait_for_url(f"{base}/console/access")
    assert f"user:{user}" in page.inner_text("main")
    page.fill("form[action$='/access/tokens'] input[name=principal]", f"user:{user}")
    page.click("button:has-text('Create token')")
    secret = page.inner_text("#new-token").strip()
    assert secret.startswith("cvt_")
    page.goto(f"{base}/console/access")
    assert secret not in page.content()  # shown once
    page.fill("form[action$='/access/acls'] input[name=principal]", f"user:{user}")
    page.select_option("select[name=operation]", "consume")
    page.fill("form[action$='/access/acls'] input[name=name]", "ui-")
    page.select_option("select[name=pattern]", "prefix")
    page.click("button:has-text('Add rule')")
    page.wait_for_url(f"{base}/console/access")
    with secure.security() as security:
        rules = [r for r in security.list_acls() if r.principal == f"user:{user}"]
    assert [(r.operation, r.name, r.pattern) for r in rules] == [("consume", "ui-", "prefix")]
    page.click(f"button[aria-label='Remove user {user}']")
    page.wait_for_url(f"{base}/console/access")
    assert f"user:{user}" not in page.inner_text("table >> nth=0")


def offsets_shown(tab: Tab) -> set[int]:
    rows = tab.page.locator("#messages-table tr.message").all()
    return {int(row.get_attribute("data-offset") or -1) for row in rows}


def test_browse_from_an_offset_a_time_and_the_end_then_older(
    admin_tab: Tab, secure: SecureCluster
) -> None:
    page, base = admin_tab.page, secure.base
    topic = unique("starts")
    admin(secure).create_topic(topic, partitions=1, replication_factor=1)
    produce(secure, topic, 5)  # offsets 0-4
    between_ms = time.time_ns() // 1_000_000
    wait_for(lambda: time.time_ns() // 1_000_000 > between_ms, 1, "the next millisecond")
    produce(secure, topic, 5)  # offsets 5-9, stamped after between_ms
    page.goto(f"{base}/console/topics/{topic}/messages")
    page.select_option("select[name=start]", "offset")
    page.fill("input[name=offset]", "7")
    page.click("button:has-text('Show')")
    assert offsets_shown(admin_tab) == {7, 8, 9}
    assert page.locator("a[rel=next]").count() == 0  # nothing newer
    moment = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(between_ms // 1000))
    moment += f".{between_ms % 1000:03d}Z"
    page.select_option("select[name=start]", "time")
    page.fill("input[name=time]", moment)
    page.click("button:has-text('Show')")
    assert offsets_shown(admin_tab) == set(range(5, 10))  # the first at or after the time
    page.goto(f"{base}/console/topics/{topic}/messages?start=end&limit=3")
    assert offsets_shown(admin_tab) == {7, 8, 9}  # the newest
    page.click("a[rel=prev]")
    page.wait_for_load_state()
    assert offsets_shown(admin_tab) == {4, 5, 6}
    page.click("a[rel=prev]")
    page.wait_for_load_state()
    assert offsets_shown(admin_tab) == {1, 2, 3}
    page.click("a[rel=next]")
    page.wait_for_load_state()
    assert offsets_shown(admin_tab) == {4, 5, 6}  # and back: the same page, nothing skipped


def test_delete_a_topic_only_after_typing_its_name(admin_tab: Tab, secure: SecureCluster) -> None:
    page, base = admin_tab.page, secure.base
    topic = unique("doomed")
    admin(secure).create_topic(topic, partitions=1, replication_factor=1)
    page.goto(f"{base}/console/topics/{topic}")
    page.click("summary:has-text('Delete this topic')")
    page.fill("#confirm-delete", topic + "-not")
    page.click("button:has-text('Delete topic')")
    assert "type the topic's name" in page.inner_text("main")  # refused, with the reason
    assert topic in [t.name for t in admin(secure).list_topics()]
    page.goto(f"{base}/console/topics/{topic}")
    page.click("summary:has-text('Delete this topic')")
    page.fill("#confirm-delete", topic)
    page.click("button:has-text('Delete topic')")
    page.wait_for_url(f"{base}/console/topics")
    assert f"Deleted topic {topic}." in page.inner_text("main")
    assert topic not in page.inner_text("#topics-table")
    assert topic not in [t.name for t in admin(secure).list_topics()]


def test_a_group_with_a_running_member_shown_everywhere_and_not_reset_or_deleted(
    admin_tab: Tab, secure: SecureCluster
) -> None:
    page, base = admin_tab.page, secure.base
    topic, group = unique("live"), unique("g")
    admin(secure).create_topic(topic, partitions=2, replication_factor=1)
    produce(secure, topic, 40)
    with consumer(secure, topic, group, "ui-live-member") as member:
        got = 0
        deadline = time.monotonic() + 30
        while (got < 3 or len(member.assignment()) < 2) and time.monotonic() < deadline:
            got += len(member.poll(0.2, max_records=1))
        assert len(member.assignment()) == 2
        member.commit()
        with group_admin(secure) as groups:
            committed = sum(
                p.committed_offset or 0 for p in groups.describe_group(group).partitions
            )
        lag = 40 - committed
        assert lag > 0  # a few records a poll at most: some left
        page.goto(f"{base}/console/groups/{group}")
        page.wait_for_function(  # the leaders' end offsets reach the coordinator by heartbeat
            f"() => document.querySelector('#group-lag').textContent.trim() === '{lag}'",
            timeout=20_000,
        )
        assert page.inner_text("#group-state") == "stable"
        members = page.locator("#group-live table").first.inner_text()
        assert "ui-live-member" in members and "127.0.0.1" in members
        assert f"{topic}-0" in members and f"{topic}-1" in members
        # Not empty: no reset form and no delete, as the CLI; forged POSTs are refused.
        assert "stop its consumers first" in page.inner_text("main")
        assert page.locator("form.reset-form").count() == 0
        assert page.locator("summary:has-text('Delete this group')").count() == 0
        token = csrf_of(page)
        reset = page.request.post(
            f"{base}/console/groups/{group}/reset",
            form={"csrf_token": token, "topic": topic, "to": "earliest", "mode": "preview"},
        )
        assert reset.status == 409 and "active members" in reset.text()
        delete = page.request.post(
            f"{base}/console/groups/{group}/delete", form={"csrf_token": token, "confirm": group}
        )
        assert delete.status == 409
        # The group list and the topic's page show the group with its state and lag.
        page.goto(f"{base}/console/groups?q={group}")
        row = page.locator("#groups-table tbody tr").first.inner_text()
        assert group in row and "stable" in row and str(lag) in row
        page.goto(f"{base}/console/topics/{topic}")
        readers = page.locator("table:has(caption:has-text('Consumer groups of'))").inner_text()
        assert group in readers and str(lag) in readers
    with group_admin(secure) as groups:
        after = groups.describe_group(group).partitions
    assert sum(p.committed_offset or 0 for p in after) == committed  # nothing was reset


def test_topic_list_filter_and_sort(admin_tab: Tab, secure: SecureCluster) -> None:
    page, base = admin_tab.page, secure.base
    prefix = unique("sorted")
    for name, partitions in (("b", 3), ("a", 1), ("c", 2)):
        admin(secure).create_topic(f"{prefix}-{name}", partitions=partitions)

    def names() -> list[str]:
        cells = page.locator("#topics-table tbody tr td:first-child").all_inner_texts()
        return [c.removeprefix(prefix + "-") for c in cells]

    def follow(selector: str, *query: str) -> None:
        page.click(selector)  # a new page: wait until it is the one asked for
        page.wait_for_url(lambda url: all(part in url for part in query))
        page.wait_for_load_state()

    page.goto(f"{base}/console/topics")
    page.fill("#topic-filter", prefix)
    follow("button:has-text('Filter')", f"q={prefix}")
    assert names() == ["a", "b", "c"]  # only the matches, by name
    follow("#topics-table th a:has-text('Partitions')", "sort=partitions", "dir=asc")
    assert names() == ["a", "c", "b"]  # 1, 2, 3 partitions; the filter kept
    assert page.get_attribute("#topics-table th[aria-sort]", "aria-sort") == "ascending"
    follow("#topics-table th a:has-text('Partitions')", "sort=partitions", "dir=desc")
    assert names() == ["b", "c", "a"]
    assert page.get_attribute("#topics-table th[aria-sort]", "aria-sort") == "descending"
    page.fill("#topic-filter", prefix + "-nothing")
    follow("button:has-text('Filter')", "-nothing")
    assert "No topics match this filter" in page.inner_text("#topics-table")
