"""The admin console in a real browser against a real ``ser``: server-wide
call history (filters, CSV export equal to the acc rows), domains,
aliases and groups, removing a SIPp phone's registration from the Online
page, the log viewer, and every page at phone width (390 px)."""

from __future__ import annotations

import csv
import io
import time
from datetime import datetime, timedelta
from typing import Any

import pytest
from sqlalchemy import insert, select

from sipexpress.db import add_user, schema
from sipexpress.db.engine import run
from sipexpress.mgmt.client import RpcError, rpc_call
from tests.web.conftest import DOMAIN, WebServer, run_async, shot
from tests.web.test_admin_pages import wait_until
from tests.web.test_user_pages import alert, follow, login, register_phone, status

pytestmark = [pytest.mark.interop, pytest.mark.timeout(180)]

PHONE_WIDTH = 390
# every element's right edge inside the viewport (the skip link sits left of it on purpose)
OVERFLOW_JS = """() => {
  const w = document.documentElement.clientWidth;
  const bad = [];
  for (const e of document.querySelectorAll('body *')) {
    const r = e.getBoundingClientRect();
    if (r.width > 0 && r.right > w + 0.5) {
      bad.push(e.tagName.toLowerCase() + (e.id ? '#' + e.id : '') + '.' + e.className + ' right=' + Math.round(r.right));
    }
  }
  return {scroll: document.documentElement.scrollWidth, width: w, bad: bad.slice(0, 8)};
}"""


def db_rows(web: WebServer, table: Any, *where: Any, order: Any = None) -> list[dict[str, Any]]:
    async def go() -> list[dict[str, Any]]:
        async def op(c: Any) -> list[dict[str, Any]]:
            q = select(table).where(*where)
            if order is not None:
                q = q.order_by(order)
            return [dict(r._mapping) for r in await c.execute(q)]

        return await run(web.db_url, op, write=False)

    rows: list[dict[str, Any]] = run_async(go)
    return rows


def seed_acc(web: WebServer) -> None:
    """Calls of two accounts over several days, answered and failed, and
    one BYE; one From URI that a spreadsheet would take for a formula."""
    base = datetime(2026, 11, 20, 9, 0, 0)
    rows = []
    for i in range(36):
        who = "alice" if i % 3 else "bob"
        code = ("200", "486", "404", "200")[i % 4]
        rows.append(
            {
                "sip_method": "INVITE",
                "sip_status": code,
                "from_uri": f"sip:{who}@{DOMAIN}" if i != 7 else "=HYPERLINK(1)",
                "to_uri": f"sip:callee{i}@example.org",
                "sip_from": f"<sip:{who}@{DOMAIN}>;tag=f{i}",
                "sip_to": f"<sip:callee{i}@example.org>",
                "sip_callid": f"call-{i:03d}@test",
                "username": who,
                "domain": DOMAIN,
                "fromtag": f"f{i}",
                "totag": f"t{i}" if code == "200" else "",
                "i_uri": f"sip:callee{i}@example.org",
                "o_uri": f"sip:callee{i}@192.0.2.{i}",
                "time": base + timedelta(hours=7 * i),
            }
        )
    rows.append(
        {**rows[0], "sip_method": "BYE", "sip_callid": "call-000@test", "time": base + timedelta(hours=1)}
    )

    async def go() -> None:
        async def op(c: Any) -> None:
            await c.execute(insert(schema.acc), rows)

        await run(web.db_url, op)

    run_async(go)


def cells(page: Any, table: str) -> list[list[str]]:
    out = []
    for tr in page.locator(f"table#{table} tbody tr").all():
        out.append([td.inner_text().strip() for td in tr.locator("td").all()])
    return out


