"""uri, uri_db, group and domain over real UDP and a real database.

The route authorizes when the request carries credentials, then runs the
checks a test asks for and reports their results in an ``X-R`` header of
a 200 (and the Request-URI after the checks in ``X-RURI``)."""

from __future__ import annotations

import ctypes
from collections.abc import Callable, Sequence
from datetime import datetime
from typing import Any

import pytest
from sqlalchemy import delete, insert

from sipexpress.core.context import RequestContext
from sipexpress.core.registry import ConfigError, FixupEnv, MgmtError
from sipexpress.db import run, schema
from sipexpress.mgmt import render_fifo
from sipexpress.modules.auth import AuthModule
from sipexpress.modules.auth_db import AuthDbModule
from sipexpress.modules.domain import DomainModule, ser_hash
from sipexpress.modules.group import GroupModule, fixup_is_user_in
from sipexpress.modules.uri import UriModule
from sipexpress.modules.uri_db import UriDbModule
from sipexpress.sip.message import SipMessage
from tests.unit.auth.conftest import DOMAIN, Server, authorization, request, start_server

Check = Callable[[RequestContext], Any]
ALL = ["auth", "auth_db", "uri", "uri_db", "group", "domain"]


async def seed(url: str) -> None:
    now = datetime(2024, 1, 1)

    async def op(conn: Any) -> None:
        await conn.execute(
            insert(schema.grp),
            [
                {"username": "jiri", "domain": DOMAIN, "grp": "voicemail", "last_modified": now},
                {"username": "alice", "domain": "other.org", "grp": "ld", "last_modified": now},
            ],
        )
        await conn.execute(
            insert(schema.uri),
            [{"username": "jiri", "domain": DOMAIN, "uri_user": "jiri.kuthan", "last_modified": now}],
        )
        await conn.execute(
            insert(schema.domain),
            [{"domain": DOMAIN, "last_modified": now}, {"domain": "Example.COM", "last_modified": now}],
        )

    await run(url, op)


class Harness:
    def __init__(self, srv: Server) -> None:
        self.srv = srv
        self.checks: Sequence[Check] = []
        self.need_auth = False

    def mod(self, name: str) -> Any:
        return self.srv.core.module(name)

    async def run(
        self, checks: Sequence[Check], authorize_as: tuple[str, str] | None = None, **req: Any
    ) -> tuple[list[int], SipMessage]:
        self.checks = checks
        self.need_auth = authorize_as is not None
        extra = list(req.pop("extra", []))
        if authorize_as:
            ch = await self.srv.send(request(**req))
            assert ch is not None and ch.status == 401
            method = req.get("method", "REGISTER")
            uri = req.get("ruri", f"sip:{DOMAIN}")
            extra.append(authorization(ch, authorize_as[0], authorize_as[1], method, uri))
        r = await self.srv.send(request(**req, extra=extra))
        assert r is not None and r.status == 200, r
        return [int(x) for x in (r.header("x-r") or "").split(",") if x], r


async def harness(
    servers: list[Server], url: str, modparams: list[tuple[str, str, Any]] | None = None
) -> Harness:
    await seed(url)
    ref: list[Harness] = []

    async def route(ctx: RequestContext) -> int:
        h = ref[0]
        auth = h.mod("auth")
        auth_db = h.mod("auth_db")
        assert isinstance(auth, AuthModule) and isinstance(auth_db, AuthDbModule)
        if ctx.msg.has_header("authorization"):
            r = await auth_db.www_authorize(ctx, "", "subscriber")
            if r <= 0:
                return auth.www_challenge(ctx, "", True) if r < 0 else 0
        elif h.need_auth:
            return auth.www_challenge(ctx, "", True)
        out = []
        for c in h.checks:
            v = c(ctx)
            out.append(v if isinstance(v, int) else await v)
        ctx.core.send_reply(ctx, 200, "OK", [f"X-R: {','.join(map(str, out))}", f"X-RURI: {ctx.ruri}"])
        return 1

    srv = await start_server(url, ALL, modparams, route)
    servers.append(srv)
    h = Harness(srv)
    ref.append(h)
    return h


