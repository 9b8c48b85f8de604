"""The web app's pure parts: validation, CSRF tokens, the log-in rate
limit, settings from ser.cfg options, the t_uac_dlg completion adapter and
the dashboard's samples."""

from __future__ import annotations

import pytest

from sipexpress.uac.flows import parse_completion
from sipexpress.web import security as sec
from sipexpress.web.config import WebConfig, load_secret, parse_listen
from sipexpress.web.monitor import Monitor, sample_from
from sipexpress.web.serclient import completion_text


@pytest.mark.parametrize(
    ("uri", "ok"),
    [
        ("sip:bob@example.com", True),
        ("sips:bob@example.com:5061;transport=tcp", True),
        ("tel:+420123456", True),
        ("bob", False),
        ("http://example.com", False),
        ("sip:bob@example.com?subject=x", False),
        ("sip:bob @example.com", False),
        ("sip:" + "a" * 200 + "@x", False),
        ("", False),
    ],
)
def test_check_uri(uri: str, ok: bool) -> None:
    assert (sec.check_uri(uri) is None) is ok


def test_field_checks() -> None:
    assert sec.check_username("jan.novak+1") is None
    assert sec.check_username("-x") and sec.check_username("a b") and sec.check_username("")
    assert sec.check_password("short") == "The password must have at least 6 characters."
    assert sec.check_password("a" * 26) == "The password may have at most 25 characters."
    assert sec.check_password("goodpass", "other") == "The two passwords differ."
    assert sec.check_email("a@b.cz") is None and sec.check_email("nope")
    assert sec.check_email("", required=False) is None
    assert sec.check_text("x" * 1301, "a message", 1300) == "A message may have at most 1300 characters."
    assert sec.check_text("a\x00b", "a message", 10)


def test_csrf_tokens() -> None:
    session: dict[str, object] = {}
    tok = sec.csrf_token(session)
    assert sec.csrf_token(session) == tok
    assert sec.csrf_ok(session, tok)
    assert not sec.csrf_ok(session, tok + "x") and not sec.csrf_ok(session, None)
    assert not sec.csrf_ok({}, tok)


def test_rate_limiter() -> None:
    rl = sec.RateLimiter(3, 60)
    for _ in range(3):
        assert rl.blocked("ip:1", "user:a") == 0
        rl.fail("ip:1", "user:a")
    assert 0 < rl.blocked("ip:1") <= 60
    assert rl.blocked("ip:2", "user:a") > 0  # the user is blocked from any address
    assert rl.blocked("ip:2", "user:b") == 0
    rl.reset("user:a")
    assert rl.blocked("ip:2", "user:a") == 0


def test_config_from_ser_options(tmp_path) -> None:  # type: ignore[no-untyped-def]
    cfg = WebConfig.from_options(
        {
            "web_listen": "[::1]:8081",
            "jsonrpc_http": "0.0.0.0:5090",
            "web_admins": "Admin@Example.org, root@x",
            "web_secret_file": str(tmp_path / "k"),
            "db_url": "sqlite:///x.db",
        }
    )
    assert (cfg.host, cfg.port) == ("::1", 8081)
    assert cfg.jsonrpc == "http://127.0.0.1:5090/"
    assert cfg.admins == {"admin@example.org", "root@x"}
    assert cfg.db_url == "sqlite:///x.db"
    assert cfg.secret == load_secret(str(tmp_path / "k"))  # generated once, then kept
    assert (tmp_path / "k").stat().st_mode & 0o777 == 0o600
    assert (
        WebConfig.from_options({"jsonrpc_socket": "/run/ser.sock", "web_secret": "s"}).jsonrpc
        == "unix:/run/ser.sock"
    )
    assert parse_listen("yes") == ("127.0.0.1", 8080)


