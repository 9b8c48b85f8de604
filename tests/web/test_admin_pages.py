"""The administrator's pages in a real browser: find a user, grant a
group, add/delete users, who is online, live statistics while SIPp places
calls, the management command page; and serweb run on its own."""

from __future__ import annotations

import re
import subprocess
import sys
import time
from typing import Any

import httpx
import pytest

from sipexpress.db import add_user
from sipexpress.mgmt.client import rpc_call
from tests.support import free_port, options_request, udp_exchange, wait_for
from tests.web.conftest import DOMAIN, WebServer, run_async, shot
from tests.web.test_user_pages import alert, login, status

pytestmark = [pytest.mark.interop, pytest.mark.timeout(180)]


def wait_until(cond: Any, timeout: float = 10.0) -> None:
    """Poll a page condition from Python (the CSP forbids the eval that
    Playwright's wait_for_function needs)."""
    assert wait_for(cond, timeout, 0.2), "condition not met in time"


def test_non_admin_is_refused(page: Any, web: WebServer) -> None:
    run_async(lambda: add_user(web.db_url, "plain", DOMAIN, "plain-pass1"))
    login(page, "plain", "plain-pass1")
    page.wait_for_url("**/account")
    assert page.get_by_role("link", name="Users").count() == 0
    resp = page.goto("/admin/users")
    assert resp.status == 403
    assert "for administrators" in alert(page)


def test_admin_users_groups_and_command(page: Any, web: WebServer) -> None:
    async def many() -> None:
        for i in range(60):
            await add_user(web.db_url, f"user{i:03d}", DOMAIN, "pw-123456", f"u{i}@example.org")

    run_async(many)
    login(page, "admin", "heslo")
    page.wait_for_url("**/account")
    page.get_by_role("link", name="Users").click()
    assert "Page 1 of" in page.locator(".pager").inner_text()
    assert page.locator("thead th[aria-sort=ascending]").inner_text().startswith("User")
    # sort by user name, descending
    page.locator("thead th a", has_text="User").click()
    page.wait_for_url("**dir=desc")
    assert page.locator("thead th[aria-sort=descending]").count() == 1
    first = page.locator("tbody tr td").first.inner_text()
    assert first >= "user059"
    page.get_by_label("Search").fill("user04")
    page.get_by_role("button", name="Search").click()
    assert page.locator("tbody tr").count() == 10
    page.get_by_label("Search").fill("u42@example")
    page.get_by_role("button", name="Search").click()
    assert page.locator("tbody tr").count() == 1
    shot(page, "admin_users")
    page.get_by_role("link", name="user042").click()
    page.get_by_label("Group", exact=True).fill("bad group!")
    page.get_by_role("button", name="Grant").click()
    assert "A group name is" in alert(page)
    page.get_by_label("Group", exact=True).fill("ld")
    page.get_by_role("button", name="Grant").click()
    assert "user042@127.0.0.1 added to group ld" in status(page)
    # an alias (usrloc table "aliases", as serweb's numeric aliases)
    page.get_by_label("New alias").fill("82042")
    page.get_by_role("button", name="Add alias").click()
    assert "Alias 82042@127.0.0.1 added." in status(page)
    got = rpc_call("ul_show_contact", ["aliases", "82042@127.0.0.1"], url=web.rpc_url, secret=web.rpc_secret)
    assert got[0]["contact"] == "sip:user042@127.0.0.1"
    shot(page, "admin_user")
    page.get_by_label("New alias").fill("user001")
    page.get_by_role("button", name="Add alias").click()
    assert "user001@127.0.0.1 is a user name already." in alert(page)
    page.get_by_role("link", name="All users").click()
    page.get_by_label("Search").fill("user042")
    page.get_by_role("button", name="Search").click()
    assert "ld" in page.locator("tbody tr").first.inner_text()
    # disabled: no more log-in
    page.get_by_role("link", name="user042").click()
    page.get_by_label("Group", exact=True).fill("disabled")
    page.get_by_role("button", name="Grant").click()
    assert "added to group disabled" in status(page)
    page.get_by_role("button", name="Remove alias 82042").click()
    assert "Alias 82042@127.0.0.1 removed." in status(page)
    page.get_by_role("link", name="All users").click()
    # add: duplicate, bad input, then a good one and delete it
    page.locator("#new-username").fill("user001")
    page.locator("#new-domain").fill(DOMAIN)
    page.locator("#new-password").fill("secret-1")
    page.get_by_role("button", name="Add user").click()
    assert "The user user001@127.0.0.1 already exists." in alert(page)
    page.locator("#new-username").fill("zed")
    page.locator("#new-password").fill("x")
    page.get_by_role("button", name="Add user").click()
    assert "at least 6 characters" in alert(page)
    page.locator("#new-password").fill("zed-pass-1")
    page.get_by_role("button", name="Add user").click()
    assert "User zed@127.0.0.1 added." in status(page)
    page.get_by_role("button", name="Delete zed@127.0.0.1").click()
    assert "User zed@127.0.0.1 deleted." in status(page)
    page.get_by_label("Search").fill("zed")
    page.get_by_role("button", name="Search").click()
    assert page.get_by_text("No user matches.").is_visible()
    # the command page: good, unknown, bad
    page.get_by_role("link", name="Command").click()
    page.get_by_label("Command").fill("ul_add")
    page.get_by_label("Parameters").fill("location\nuser007@127.0.0.1\nsip:user007@127.0.0.1:5999\n600\n1.00")
    page.get_by_role("button", name="Send").click()
    assert page.locator("#reply-status").inner_text() == "200"
    page.get_by_label("Command").fill("no_such_cmd")
    page.get_by_label("Parameters").fill("")
    page.get_by_role("button", name="Send").click()
    assert "not available" in page.locator("#reply-status").inner_text()
    page.get_by_label("Command").fill("version")
    page.get_by_role("button", name="Send").click()
    assert "sipexpress" in page.locator("#reply-body").inner_text()
    shot(page, "admin_command")
    page.get_by_role("link", name="Online").click()
    assert page.locator("tbody tr", has_text="sip:user007@127.0.0.1:5999").count() == 1
    page.get_by_role("button", name="Log out").click()
    login(page, "user042", "pw-123456")
    assert alert(page) == "This account is disabled."