# -- uri -------------------------------------------------------------------------------


async def test_is_user(servers: list[Server], sqlite_url: str) -> None:
    h = await harness(servers, sqlite_url)
    uri: UriModule = h.mod("uri")
    checks = [lambda c: uri.is_user(c, "jiri"), lambda c: uri.is_user(c, "alice")]
    res, _ = await h.run(checks, ("jiri", "secret"))
    assert res == [1, -1]
    # without authorized credentials
    res, _ = await h.run([lambda c: uri.is_user(c, "jiri")])
    assert res == [-1]


async def test_has_totag(servers: list[Server], sqlite_url: str) -> None:
    h = await harness(servers, sqlite_url)
    uri: UriModule = h.mod("uri")
    res, _ = await h.run([uri.has_totag], method="BYE", ruri="sip:a@b.c", to_tag="abc")
    assert res == [1]
    res, _ = await h.run([uri.has_totag], method="INVITE", ruri="sip:a@b.c")
    assert res == [-1]


async def test_uri_param(servers: list[Server], sqlite_url: str) -> None:
    h = await harness(servers, sqlite_url)
    uri: UriModule = h.mod("uri")
    checks: list[Check] = [
        lambda c: uri.uri_param(c, "lr"),
        lambda c: uri.uri_param(c, "user"),
        lambda c: uri.uri_param(c, "user", "phone"),
        lambda c: uri.uri_param(c, "USER", "phone"),
        lambda c: uri.uri_param(c, "user", "ip"),
        lambda c: uri.uri_param(c, "maddr"),
    ]
    res, _ = await h.run(checks, method="INVITE", ruri="sip:+123@gw.example;user=phone;lr")
    assert res == [1, -1, 1, 1, -1, -1]


def rewrite(ctx: RequestContext, uri: str) -> int:
    ctx.set_ruri(uri)
    return 1


async def test_add_uri_param(servers: list[Server], sqlite_url: str) -> None:
    h = await harness(servers, sqlite_url)
    uri: UriModule = h.mod("uri")
    _, r = await h.run([lambda c: uri.add_uri_param(c, "nat=yes")], method="INVITE", ruri="sip:a@b.c;lr")
    assert r.header("x-ruri") == "sip:a@b.c;lr;nat=yes"
    # a Request-URI with headers can only come from a rewrite (the core
    # refuses them on the wire)
    _, r = await h.run(
        [
            lambda c: rewrite(c, "sip:a@b.c:5070;lr?subject=hi"),
            lambda c: uri.add_uri_param(c, "nat=yes"),
        ],
        method="INVITE",
        ruri="sip:a@b.c",
    )
    assert r.header("x-ruri") == "sip:a@b.c:5070;lr;nat=yes?subject=hi"
    res, r = await h.run([lambda c: uri.add_uri_param(c, "")], method="INVITE", ruri="sip:a@b.c")
    assert res == [1] and r.header("x-ruri") == "sip:a@b.c"


async def test_tel2sip(servers: list[Server], sqlite_url: str) -> None:
    h = await harness(servers, sqlite_url)
    uri: UriModule = h.mod("uri")
    res, r = await h.run(
        [uri.tel2sip], method="INVITE", ruri="tel:+358-555-1234567;postd=pp22", from_uri="sip:jiri@foo.com"
    )
    assert res == [1]
    assert r.header("x-ruri") == "sip:+358-555-1234567;postd=pp22@foo.com;user=phone"
    res, r = await h.run([uri.tel2sip], method="INVITE", ruri="sip:a@b.c")
    assert res == [1] and r.header("x-ruri") == "sip:a@b.c"


# -- uri_db ----------------------------------------------------------------------------