def test_call_history_filters_and_csv(page: Any, web: WebServer) -> None:
    seed_acc(web)
    login(page, "admin", "heslo")
    page.wait_for_url("**/account")
    follow(page, page.get_by_role("link", name="Call history"))
    acc = schema.acc
    invites = db_rows(web, acc, acc.c.sip_method == "INVITE", order=acc.c.time.desc())
    assert "Page 1 of 2 (36 rows)" in page.locator(".pager").inner_text()
    shown = cells(page, "calls")
    assert len(shown) == 25
    for row, db in zip(shown, invites, strict=False):
        assert row[0] == db["time"].strftime("%Y-%m-%d %H:%M:%S")
        assert row[1:5] == [db["sip_method"], db["sip_status"], db["from_uri"], db["to_uri"]]
        assert row[5] == f"{db['username']}@{db['domain']}" and row[6] == db["sip_callid"]
    shot(page, "admin_calls")
    # alice's failed calls (4xx) in the last days of November
    page.get_by_label("Caller account").fill("alice")
    page.get_by_label("From date").fill("2026-11-22")
    page.get_by_label("To date").fill("2026-11-28")
    page.get_by_label("Status").fill("4")
    follow(page, page.get_by_role("button", name="Filter"))
    want = db_rows(
        web,
        acc,
        acc.c.sip_method == "INVITE",
        acc.c.username == "alice",
        acc.c.sip_status.like("4%"),
        acc.c.time >= datetime(2026, 11, 22),
        acc.c.time < datetime(2026, 11, 29),
        order=acc.c.time.desc(),
    )
    assert 0 < len(want) < 25
    assert [r[6] for r in cells(page, "calls")] == [w["sip_callid"] for w in want]
    # the CSV of the same filter: a header and exactly those acc rows
    with page.expect_download() as dl:
        page.get_by_role("link", name="Export CSV").click()
    got = list(csv.reader(io.StringIO(dl.value.path().read_text(encoding="utf-8"))))
    cols = got[0]
    assert cols[:5] == ["time", "sip_method", "sip_status", "from_uri", "to_uri"]
    assert got[1:] == [[_csv(w[c]) for c in cols] for w in want]
    # every method, searched by Call-ID: the BYE too; the formula-like From is quoted
    page.goto("/admin/calls?method=&q=call-000")
    assert sorted(r[1] for r in cells(page, "calls")) == ["BYE", "INVITE"]
    csv_all = page.request.get("/admin/calls.csv?method=").text()
    rows = list(csv.reader(io.StringIO(csv_all)))
    assert len(rows) == 1 + len(db_rows(web, acc))
    assert any(r[3] == "'=HYPERLINK(1)" for r in rows)
    # bad filters are explained, not a server error
    resp = page.goto("/admin/calls?since=yesterday&status=99x")
    assert resp.status == 400
    assert "From date: write it as YYYY-MM-DD." in alert(page) and "Status:" in alert(page)


def _csv(v: Any) -> str:
    return v.strftime("%Y-%m-%d %H:%M:%S") if isinstance(v, datetime) else str(v or "")


def test_domains_aliases_and_groups(page: Any, web: WebServer) -> None:
    run_async(lambda: add_user(web.db_url, "dana", DOMAIN, "dana-pass1"))
    login(page, "admin", "heslo")
    page.wait_for_url("**/account")
    # domains: the table's rows, added and removed in the UI
    follow(page, page.get_by_role("link", name="Domains"))
    for name in ("example.com", "voip.example.org"):
        page.get_by_label("Domain", exact=True).fill(name)
        follow(page, page.get_by_role("button", name="Add domain"))
        assert f"Domain {name} added." in status(page)
    page.get_by_label("Domain", exact=True).fill("example.com")
    follow(page, page.get_by_role("button", name="Add domain"))
    assert "Domain example.com is there already." in alert(page)
    page.get_by_label("Domain", exact=True).fill("bad domain!")
    follow(page, page.get_by_role("button", name="Add domain"))
    assert "not a valid domain name" in alert(page)
    d = schema.domain
    in_db = [r["domain"] for r in db_rows(web, d, order=d.c.domain)]
    assert in_db == ["example.com", "voip.example.org"]
    # the domain module (db_mode 1) was told to reload: ser knows them at once
    assert (
        sorted(x["domain"] for x in rpc_call("domain_dump", url=web.rpc_url, secret=web.rpc_secret)) == in_db
    )
    assert [r[0] for r in cells(page, "domains")] == in_db
    shot(page, "admin_domains")
    follow(page, page.get_by_role("button", name="Remove domain example.com"))
    assert "Domain example.com removed." in status(page)
    assert "ser reloaded its domain list." in status(page)
    assert [r["domain"] for r in db_rows(web, d, order=d.c.domain)] == ["voip.example.org"]
    assert [x["domain"] for x in rpc_call("domain_dump", url=web.rpc_url, secret=web.rpc_secret)] == [
        "voip.example.org"
    ]
    # aliases: in usrloc's table "aliases", seen by ul_show_contact
    follow(page, page.get_by_role("link", name="Aliases"))
    page.get_by_label("Alias (e.g. a number)").fill("7001")
    page.get_by_label("For the user").fill(f"dana@{DOMAIN}")
    follow(page, page.get_by_role("button", name="Add alias"))
    assert f"Alias 7001@{DOMAIN} added." in status(page)
    got = rpc_call("ul_show_contact", ["aliases", f"7001@{DOMAIN}"], url=web.rpc_url, secret=web.rpc_secret)
    assert got[0]["contact"] == f"sip:dana@{DOMAIN}"
    # usrloc without use_domain keeps the user part only, and the page shows what it keeps
    assert cells(page, "aliases")[0][:2] == ["7001", f"sip:dana@{DOMAIN}"]
    page.get_by_label("Alias (e.g. a number)").fill("7002")
    page.get_by_label("For the user").fill(f"nobody@{DOMAIN}")
    follow(page, page.get_by_role("button", name="Add alias"))
    assert f"There is no user nobody@{DOMAIN}." in alert(page)
    page.get_by_label("Alias (e.g. a number)").fill("dana")
    page.get_by_label("For the user").fill(f"dana@{DOMAIN}")
    follow(page, page.get_by_role("button", name="Add alias"))
    assert f"dana@{DOMAIN} is a user name already." in alert(page)
    shot(page, "admin_aliases")
    follow(page, page.get_by_role("button", name="Remove alias 7001"))
    assert f"Alias 7001@{DOMAIN} removed." in status(page)
    with pytest.raises(RpcError):
        rpc_call("ul_show_contact", ["aliases", f"7001@{DOMAIN}"], url=web.rpc_url, secret=web.rpc_secret)
    # groups: grp rows granted and revoked
    follow(page, page.get_by_role("link", name="Groups"))
    page.get_by_label("User", exact=True).fill(f"dana@{DOMAIN}")
    page.get_by_label("Group", exact=True).fill("ld")
    follow(page, page.get_by_role("button", name="Grant"))
    assert f"dana@{DOMAIN} added to group ld." in status(page)
    page.get_by_label("User", exact=True).fill(f"ghost@{DOMAIN}")
    page.get_by_label("Group", exact=True).fill("ld")
    follow(page, page.get_by_role("button", name="Grant"))
    assert f"There is no user ghost@{DOMAIN}." in alert(page)
    page.get_by_label("User", exact=True).fill(f"dana@{DOMAIN}")
    page.get_by_label("Group", exact=True).fill("no good")
    follow(page, page.get_by_role("button", name="Grant"))
    assert "A group name is" in alert(page)
    g = schema.grp
    members = db_rows(web, g, order=g.c.grp)
    assert [(r["grp"], r["username"], r["domain"]) for r in members] == [("ld", "dana", DOMAIN)]
    follow(page, page.get_by_role("link", name="ld (1)"))
    assert [r[:2] for r in cells(page, "members")] == [["ld", f"dana@{DOMAIN}"]]
    shot(page, "admin_groups")
    follow(page, page.get_by_role("button", name=f"Revoke ld from dana@{DOMAIN}"))
    assert f"dana@{DOMAIN} removed from group ld." in status(page)
    assert db_rows(web, g, g.c.username == "dana") == []