def test_dashboard_charts_move_while_sipp_calls(page: Any, web: WebServer, phones: Any, browser: Any) -> None:
    calls = 40
    uas = phones(["-sn", "uas", "-m", str(calls), "-timeout", "30"], "uas")
    rpc_call(
        "ul_add",
        ["location", "callee@127.0.0.1", f"sip:callee@127.0.0.1:{uas.port}", "600", "1.00"],
        url=web.rpc_url,
        secret=web.rpc_secret,
    )
    login(page, "admin", "heslo")
    page.wait_for_url("**/account")
    page.get_by_role("link", name="Server").click()
    before = int(page.locator("#t-total").inner_text())
    chart = page.locator("#c-traffic")
    wait_until(lambda: int(chart.get_attribute("data-points") or 0) >= 1)
    points = int(chart.get_attribute("data-points") or 0)
    still = chart.locator("canvas").screenshot()
    uac = phones(
        [
            f"127.0.0.1:{web.ser.port}",
            *("-sn", "uac", "-s", "callee", "-m", str(calls), "-r", "10", "-d", "200", "-timeout", "30"),
        ],
        "uac",
    )
    # while the calls go on, the page updates itself (no reload): the calls/s
    # tile shows traffic, the chart gains samples and its drawing changes
    wait_until(lambda: float(page.locator("#m-calls").inner_text().replace("–", "0")) > 0, 15)
    assert uac.proc.poll() is None, "SIPp ended before the chart showed its calls"
    wait_until(lambda: int(chart.get_attribute("data-points") or 0) > points + 1)
    assert chart.locator("canvas").screenshot() != still
    assert uac.wait(30) == 0
    wait_until(lambda: int(page.locator("#t-total").inner_text()) >= before + 2 * calls, 10)
    assert int(page.locator("#t-2xx").inner_text()) >= 2 * calls
    shot(page, "admin_health")

    # at phone width every chart fits the screen
    phone = browser.new_context(base_url=web.base, viewport={"width": 390, "height": 844})
    try:
        small = phone.new_page()
        login(small, "admin", "heslo")
        small.wait_for_url("**/account")
        small.goto("/admin/health")
        canvases = small.locator(".chart canvas")
        wait_until(lambda: canvases.count() == 4)
        for i in range(4):
            box = canvases.nth(i).bounding_box()
            assert box is not None and box["x"] >= 0 and box["x"] + box["width"] <= 390, box
        shot(small, "admin_health_phone")
    finally:
        phone.close()