def test_completion_text_round_trip() -> None:
    res = {
        "code": 200,
        "reason": "OK",
        "ruri": "sip:caller@127.0.0.1:5070",
        "next_hop": "sip:127.0.0.1:5060;lr",
        "route": ["<sip:127.0.0.1:5060;lr>"],
        "headers": [["Via", "SIP/2.0/UDP 127.0.0.1"], ["To", "<sip:a@b>;tag=x1"], ["CSeq", "1 INVITE"]],
    }
    c = parse_completion(completion_text(res))
    assert (c.code, c.reason, c.ruri, c.next_hop) == (
        200,
        "OK",
        "sip:caller@127.0.0.1:5070",
        "sip:127.0.0.1:5060;lr",
    )
    assert c.route == "Route: <sip:127.0.0.1:5060;lr>"
    assert c.header("To") == "<sip:a@b>;tag=x1"
    assert parse_completion(completion_text({"code": 408, "reason": "Request Timeout"})).code == 408


def _snapshot(invites: int, contacts: int, cpu: float, tm_2xx: int) -> list[dict[str, object]]:
    return [
        {"group": "core", "name": "received_requests", "value": {"INVITE": invites, "ACK": 3}},
        {"group": "core", "name": "cpu_seconds", "value": cpu},
        {"group": "core", "name": "resident_memory_bytes", "value": 50_000_000},
        {"group": "usrloc", "name": "contacts", "value": {"location": contacts, "aliases": 1}},
        {"group": "tm", "name": "current", "value": 7},
        {"group": "tm", "name": "waiting", "value": 2},
        {"group": "tm", "name": "replies", "value": {"2xx": tm_2xx, "4xx": 1}},
        {"group": "sl", "name": "replies", "value": {"200": 4, "404": 2}},
    ]


def test_dashboard_series_are_rates_over_the_kept_samples() -> None:
    m = Monitor(None, 1.0)  # type: ignore[arg-type]
    m.samples.append(sample_from(_snapshot(10, 2, 1.0, 5), 1000.0))
    m.samples.append(sample_from(_snapshot(30, 3, 1.5, 9), 1002.0))
    m.samples.append(sample_from(_snapshot(0, 3, 1.6, 0), 1003.0))  # stats.reset_statistics in between
    cols = m.series()
    assert cols["t"] == [1002.0, 1003.0]
    assert cols["calls"] == [10.0, 0.0]
    assert cols["contacts"] == [4, 4]
    assert cols["in_flight"] == [5, 5]
    assert cols["2xx"] == [2.0, 0.0] and cols["4xx"] == [0.0, 0.0]
    assert cols["cpu"] == [25.0, 10.0]
    assert cols["memory"] == [50.0, 50.0]
    assert sample_from([], 0.0).replies == (0, 0, 0, 0, 0)


async def test_server_down_and_database_errors_are_pages_not_tracebacks(tmp_path) -> None:  # type: ignore[no-untyped-def]
    import re

    import httpx

    from sipexpress.db import add_user, create_all, dispose_engines
    from sipexpress.web.app import create_app
    from tests.support import free_port

    url = f"sqlite:///{tmp_path}/db.sqlite"
    await create_all(url)
    await add_user(url, "eva", "example.org", "eva-pass-1")
    dead = f"http://127.0.0.1:{free_port()}/"  # nothing listens there
    app = create_app(WebConfig(db_url=url, domain="example.org", secret="s", jsonrpc=dead))
    try:
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://t") as c:
            tok = re.search(r'name="csrf" value="([^"]+)"', (await c.get("/login")).text)
            assert tok
            r = await c.post(
                "/login",
                data={"username": "eva", "domain": "example.org", "password": "eva-pass-1", "csrf": tok[1]},
            )
            assert r.status_code == 303 and r.headers["location"] == "/account"
            tok = re.search(r'name="csrf" value="([^"]+)"', (await c.get("/account")).text)
            assert tok
            for nxt, where in (("/calls", "/calls"), ("//evil.example", "/account"), ("/\\evil", "/account")):
                form = {"username": "eva", "domain": "example.org", "password": "eva-pass-1", "csrf": tok[1]}
                r = await c.post("/login", data={**form, "next": nxt})
                assert r.headers["location"] == where, nxt
                tok = re.search(r'name="csrf" value="([^"]+)"', (await c.get("/account")).text) or tok
            r = await c.get("/contacts")
            assert r.status_code == 503
            assert "The SIP server is not reachable right now" in r.text and "Traceback" not in r.text
            r = await c.get("/no/such/page")
            assert r.status_code == 404 and "There is no such page." in r.text
            r = await c.post("/contacts/add", data={"contact": "sip:a@b", "expires": "3600"})  # no token
            assert r.status_code == 403 and "security token" in r.text
    finally:
        await dispose_engines()