def test_online_shows_the_phone_and_removes_it(page: Any, web: WebServer, phones: Any) -> None:
    run_async(lambda: add_user(web.db_url, "otto", DOMAIN, "otto-pass1"))
    reg = register_phone(web, phones, "otto", "otto-pass1")
    assert reg.wait(15) == 0, reg.output()
    login(page, "admin", "heslo")
    page.wait_for_url("**/account")
    follow(page, page.get_by_role("link", name="Online"))
    row = page.locator("table#online tbody tr", has_text="sip:otto@")
    assert row.count() == 1
    text = [td.inner_text().strip() for td in row.locator("td").all()]
    assert text[0] == "otto"  # usrloc without use_domain: the user part is the AOR
    assert text[1] == f"sip:otto@127.0.0.1:{reg.port}"
    assert text[2] == f"127.0.0.1:{reg.port}"  # where the REGISTER came from
    assert text[3] == "UDP" and text[4] == "SIPp phone"
    assert "min" in text[5]
    shot(page, "admin_online")
    # search: by user agent, and nothing
    rpc_call(
        "ul_add",
        ["location", f"fifo@{DOMAIN}", "sip:fifo@192.0.2.9", "600", "1.00"],
        url=web.rpc_url,
        secret=web.rpc_secret,
    )
    page.get_by_label("Search").fill("sipp PHONE")
    follow(page, page.get_by_role("button", name="Search"))
    assert [r[0] for r in cells(page, "online")] == ["otto"]
    page.get_by_label("Search").fill("192.0.2.9")
    follow(page, page.get_by_role("button", name="Search"))
    assert [r[1] for r in cells(page, "online")] == ["sip:fifo@192.0.2.9"]
    page.get_by_label("Search").fill("nobody-like-this")
    follow(page, page.get_by_role("button", name="Search"))
    assert page.get_by_text("No contact matches.").is_visible()
    page.get_by_label("Search").fill("")
    follow(page, page.get_by_role("button", name="Search"))
    follow(page, page.get_by_role("button", name=f"Remove sip:otto@127.0.0.1:{reg.port}"))
    assert f"Contact sip:otto@127.0.0.1:{reg.port} of otto removed." in status(page)
    assert page.locator("table#online tbody tr", has_text="sip:otto@").count() == 0
    with pytest.raises(RpcError) as err:
        rpc_call("ul_show_contact", ["location", f"otto@{DOMAIN}"], url=web.rpc_url, secret=web.rpc_secret)
    assert err.value.data["ser_code"] == 404


