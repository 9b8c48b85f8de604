"""auth + auth_db over real UDP, real parsed messages and a real database.

The request route is SER's classic::

    if (!www_authorize("", "subscriber")) { www_challenge("", "1"); break; }
    sl_send_reply("200", "OK");

Each refusal must end in the right reply (the challenge again, 400 or 500)
and a log line; none may get a 200.
"""

from __future__ import annotations

import asyncio
import logging
import socket
import time
from typing import Any

import pytest
from sqlalchemy import text

from sipexpress.core.context import RequestContext
from sipexpress.db import add_user, run
from sipexpress.modules.auth import AuthModule
from sipexpress.modules.auth_db import AuthDbModule
from sipexpress.sip.digest import Credentials, Nonces, calc_ha1, calc_response
from sipexpress.sip.message import SipMessage
from tests.support import free_port, wait_for_async
from tests.unit.auth.conftest import DOMAIN, Server, authorization, request, start_server

SECRET = "test-secret"


def www_route(srv_ref: list[Server], table: str = "subscriber", realm: str = "", proxy: bool = False) -> Any:
    async def route(ctx: RequestContext) -> int:
        srv = srv_ref[0]
        auth_db = ctx.core.module("auth_db")
        auth = ctx.core.module("auth")
        assert isinstance(auth_db, AuthDbModule) and isinstance(auth, AuthModule)
        if proxy:
            r = await auth_db.proxy_authorize(ctx, realm, table)
        else:
            r = await auth_db.www_authorize(ctx, realm, table)
        srv.results.append(r)
        if r == 0:
            return 0
        if r < 0:
            if proxy:
                return auth.proxy_challenge(ctx, realm, True)
            return auth.www_challenge(ctx, realm, True)
        creds = ctx.credentials
        extra = [f"X-User: {creds.username if isinstance(creds, Credentials) else '-'}"]
        if proxy:
            assert auth.consume_credentials(ctx) == 1
            extra.append(f"X-Left: {len(ctx.msg.header_all('proxy-authorization'))}")
        ctx.core.send_reply(ctx, 200, "OK", extra)
        return 1

    return route


async def auth_server(
    servers: list[Server],
    db_url: str,
    modparams: list[tuple[str, str, Any]] | None = None,
    **kw: Any,
) -> Server:
    ref: list[Server] = []
    params = [("auth", "secret", SECRET), *(modparams or [])]
    srv = await start_server(db_url, ["auth", "auth_db"], params, www_route(ref, **kw))
    ref.append(srv)
    servers.append(srv)
    return srv


async def challenge(srv: Server, **kw: Any) -> SipMessage:
    r = await srv.send(request(**kw))
    assert r is not None and r.status == 401, r
    return r


# -- the happy path ------------------------------------------------------------


async def test_register_challenge_then_200(servers: list[Server], any_db_url: str) -> None:
    srv = await auth_server(servers, any_db_url)
    ch = await challenge(srv)
    www = ch.header("www-authenticate") or ""
    assert www.startswith(f'Digest realm="{DOMAIN}", nonce="')
    assert www.endswith(', qop="auth", algorithm=MD5')
    assert "stale" not in www
    nonce = ch.www_authenticate[0].get("nonce") or ""
    assert len(nonce) == 48
    ok = await srv.send(request(extra=[authorization(ch, "jiri", "secret")]))
    assert ok is not None and ok.status == 200
    assert ok.header("x-user") == "jiri"
    assert srv.results == [-1, 1]
    # the next request with a fresh nonce count on the same nonce is fine too
    ok = await srv.send(request(extra=[authorization(ch, "jiri", "secret", nc=2)]))
    assert ok is not None and ok.status == 200


async def test_challenge_without_qop(servers: list[Server], sqlite_url: str) -> None:
    ref: list[Server] = []

    async def route(ctx: RequestContext) -> int:
        auth = ctx.core.module("auth")
        assert isinstance(auth, AuthModule)
        return auth.www_challenge(ctx, "my.realm", False)

    srv = await start_server(sqlite_url, ["auth", "auth_db"], [], route)
    ref.append(srv)
    servers.append(srv)
    ch = await challenge(srv)
    www = ch.header("www-authenticate") or ""
    assert www.startswith('Digest realm="my.realm", nonce="')
    assert www.endswith('", algorithm=MD5') and "qop" not in www
    assert len(ch.www_authenticate[0].get("nonce") or "") == 40