def test_metrics_on_the_web_listener(web: WebServer) -> None:
    from prometheus_client.parser import text_string_to_metric_families

    def scrape() -> dict[str, Any]:
        r = httpx.get(web.base + "/metrics", timeout=10)
        assert r.status_code == 200 and r.headers["content-type"].startswith("text/plain")
        return {f.name: f for f in text_string_to_metric_families(r.text)}

    def options_received(families: dict[str, Any]) -> float:
        samples = families["sipexpress_core_received_requests"].samples
        return sum(s.value for s in samples if s.labels == {"method": "OPTIONS"})

    families = scrape()
    assert families["sipexpress_core_received_requests"].type == "counter"
    assert families["sipexpress_usrloc_contacts"].type == "gauge"
    assert families["sipexpress_tm_transaction_duration_seconds"].type == "histogram"
    # other tests of this module may reset the statistics: count one of our own
    before = options_received(families)
    assert udp_exchange(options_request("127.0.0.1", web.ser.port, rport=True), "127.0.0.1", web.ser.port)
    assert options_received(scrape()) == before + 1


def test_serweb_runs_on_its_own(web: WebServer) -> None:
    port = free_port()
    cmd = [
        sys.executable,
        "-m",
        "sipexpress.web",
        "--listen",
        f"127.0.0.1:{port}",
        "--jsonrpc",
        web.rpc_url,
        f"--jsonrpc-secret={web.rpc_secret}",
        "--db-url",
        web.db_url,
        "--domain",
        DOMAIN,
        "--admins",
        "admin@127.0.0.1",
        "--secret-file",
        str(web.workdir / "standalone.secret"),
        "--metrics-token",
        "scrape-me",
    ]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        base = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 15
        with httpx.Client(base_url=base, timeout=5) as c:
            while True:
                try:
                    r = c.get("/login")
                    break
                except httpx.HTTPError:
                    assert proc.poll() is None, proc.stdout.read() if proc.stdout else ""
                    assert time.monotonic() < deadline
                    time.sleep(0.2)
            assert r.status_code == 200
            # ser's metrics through serweb's own listener, behind its token
            assert c.get("/metrics").status_code == 401
            r = c.get("/metrics", headers={"Authorization": "Bearer scrape-me"})
            assert r.status_code == 200 and "sipexpress_tm_replies_total" in r.text
            r = c.get("/login")
            for h in (
                "content-security-policy",
                "x-frame-options",
                "x-content-type-options",
                "referrer-policy",
            ):
                assert h in r.headers
            csrf = re.search(r'name="csrf" value="([^"]+)"', r.text)
            assert csrf
            # without the token: refused
            r = c.post("/login", data={"username": "admin", "domain": DOMAIN, "password": "heslo"})
            assert r.status_code == 403
            r = c.post(
                "/login",
                data={"username": "admin", "domain": DOMAIN, "password": "heslo", "csrf": csrf.group(1)},
            )
            assert r.status_code == 303
            r = c.get("/admin/health")
            assert r.status_code == 200 and "sipexpress" in r.text and 'id="t-total"' in r.text
            csrf = re.search(r'name="csrf" value="([^"]+)"', r.text)  # a new session, a new token
            assert csrf
            # rate limit: five wrong passwords, then even the right one waits
            for _ in range(5):
                r = c.post(
                    "/login",
                    data={
                        "username": "user001",
                        "domain": DOMAIN,
                        "password": "wrong",
                        "csrf": csrf.group(1),
                    },
                )
                assert r.status_code == 401
            r = c.post(
                "/login",
                data={
                    "username": "user001",
                    "domain": DOMAIN,
                    "password": "pw-123456",
                    "csrf": csrf.group(1),
                },
            )
            assert r.status_code == 429 and "Too many failed log-ins" in r.text
    finally:
        proc.terminate()
        proc.wait(10)