POST_FORMS = [
    "/login",
    "/logout",
    "/signup",
    "/forgot",
    "/reset",
    "/account/profile",
    "/account/password",
    "/contacts/add",
    "/contacts/remove",
    "/im",
    "/phonebook/add",
    "/phonebook/1/delete",
    "/phonebook/1/dial",
    "/admin/users/add",
    "/admin/users/example.org/eva/profile",
    "/admin/users/example.org/eva/password",
    "/admin/users/example.org/eva/group",
    "/admin/users/example.org/eva/alias",
    "/admin/users/example.org/eva/delete",
    "/admin/command",
]


async def test_every_form_checks_csrf_and_empty_fields(tmp_path) -> None:  # type: ignore[no-untyped-def]
    import re

    import httpx

    from sipexpress.db import add_user, create_all, dispose_engines, get_user
    from sipexpress.web.app import create_app
    from tests.support import free_port

    url = f"sqlite:///{tmp_path}/db.sqlite"
    await create_all(url)
    await add_user(url, "eva", "example.org", "eva-pass-1")
    await add_user(url, "boss", "example.org", "boss-pass-1")
    cfg = WebConfig(
        db_url=url,
        domain="example.org",
        secret="s",
        jsonrpc=f"http://127.0.0.1:{free_port()}/",
        admins=frozenset({"boss@example.org"}),
        signup=True,
    )
    app = create_app(cfg)
    try:
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://t") as c:
            tok = re.search(r'name="csrf" value="([^"]+)"', (await c.get("/login")).text)
            assert tok
            creds = {"username": "boss", "domain": "example.org", "password": "boss-pass-1"}
            assert (await c.post("/login", data={**creds, "csrf": tok[1]})).status_code == 303
            tok = re.search(r'name="csrf" value="([^"]+)"', (await c.get("/account")).text)
            assert tok
            for path in POST_FORMS:
                for bad in ({}, {"csrf": "forged"}):
                    r = await c.post(path, data=bad)
                    assert r.status_code == 403, (path, bad, r.status_code)
                    assert "security token is missing or wrong" in r.text
            # empty fields with a good token: a message, nothing changed
            empty = {"csrf": tok[1]}
            for path in ("/signup", "/forgot", "/im", "/phonebook/add", "/admin/users/add", "/admin/command"):
                r = await c.post(path, data=empty)
                assert r.status_code == 400, (path, r.status_code)
                assert 'role="alert"' in r.text, path
            r = await c.post("/contacts/add", data=empty)  # its page needs ser: read the flash elsewhere
            assert r.status_code == 303 and "Please enter a SIP address" in (await c.get("/account")).text
            for path in (
                "/account/password",
                "/admin/users/example.org/eva/group",
                "/admin/users/example.org/eva/password",
            ):
                r = await c.post(path, data=empty, follow_redirects=True)
                assert r.status_code == 200 and 'class="flash error"' in r.text, path
            # too long text
            r = await c.post("/phonebook/add", data={**empty, "fname": "x" * 33, "sip_uri": "sip:a@b"})
            assert r.status_code == 400 and "at most 32 characters" in r.text
            eva = await get_user(url, "eva", "example.org")
            assert eva is not None and eva.password == "eva-pass-1"
    finally:
        await dispose_engines()