async def test_realm_is_from_host_for_non_register(servers: list[Server], sqlite_url: str) -> None:
    srv = await auth_server(servers, sqlite_url)
    r = await srv.send(
        request(
            "MESSAGE", "sip:alice@somewhere.net", from_uri="sip:jiri@from.example", to_uri="sip:x@to.example"
        )
    )
    assert r is not None and r.status == 401
    assert r.www_authenticate[0].get("realm") == "from.example"


async def test_proxy_authorize_and_consume_credentials(servers: list[Server], sqlite_url: str) -> None:
    srv = await auth_server(servers, sqlite_url, proxy=True)
    ruri = "sip:alice@iptel.org"
    r = await srv.send(request("INVITE", ruri, to_uri=ruri))
    assert r is not None and r.status == 407 and r.reason == "Proxy Authentication Required"
    pa = r.header("proxy-authenticate") or ""
    assert pa.startswith(f'Digest realm="{DOMAIN}"') and r.header("www-authenticate") is None
    hdr = authorization(r, "jiri", "secret", "INVITE", ruri, hf="Proxy-Authorization")
    ok = await srv.send(request("INVITE", ruri, to_uri=ruri, extra=[hdr]))
    assert ok is not None and ok.status == 200
    assert ok.header("x-left") == "0"


async def test_ack_and_cancel_pass(servers: list[Server], sqlite_url: str) -> None:
    srv = await auth_server(servers, sqlite_url)
    r = await srv.send(request("CANCEL", "sip:alice@iptel.org"))
    assert r is not None and r.status == 200 and r.header("x-user") == "-"
    assert srv.results == [1]


async def test_calculate_ha1_from_clear_text_password(servers: list[Server], sqlite_url: str) -> None:
    srv = await auth_server(
        servers, sqlite_url, [("auth_db", "calculate_ha1", 1), ("auth_db", "password_column", "password")]
    )
    ch = await challenge(srv)
    ok = await srv.send(request(extra=[authorization(ch, "jiri", "secret")]))
    assert ok is not None and ok.status == 200


async def test_username_with_domain_uses_ha1b(servers: list[Server], sqlite_url: str) -> None:
    srv = await auth_server(servers, sqlite_url)
    ch = await challenge(srv)
    # ha1b = md5("jiri@iptel.org:iptel.org:secret")
    ok = await srv.send(request(extra=[authorization(ch, f"jiri@{DOMAIN}", "secret")]))
    assert ok is not None and ok.status == 200
    assert ok.header("x-user") == f"jiri@{DOMAIN}"


async def test_use_domain(servers: list[Server], sqlite_url: str) -> None:
    await add_user(sqlite_url, "jiri", "example.com", "other")
    srv = await auth_server(servers, sqlite_url, [("auth_db", "use_domain", 1)])
    ch = await challenge(srv, from_uri="sip:jiri@example.com")
    assert ch.www_authenticate[0].get("realm") == "example.com"
    ok = await srv.send(request(from_uri="sip:jiri@example.com", extra=[authorization(ch, "jiri", "other")]))
    assert ok is not None and ok.status == 200
    ch = await challenge(srv)
    ok = await srv.send(request(extra=[authorization(ch, "jiri", "secret")]))
    assert ok is not None and ok.status == 200


# -- every way in that must fail ------------------------------------------------------