async def test_check_to_from_plain(servers: list[Server], any_db_url: str) -> None:
    h = await harness(servers, any_db_url)
    ud: UriDbModule = h.mod("uri_db")
    checks = [ud.check_to, ud.check_from, ud.does_uri_exist]
    res, _ = await h.run(
        checks, ("jiri", "secret"), method="REGISTER", ruri=f"sip:{DOMAIN}", from_uri=f"sip:JIRI@{DOMAIN}"
    )
    # To = From = JIRI (case-insensitive match); the RURI has no user
    assert res == [1, 1, -5]
    res, _ = await h.run(
        checks,
        ("jiri", "secret"),
        method="REGISTER",
        ruri=f"sip:{DOMAIN}",
        from_uri=f"sip:jiri@{DOMAIN}",
        to_uri=f"sip:alice@{DOMAIN}",
    )
    assert res[0] < 0 and res[1] == 1
    # nothing authorized
    res, _ = await h.run([ud.check_to])
    assert res == [-2]


async def test_check_to_with_uri_table(servers: list[Server], any_db_url: str) -> None:
    h = await harness(servers, any_db_url, [("uri_db", "use_uri_table", 1)])
    ud: UriDbModule = h.mod("uri_db")
    res, _ = await h.run(
        [ud.check_to],
        ("jiri", "secret"),
        from_uri=f"sip:jiri@{DOMAIN}",
        to_uri=f"sip:jiri.kuthan@{DOMAIN}",
    )
    assert res == [1]
    res, _ = await h.run(
        [ud.check_to], ("jiri", "secret"), from_uri=f"sip:jiri@{DOMAIN}", to_uri=f"sip:alice@{DOMAIN}"
    )
    assert res == [-9]
    # the URI host must equal the digest realm
    res, _ = await h.run(
        [ud.check_to],
        ("jiri", "secret"),
        method="INVITE",
        ruri="sip:x@other.org",
        from_uri=f"sip:jiri@{DOMAIN}",
        to_uri="sip:jiri.kuthan@other.org",
    )
    assert res[0] < 0


async def test_does_uri_exist(servers: list[Server], any_db_url: str) -> None:
    h = await harness(servers, any_db_url, [("uri_db", "use_domain", 1)])
    ud: UriDbModule = h.mod("uri_db")
    res, _ = await h.run([ud.does_uri_exist], method="INVITE", ruri=f"sip:alice@{DOMAIN}")
    assert res == [1]
    res, _ = await h.run([ud.does_uri_exist], method="INVITE", ruri="sip:alice@example.com")
    assert res == [-5]
    res, _ = await h.run([ud.does_uri_exist], method="INVITE", ruri="sip:x'%20OR%20'1'='1@iptel.org")
    assert res == [-5]


# -- group ------------------------------------------------------------------------------


async def test_is_user_in_every_source(servers: list[Server], any_db_url: str) -> None:
    h = await harness(servers, any_db_url)
    g: GroupModule = h.mod("group")
    checks = [
        lambda c: g.is_user_in(c, "Credentials", "voicemail"),
        lambda c: g.is_user_in(c, "credentials", "ld"),
        lambda c: g.is_user_in(c, "Request-URI", "ld"),
        lambda c: g.is_user_in(c, "To", "voicemail"),
        lambda c: g.is_user_in(c, "From", "voicemail"),
        lambda c: g.is_in_group(c, "voicemail"),
    ]
    res, _ = await h.run(
        checks,
        ("jiri", "secret"),
        method="MESSAGE",
        ruri="sip:alice@iptel.org",
        from_uri=f"sip:jiri@{DOMAIN}",
        to_uri="sip:bob@iptel.org",
    )
    assert [1 if x > 0 else -1 for x in res] == [1, -1, 1, -1, 1, 1]


async def test_is_user_in_use_domain(servers: list[Server], sqlite_url: str) -> None:
    h = await harness(servers, sqlite_url, [("group", "use_domain", 1)])
    g: GroupModule = h.mod("group")
    checks = [lambda c: g.is_user_in(c, "Request-URI", "ld")]
    res, _ = await h.run(checks, method="MESSAGE", ruri="sip:alice@iptel.org")
    assert res[0] < 0  # alice is in "ld" only in other.org
    res, _ = await h.run(checks, method="MESSAGE", ruri="sip:alice@other.org")
    assert res == [1]


