"""Core actions (cfg-language.md §8) on real messages."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest

from sipexpress.core.context import Proto
from sipexpress.core.options import SocketSpec
from tests.unit.script.helpers import Script, request


async def ruri_after(
    actions: str, ruri: str = "sip:alice:pw@example.com:5070;transport=udp?subject=x"
) -> str:
    s = Script(f"route {{ {actions} }}")
    _, ctx = await s.run(request(ruri))
    return ctx.ruri


@pytest.mark.parametrize(
    ("actions", "expected"),
    [
        ('rewriteuri("sip:bob@b.org");', "sip:bob@b.org"),
        ('seturi("sip:bob@b.org");', "sip:bob@b.org"),
        ('rewritehost("h.net");', "sip:alice:pw@h.net:5070;transport=udp?subject=x"),
        ('sethost("h.net");', "sip:alice:pw@h.net:5070;transport=udp?subject=x"),
        ('seth("h.net");', "sip:alice:pw@h.net:5070;transport=udp?subject=x"),
        ('rewritehostport("h.net:99");', "sip:alice:pw@h.net:99;transport=udp?subject=x"),
        ('sethp("h.net");', "sip:alice:pw@h.net;transport=udp?subject=x"),
        ('rewriteuser("carol");', "sip:carol:pw@example.com:5070;transport=udp?subject=x"),
        ('setu("carol");', "sip:carol:pw@example.com:5070;transport=udp?subject=x"),
        ('rewriteuserpass("carol:secret");', "sip:carol:secret@example.com:5070;transport=udp?subject=x"),
        ('setup("carol");', "sip:carol@example.com:5070;transport=udp?subject=x"),
        ('rewriteport("6000");', "sip:alice:pw@example.com:6000;transport=udp?subject=x"),
        ("setp(6001);", "sip:alice:pw@example.com:6001;transport=udp?subject=x"),
        ('prefix("00");', "sip:00alice:pw@example.com:5070;transport=udp?subject=x"),
        ("strip(2);", "sip:ice:pw@example.com:5070;transport=udp?subject=x"),
        ("strip_tail(2);", "sip:ali:pw@example.com:5070;transport=udp?subject=x"),
        ('rewritehost("x.y"); revert_uri();', "sip:alice:pw@example.com:5070;transport=udp?subject=x"),
        ('rewritehost("x.y"); revert_uri;', "sip:alice:pw@example.com:5070;transport=udp?subject=x"),
    ],
)
async def test_uri_rewriting(actions: str, expected: str) -> None:
    assert await ruri_after(actions) == expected


async def test_rewrite_makes_scheme_sip_and_prefix_creates_user() -> None:
    assert await ruri_after('rewritehost("b.org");', "sips:a@x.org") == "sip:a@b.org"
    assert await ruri_after('prefix("123");', "sip:x.org") == "sip:123@x.org"
    assert await ruri_after("strip(10);", "sip:abc@x.org") == "sip:x.org"


async def test_forward_variants() -> None:
    s = Script(
        'route { forward(10.0.0.1); forward("h.example", 5080); forward(uri:host, uri:port);'
        " forward(uri:host, 5090); forward_udp(h.example); forward_tcp(10.0.0.2, 5061); forward_tls(h.example); }"
    )
    await s.run(request("sip:bob@b.org"))
    assert s.core.forwarded == [
        ("10.0.0.1", None, None, "sip:bob@b.org"),
        ("h.example", 5080, None, "sip:bob@b.org"),
        (None, None, None, "sip:bob@b.org"),
        (None, 5090, None, "sip:bob@b.org"),
        ("h.example", None, Proto.UDP, "sip:bob@b.org"),
        ("10.0.0.2", 5061, Proto.TCP, "sip:bob@b.org"),
        ("h.example", None, Proto.TLS, "sip:bob@b.org"),
    ]


async def test_send_sends_the_original_buffer() -> None:
    s = Script('route { rewritehost("changed.org"); send(127.0.0.1, 5099); send_tcp("127.0.0.1"); }')
    data = request("sip:bob@b.org")
    await s.run(data)
    assert s.core.sent == [(Proto.UDP, "127.0.0.1", 5099, data), (Proto.TCP, "127.0.0.1", 5060, data)]


async def test_flags() -> None:
    s = Script(
        "route { setflag(1); setflag(31); setflag(0x3); resetflag(1); if (isflagset(3) && !isflagset(1)) setflag(5); }"
    )
    _, ctx = await s.run()
    assert ctx.flags == (1 << 31) | (1 << 3) | (1 << 5)


async def test_log_levels(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG, logger="sipexpress")
    s = Script('route { log("dbg text\\n"); log(1, "warn text"); log(-1, "err text"); error("a", "b"); }')
    r, _ = await s.run()
    got = [(rec.levelno, rec.getMessage()) for rec in caplog.records if rec.name == "sipexpress.script"]
    assert (logging.DEBUG, "dbg text") in got
    assert (logging.WARNING, "warn text") in got
    assert (logging.ERROR, "err text") in got
    assert r == 1


async def test_exec_runs_a_shell_command(tmp_path: Path) -> None:
    out = tmp_path / "ran"
    s = Script(f'route {{ exec("echo hi > {out}"); setflag(1); }}')
    _, ctx = await s.run()
    assert out.read_text() == "hi\n" and ctx.isflagset(1)


async def test_append_branch_forms() -> None:
    s = Script(
        'route { append_branch(); append_branch("sip:b@x"); append_branch("sip:c@x", "0.5"); append_branch; }'
    )
    _, ctx = await s.run(request("sip:a@x"))
    assert [(b.uri, b.q) for b in ctx.branches] == [
        ("sip:a@x", -1),
        ("sip:b@x", -1),
        ("sip:c@x", 500),
        ("sip:a@x", -1),
    ]


async def test_append_branch_limit() -> None:
    s = Script("route { " + "append_branch(); " * 11 + "if (!append_branch()) setflag(1); }")
    _, ctx = await s.run()
    assert len(ctx.branches) == 11 and ctx.isflagset(1)


async def test_len_gt() -> None:
    s = Script(
        "route { if (len_gt(100)) setflag(1); if (len_gt(max_len)) setflag(2); if (len_gt(100000)) setflag(3); }"
    )
    _, ctx = await s.run()
    assert ctx.isflagset(1) and not ctx.isflagset(2) and not ctx.isflagset(3)


async def test_transport_actions() -> None:
    s = Script(
        'route { force_rport(); add_rport; force_tcp_alias(5070); set_advertised_address("1.2.3.4");'
        " set_advertised_port(5099); force_send_socket(tcp:127.0.0.1:5070); }"
    )
    _, ctx = await s.run(proto=Proto.TCP)
    assert ctx.force_rport is True
    assert ctx.data["tcp_alias"] == 5070
    assert ctx.data["advertised_address"] == "1.2.3.4" and ctx.data["advertised_port"] == 5099
    assert ctx.send_socket == SocketSpec(Proto.TCP, "127.0.0.1", 5070)


async def test_drop_forms() -> None:
    for a in ("drop;", "drop();", "break;"):
        s = Script(f"route {{ setflag(1); {a} setflag(2); }}")
        r, ctx = await s.run()
        assert r == 0 and ctx.isflagset(1) and not ctx.isflagset(2)