async def test_missing_authorization(
    servers: list[Server], sqlite_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    srv = await auth_server(servers, sqlite_url)
    with caplog.at_level(logging.INFO, "sipexpress"):
        await challenge(srv)
    assert srv.results == [-1]
    assert "no Authorization credentials for realm 'iptel.org'" in caplog.text


async def test_wrong_password(
    servers: list[Server], sqlite_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    srv = await auth_server(servers, sqlite_url)
    ch = await challenge(srv)
    with caplog.at_level(logging.INFO, "sipexpress"):
        r = await srv.send(request(extra=[authorization(ch, "jiri", "guess")]))
    assert r is not None and r.status == 401
    assert "stale" not in (r.header("www-authenticate") or "")
    assert srv.results == [-1, -1]
    assert "wrong password/response of 'jiri'@'iptel.org'" in caplog.text


async def test_unknown_user_in_realm(
    servers: list[Server], sqlite_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    srv = await auth_server(servers, sqlite_url, [("auth_db", "use_domain", 1)])
    # bob exists, but in example.com; iptel.org has no bob
    ch = await challenge(srv, from_uri=f"sip:bob@{DOMAIN}")
    with caplog.at_level(logging.INFO, "sipexpress"):
        r = await srv.send(request(from_uri=f"sip:bob@{DOMAIN}", extra=[authorization(ch, "bob", "builder")]))
    assert r is not None and r.status == 401
    assert srv.results == [-1, -1]
    assert "no such user 'bob' in realm 'iptel.org'" in caplog.text


@pytest.mark.parametrize(
    "username",
    [
        "' OR '1'='1",
        "jiri' --",
        "jiri'; DROP TABLE subscriber; --",
        'x\\" OR 1=1 --',
        "%' OR username LIKE '%",
    ],
)
async def test_sql_injection_in_username(
    servers: list[Server], any_db_url: str, username: str, caplog: pytest.LogCaptureFixture
) -> None:
    srv = await auth_server(servers, any_db_url)
    ch = await challenge(srv)
    with caplog.at_level(logging.INFO, "sipexpress"):
        r = await srv.send(request(extra=[authorization(ch, username, "secret")]))
    assert r is not None and r.status == 401
    assert srv.results[-1] == -1
    assert "no such user" in caplog.text
    # the table is intact and jiri still gets in
    ch = await challenge(srv)
    ok = await srv.send(request(extra=[authorization(ch, "jiri", "secret")]))
    assert ok is not None and ok.status == 200

    async def count(conn: Any) -> int:
        return int((await conn.execute(text("SELECT COUNT(*) FROM subscriber"))).scalar_one())

    assert await run(any_db_url, count) == 3


async def test_replayed_nonce_count(
    servers: list[Server], sqlite_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    srv = await auth_server(servers, sqlite_url)
    ch = await challenge(srv)
    hdr = authorization(ch, "jiri", "secret")
    ok = await srv.send(request(extra=[hdr]))
    assert ok is not None and ok.status == 200
    with caplog.at_level(logging.INFO, "sipexpress"):
        again = await srv.send(request(extra=[hdr]))
    assert again is not None and again.status == 401
    assert "stale=true" in (again.header("www-authenticate") or "")
    assert srv.results == [-1, 1, -1]
    assert "replayed nonce count 00000001 from 'jiri'" in caplog.text


async def test_retransmission_is_answered_again(servers: list[Server], sqlite_url: str) -> None:
    srv = await auth_server(servers, sqlite_url)
    ch = await challenge(srv)
    data = request(extra=[authorization(ch, "jiri", "secret")])
    for _ in range(2):  # the 200 was lost: the UA sends the very same request
        ok = await srv.send(data)
        assert ok is not None and ok.status == 200
    assert srv.results == [-1, 1, 1]


async def test_stale_nonce(servers: list[Server], sqlite_url: str, caplog: pytest.LogCaptureFixture) -> None:
    srv = await auth_server(servers, sqlite_url)
    old = Nonces(SECRET, 300).generate(time.time() - 1000)  # ours, expired 700 s ago
    ha1 = calc_ha1("jiri", DOMAIN, "secret")
    uri = f"sip:{DOMAIN}"

    def hdr(pw_ha1: str) -> str:
        resp = calc_response(pw_ha1, old, "REGISTER", uri)
        return (
            f'Authorization: Digest username="jiri", realm="{DOMAIN}", nonce="{old}", uri="{uri}", '
            f'response="{resp}"'
        )

    with caplog.at_level(logging.INFO, "sipexpress"):
        r = await srv.send(request(extra=[hdr(ha1)]))
    assert r is not None and r.status == 401
    assert (r.header("www-authenticate") or "").endswith(", stale=true, algorithm=MD5")
    assert "stale nonce" in caplog.text
    # with a wrong password the expiry is not revealed
    r = await srv.send(request(extra=[hdr(calc_ha1("jiri", DOMAIN, "nope"))]))
    assert r is not None and r.status == 401 and "stale" not in (r.header("www-authenticate") or "")
    assert srv.results == [-1, -1]


async def test_nonce_of_another_server(
    servers: list[Server], sqlite_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    srv = await auth_server(servers, sqlite_url)
    foreign = Nonces("other-secret", 300).generate(time.time(), qop=True)
    uri = f"sip:{DOMAIN}"

    def hdr(password: str) -> str:
        ha1 = calc_ha1("jiri", DOMAIN, password)
        resp = calc_response(ha1, foreign, "REGISTER", uri, "auth", "00000001", "0a4f113b")
        return (
            f'Authorization: Digest username="jiri", realm="{DOMAIN}", nonce="{foreign}", uri="{uri}", '
            f'response="{resp}", algorithm=MD5, qop=auth, nc=00000001, cnonce="0a4f113b"'
        )

    with caplog.at_level(logging.INFO, "sipexpress"):
        # a wrong password: refused, no hint
        r = await srv.send(request(extra=[hdr("guess")]))
        assert r is not None and r.status == 401 and "stale" not in (r.header("www-authenticate") or "")
        assert "invalid nonce for 'jiri'" in caplog.text
        # the right password (e.g. a nonce from before our restart): stale=true
        r = await srv.send(request(extra=[hdr("secret")]))
        assert r is not None and r.status == 401 and "stale=true" in (r.header("www-authenticate") or "")
    assert srv.results == [-1, -1]


async def test_qop_downgrade(
    servers: list[Server], sqlite_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    srv = await auth_server(servers, sqlite_url)
    ch = await challenge(srv)
    with caplog.at_level(logging.INFO, "sipexpress"):
        r = await srv.send(request(extra=[authorization(ch, "jiri", "secret", qop=False)]))
    assert r is not None and r.status == 401
    assert "qop required" in caplog.text


async def test_digest_uri_mismatch(
    servers: list[Server], sqlite_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    srv = await auth_server(servers, sqlite_url)
    ch = await challenge(srv)
    hdr = authorization(ch, "jiri", "secret", uri="sip:elsewhere.org")
    with caplog.at_level(logging.INFO, "sipexpress"):
        r = await srv.send(request(extra=[hdr]))
    assert r is not None and r.status == 400
    assert srv.results[-1] == 0
    assert "does not match Request-URI" in caplog.text
    # equivalent renderings of the same URI are fine
    ch = await challenge(srv)
    ok = await srv.send(request(extra=[authorization(ch, "jiri", "secret", uri=f"sip:{DOMAIN.upper()}")]))
    assert ok is not None and ok.status == 200


async def test_incomplete_and_malformed_credentials(
    servers: list[Server], sqlite_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    srv = await auth_server(servers, sqlite_url)
    ch = await challenge(srv)
    nonce = ch.www_authenticate[0].get("nonce")
    bad = [
        f'Authorization: Digest username="jiri", realm="{DOMAIN}", nonce="{nonce}", uri="sip:{DOMAIN}"',
        f'Authorization: Digest realm="{DOMAIN}", username="jiri@elsewhere", nonce="{nonce}", '
        f'uri="sip:{DOMAIN}", response="00000000000000000000000000000000"',
        f'Authorization: Digest username="jiri, realm="{DOMAIN}"',
    ]
    with caplog.at_level(logging.INFO, "sipexpress"):
        for h in bad:
            r = await srv.send(request(extra=[h]))
            assert r is not None and r.status == 400, h
    assert srv.results[-3:] == [0, 0, 0]
    assert "incomplete credentials" in caplog.text and "malformed Authorization" in caplog.text


async def test_credentials_for_another_realm_are_ignored(servers: list[Server], sqlite_url: str) -> None:
    srv = await auth_server(servers, sqlite_url)
    ch = await challenge(srv)
    r = await srv.send(request(extra=[authorization(ch, "jiri", "secret", realm="other.org")]))
    assert r is not None and r.status == 401
    assert srv.results == [-1, -1]


async def test_response_is_bound_to_the_method(servers: list[Server], sqlite_url: str) -> None:
    srv = await auth_server(servers, sqlite_url)
    ch = await challenge(srv)
    r = await srv.send(request(extra=[authorization(ch, "jiri", "secret", method="INVITE")]))
    assert r is not None and r.status == 401


# -- the database failing -------------------------------------------------------------------


async def test_database_down_gives_500(
    servers: list[Server], sqlite_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    dead = f"mysql://root@127.0.0.1:{free_port(socket.SOCK_STREAM)}/ser"
    srv = await auth_server(servers, dead, [("auth_db", "db_timeout", 1000)])
    ch = await challenge(srv)
    with caplog.at_level(logging.INFO, "sipexpress"):
        r = await srv.send(request(extra=[authorization(ch, "jiri", "secret")]))
    assert r is not None and r.status == 500
    assert srv.results[-1] == 0
    assert "cannot look up 'jiri'" in caplog.text


async def test_slow_database_times_out_without_stalling_others(
    servers: list[Server], sqlite_url: str
) -> None:
    # a "database server" that accepts connections and never says a word
    conns: list[asyncio.StreamWriter] = []

    async def silent(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        conns.append(writer)

    black_hole = await asyncio.start_server(silent, "127.0.0.1", 0)
    port = black_hole.sockets[0].getsockname()[1]
    try:
        ref: list[Server] = []
        inner = www_route(ref)

        async def route(ctx: RequestContext) -> int:
            if ctx.msg.method == "OPTIONS":
                ctx.core.send_reply(ctx, 200, "OK")
                return 1
            return int(await inner(ctx))

        srv = await start_server(
            f"mysql://root@127.0.0.1:{port}/ser",
            ["auth", "auth_db"],
            [("auth", "secret", SECRET), ("auth_db", "db_timeout", 600)],
            route,
        )
        ref.append(srv)
        servers.append(srv)
        ch = await challenge(srv)
        t0 = time.monotonic()
        pending = asyncio.ensure_future(srv.send(request(extra=[authorization(ch, "jiri", "secret")])))
        assert await wait_for_async(lambda: bool(conns))  # the lookup hangs on the database
        # another client is served while the lookup hangs
        other = UdpOther()
        loop = asyncio.get_running_loop()
        await loop.create_datagram_endpoint(lambda: other, local_addr=("127.0.0.1", 0))
        try:
            opt = await other.request(request("OPTIONS", f"sip:{DOMAIN}"), srv.port)
        finally:
            other.close()
        assert opt is not None and opt.status == 200
        assert time.monotonic() - t0 < 0.5
        r = await pending
        assert r is not None and r.status == 500
        assert 0.5 < time.monotonic() - t0 < 3.0
    finally:
        black_hole.close()
        for w in conns:
            w.close()


class UdpOther(asyncio.DatagramProtocol):
    def __init__(self) -> None:
        self.fut: asyncio.Future[bytes] = asyncio.get_running_loop().create_future()
        self.transport: asyncio.DatagramTransport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def datagram_received(self, data: bytes, addr: Any) -> None:
        if not self.fut.done():
            self.fut.set_result(data)

    async def request(self, data: bytes, port: int) -> SipMessage | None:
        assert self.transport is not None
        self.transport.sendto(data, ("127.0.0.1", port))
        try:
            return SipMessage.parse(await asyncio.wait_for(self.fut, 2.0))
        except TimeoutError:
            return None

    def close(self) -> None:
        if self.transport is not None:
            self.transport.close()


async def test_consume_only_the_used_credentials(servers: list[Server], sqlite_url: str) -> None:
    srv = await auth_server(servers, sqlite_url, proxy=True)
    ruri = "sip:alice@iptel.org"
    r = await srv.send(request("INVITE", ruri, to_uri=ruri))
    assert r is not None and r.status == 407
    other = 'Proxy-Authorization: Digest username="x", realm="upstream.net", nonce="n", uri="u", response="r"'
    hdr = authorization(r, "jiri", "secret", "INVITE", ruri, hf="Proxy-Authorization")
    ok = await srv.send(request("INVITE", ruri, to_uri=ruri, extra=[other, hdr]))
    assert ok is not None and ok.status == 200
    assert ok.header("x-left") == "1"  # the upstream proxy's credentials stay


async def test_rpid_from_subscriber(servers: list[Server], sqlite_url: str) -> None:
    from sqlalchemy import update

    from sipexpress.db import schema

    await run(
        sqlite_url,
        lambda c: c.execute(
            update(schema.subscriber).where(schema.subscriber.c.username == "jiri").values(rpid="+4930123456")
        ),
    )
    ref: list[Server] = []

    async def route(ctx: RequestContext) -> int:
        auth = ctx.core.module("auth")
        auth_db = ctx.core.module("auth_db")
        assert isinstance(auth, AuthModule) and isinstance(auth_db, AuthDbModule)
        r = await auth_db.www_authorize(ctx, "", "subscriber")
        if r < 0:
            return auth.www_challenge(ctx, "", True)
        e164 = auth.is_rpid_user_e164(ctx)
        auth.append_rpid_hf(ctx)
        auth.append_rpid_hf(ctx, "<sip:", "@iptel.org>")
        rpids = ctx.msg.header_all("remote-party-id")
        ctx.core.send_reply(ctx, 200, "OK", [f"X-E164: {e164}", *(f"X-RPID: {v}" for v in rpids)])
        return 1

    srv = await start_server(sqlite_url, ["auth", "auth_db"], [("auth", "secret", SECRET)], route)
    ref.append(srv)
    servers.append(srv)
    ch = await challenge(srv)
    ok = await srv.send(request(extra=[authorization(ch, "jiri", "secret")]))
    assert ok is not None and ok.status == 200
    assert ok.header("x-e164") == "1"
    assert ok.header_all("x-rpid") == [
        "+4930123456;party=calling;id-type=subscriber;screen=yes",
        "<sip:+4930123456@iptel.org>",
    ]


async def test_2003_auth_module_with_its_own_database_part(servers: list[Server], sqlite_url: str) -> None:
    """examples/cfg/2003/pstn.cfg: only auth.so, with db_url/calculate_ha1/
    password_column on it, and www_authorize/is_in_group/is_user_in."""
    from sqlalchemy import insert

    from sipexpress.db import schema

    await run(sqlite_url, lambda c: c.execute(insert(schema.grp).values(username="jiri", grp="local")))
    ref: list[Server] = []

    async def route(ctx: RequestContext) -> int:
        auth = ctx.core.module("auth")
        assert isinstance(auth, AuthModule) and ctx.core.module("auth_db") is None
        names: dict[str, Any] = {f.name: f for f in auth.functions()}
        r = await names["www_authorize"].handler(ctx, "", "subscriber")
        if r < 0:
            return auth.www_challenge(ctx, "", False)
        grp = await names["is_in_group"].handler(ctx, "local")
        src = names["is_user_in"].fixup(("Credentials", "ld"), None)
        ld = await names["is_user_in"].handler(ctx, *src)
        ctx.core.send_reply(ctx, 200, "OK", [f"X-Groups: {grp} {ld}"])
        return 1

    srv = await start_server(
        sqlite_url,
        ["auth"],
        [
            ("auth", "db_url", sqlite_url),
            ("auth", "calculate_ha1", 1),
            ("auth", "password_column", "password"),
        ],
        route,
    )
    ref.append(srv)
    servers.append(srv)
    ch = await challenge(srv)
    assert "qop" not in (ch.header("www-authenticate") or "")
    bad = await srv.send(request(extra=[authorization(ch, "jiri", "nope")]))
    assert bad is not None and bad.status == 401
    ok = await srv.send(request(extra=[authorization(ch, "jiri", "secret")]))
    assert ok is not None and ok.status == 200
    assert ok.header("x-groups") == "1 -6"