async def test_is_user_in_without_credentials(servers: list[Server], sqlite_url: str) -> None:
    h = await harness(servers, sqlite_url)
    g: GroupModule = h.mod("group")
    res, _ = await h.run([lambda c: g.is_user_in(c, "Credentials", "voicemail")])
    assert res == [-1]


def test_is_user_in_fixup_rejects_unknown_source() -> None:
    env = FixupEnv(None, None)  # type: ignore[arg-type]
    assert fixup_is_user_in(("request-uri", "g"), env)[0] == 1
    with pytest.raises(ConfigError):
        fixup_is_user_in(("Contact", "g"), env)


# -- domain -----------------------------------------------------------------------------


@pytest.mark.parametrize("db_mode", [0, 1])
async def test_is_from_local_and_is_uri_host_local(
    servers: list[Server], any_db_url: str, db_mode: int
) -> None:
    h = await harness(servers, any_db_url, [("domain", "db_mode", db_mode)])
    d: DomainModule = h.mod("domain")
    checks = [d.is_from_local, d.is_uri_host_local]
    res, _ = await h.run(
        checks, method="INVITE", ruri="sip:x@EXAMPLE.com", from_uri=f"sip:jiri@{DOMAIN.upper()}"
    )
    assert res == [1, 1]
    res, _ = await h.run(checks, method="INVITE", ruri="sip:x@nowhere.net", from_uri="sip:jiri@evil.org")
    assert res == [-1, -1]


def c_hash(s: str) -> int:
    """SER's hash.c, with C integer types."""
    h = ctypes.c_uint32(0)
    for b in s.encode():
        h = ctypes.c_uint32((h.value << 5) - h.value + ctypes.c_int8(b).value)
    return h.value % 128


def test_ser_hash_matches_c() -> None:
    for s in ["iptel.org", "Example.COM", "a", "", "xn--bcher-kva.example", "b\u00fccher.de", "x" * 300]:
        assert ser_hash(s) == c_hash(s), s


async def test_domain_reload_and_dump(servers: list[Server], any_db_url: str) -> None:
    h = await harness(servers, any_db_url, [("domain", "db_mode", 1)])
    d: DomainModule = h.mod("domain")
    mgmt = h.srv.runner.mgmt
    reply = await mgmt.call("domain_dump")
    lines = sorted(render_fifo(reply).splitlines()[1:])
    assert render_fifo(reply).startswith("200 OK\n")
    assert lines == sorted(f"{ser_hash(x):4d} {x}" for x in [DOMAIN, "Example.COM"])
    # a new domain is unknown to the cache until domain_reload
    await run(any_db_url, lambda conn: conn.execute(insert(schema.domain).values(domain="new.example")))
    res, _ = await h.run([d.is_uri_host_local], method="INVITE", ruri="sip:x@new.example")
    assert res == [-1]
    reply = await mgmt.call("domain_reload")
    assert render_fifo(reply) == "200 OK\n"
    res, _ = await h.run([d.is_uri_host_local], method="INVITE", ruri="sip:x@new.example")
    assert res == [1]
    await run(any_db_url, lambda conn: conn.execute(delete(schema.domain)))
    await mgmt.call("domain_reload")
    assert render_fifo(await mgmt.call("domain_dump")) == "200 OK\n"


async def test_domain_reload_failure_keeps_the_cache(servers: list[Server], sqlite_url: str) -> None:
    h = await harness(servers, sqlite_url, [("domain", "db_mode", 1)])
    d: DomainModule = h.mod("domain")
    d.db.url = "mysql://root@127.0.0.1:1/ser"
    d.db.timeout = 0.5
    with pytest.raises(MgmtError) as ei:
        await d._cmd_reload([])
    assert (ei.value.code, ei.value.reason) == (400, "Domain table reload failed")
    assert DOMAIN in d.cache


async def test_domain_commands_only_with_db_mode_1(servers: list[Server], sqlite_url: str) -> None:
    h = await harness(servers, sqlite_url)
    mgmt = h.srv.runner.mgmt
    reply = await mgmt.call("domain_dump")
    assert render_fifo(reply) == "500 command 'domain_dump' not available\n"