def test_log_viewer_shows_and_follows_the_servers_lines(page: Any, web: WebServer) -> None:
    # a line ser writes at error level: ul_add of a non-permanent contact with expires 0
    with pytest.raises(RpcError):
        rpc_call(
            "ul_add",
            ["location", f"first@{DOMAIN}", "sip:x@192.0.2.1", "0", "1.00"],
            url=web.rpc_url,
            secret=web.rpc_secret,
        )
    login(page, "admin", "heslo")
    page.wait_for_url("**/account")
    follow(page, page.get_by_role("link", name="Log"))
    tail = rpc_call("log_tail", ["200"], url=web.rpc_url, secret=web.rpc_secret)
    rows = cells(page, "log")
    assert len(rows) == min(200, len(tail))
    newest = [(r["level"], r["logger"], r["message"]) for r in reversed(tail)]
    assert [tuple(r[1:4]) for r in rows[:5]] == newest[:5]
    assert any("expires == 0 and not persistent contact" in r[3] for r in rows)
    page.get_by_label("Lowest level").select_option("err")
    page.get_by_label("Contains").fill("persistent")
    follow(page, page.get_by_role("button", name="Show"))
    rows = cells(page, "log")
    assert len(rows) == 1 and rows[0][1] == "ERROR"
    # a new line appears while the page is open (no reload)
    with pytest.raises(RpcError):
        rpc_call(
            "ul_add",
            ["location", f"second@{DOMAIN}", "sip:y@192.0.2.2", "0", "1.00"],
            url=web.rpc_url,
            secret=web.rpc_secret,
        )
    wait_until(lambda: page.locator("table#log tbody tr").count() == 2)
    ring = [
        x
        for x in rpc_call("log_tail", ["1000", "err"], url=web.rpc_url, secret=web.rpc_secret)
        if "persistent" in x["message"]
    ]
    clock = "%Y-%m-%d %H:%M:%S"
    assert cells(page, "log") == [
        [time.strftime(clock, time.localtime(x["time"])), x["level"], x["logger"], x["message"]]
        for x in reversed(ring)
    ]
    assert page.locator("#log-live").inner_text().startswith("live, updated")
    shot(page, "admin_log")


ALL_PAGES = (
    "/account",
    "/contacts",
    "/im",
    "/phonebook",
    "/calls",
    "/admin/users",
    "/admin/users/127.0.0.1/admin",
    "/admin/online",
    "/admin/calls",
    "/admin/domains",
    "/admin/aliases",
    "/admin/groups",
    "/admin/log",
    "/admin/health",
    "/admin/command",
)


def test_every_page_fits_a_phone_and_has_a_favicon(browser: Any, web: WebServer) -> None:
    # a long, unbreakable value in a table: a contact with a long user part
    long_uri = "sip:" + "x" * 90 + "@very-long-host-name.example.com:5060;transport=udp"
    rpc_call(
        "ul_add",
        ["location", f"admin@{DOMAIN}", long_uri, "600", "1.00"],
        url=web.rpc_url,
        secret=web.rpc_secret,
    )
    seed_acc(web)
    ctx = browser.new_context(base_url=web.base, viewport={"width": PHONE_WIDTH, "height": 844})
    ctx.set_default_timeout(10000)
    page = ctx.new_page()
    try:
        for path in ("/login", "/signup", "/forgot"):
            page.goto(path)
            got = page.evaluate(OVERFLOW_JS)
            assert got["scroll"] <= PHONE_WIDTH and not got["bad"], (path, got)
        login(page, "admin", "heslo")
        page.wait_for_url("**/account")
        for path in ALL_PAGES:
            resp = page.goto(path)
            assert resp.status == 200, path
            got = page.evaluate(OVERFLOW_JS)
            assert got["width"] == PHONE_WIDTH
            assert got["scroll"] <= PHONE_WIDTH and not got["bad"], (path, got)
        page.goto("/admin/calls?user=bob&status=4")
        assert page.locator("table#calls tbody tr").count() >= 2
        shot(page, "phone_calls")
        page.goto("/admin/online")
        assert page.locator("table#online tbody tr", has_text=long_uri).is_visible()
        shot(page, "phone_online")
        # the icon the pages name, and /favicon.ico that browsers ask for anyway
        href = page.locator("link[rel=icon]").get_attribute("href")
        for url in (href, "/favicon.ico"):
            r = page.request.get(url)
            assert r.status == 200 and r.headers["content-type"].startswith("image/svg+xml"), url
            assert r.text().startswith("<svg")
    finally:
        ctx.close()
