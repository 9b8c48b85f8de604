"""sl module, Python routing loader and RFC 3263 ordering (no sockets)."""

from __future__ import annotations

from pathlib import Path

import pytest

from sipexpress.core.context import Proto, ReceiveInfo, RequestContext
from sipexpress.core.registry import ConfigError, FixupEnv
from sipexpress.core.server import Core
from sipexpress.modules.sl import SlModule
from sipexpress.sip.locate import NaptrRecord, SrvRecord, Target, order_naptr, order_srv, plan
from sipexpress.sip.message import SipMessage


def test_sl_fixup_requires_number() -> None:
    core = Core({"listen": "127.0.0.1"})
    sl = SlModule(core)
    f = {fn.name: fn for fn in sl.functions()}["sl_send_reply"]
    assert f.fixup is not None
    env = FixupEnv(core, sl)
    assert tuple(f.fixup(["404", "Not Found"], env)) == (404, "Not Found")
    with pytest.raises(ConfigError):
        f.fixup(["four", "x"], env)
    with pytest.raises(ConfigError):
        f.fixup(["99", "x"], env)


async def test_sl_stats_text_format() -> None:
    core = Core({"listen": "127.0.0.1"})
    sl = SlModule(core)
    for code, n in ((200, 3), (202, 1), (204, 2), (404, 5), (486, 1), (100, 1), (603, 2)):
        core.stats.sl_replies[code] += n
    core.stats.sl_failures = 7
    (cmd,) = sl.commands()
    assert cmd.name == "sl_stats"
    reply = await cmd.handler([])
    eol = "      \n"
    assert reply.code == 200 and reply.reason == "ok"
    assert reply.text == (
        f"200: 3 202: 1 2xx: 2{eol}"
        f"300: 0 301: 0 302: 0 3xx: 0{eol}"
        f"400: 0 401: 0 403: 0 404: 5 407: 0 408: 0 483: 0 4xx: 1{eol}"
        f"500: 0 5xx: 0{eol}"
        f"6xx: 2{eol}"
        f"xxx: 1{eol}"
        f"failures: 7{eol}"
    )
    assert reply.data["404"] == 5 and reply.data["failures"] == 7


def _ack(to_tag: str) -> SipMessage:
    return SipMessage.parse(
        (
            "ACK sip:b@example.com SIP/2.0\r\nVia: SIP/2.0/UDP 192.0.2.1;branch=z9hG4bK1\r\n"
            f"From: <sip:a@example.com>;tag=1\r\nTo: <sip:b@example.com>;tag={to_tag}\r\nCall-ID: c\r\n"
            "CSeq: 1 ACK\r\nContent-Length: 0\r\n\r\n"
        ).encode()
    )


def test_sl_ack_filter() -> None:
    core = Core({"listen": "127.0.0.1"})
    sl = SlModule(core)
    rcv = ReceiveInfo(Proto.UDP, "192.0.2.1", 5060, "127.0.0.1", 5060)
    ours = RequestContext(core, _ack(core.to_tag_prefix + "-1234abcd"), rcv)
    theirs = RequestContext(core, _ack("foreign"), rcv)
    assert not sl.filter_ack(ours)  # no negative reply sent recently
    core.last_negative_reply = core.now()
    assert sl.filter_ack(ours)
    assert not sl.filter_ack(theirs)
    core.last_negative_reply = core.now() - 3
    assert not sl.filter_ack(ours)


def test_pyroute_loads_script(tmp_path: Path) -> None:
    script = tmp_path / "routes.py"
    script.write_text(
        "from sipexpress.script.pyroute import sl_send_reply\n"
        "OPTIONS = {'listen': 'udp:127.0.0.1:5999', 'debug': 3}\n"
        "MODULES = ['sl_module']\n"
        "async def request_route(ctx):\n"
        "    return sl_send_reply(ctx, 200, 'OK')\n"
        "async def route_2(ctx):\n"
        "    return 1\n"
        "def failure_route_1(ctx):\n"
        "    return 1\n"
        "def init(core):\n"
        "    core.reply_hooks.append(lambda msg, rcv: True)\n"
    )
    from sipexpress.script.pyroute import load_script

    core = Core()
    table = load_script(script, core)
    assert core.options["debug"] == 3
    assert core.is_myself("127.0.0.1", 5999)
    assert isinstance(core.module("sl"), SlModule) and core.module("sl_module") is core.module("sl")
    assert set(table.request) == {"0", "2"} and set(table.failure) == {"1"}
    assert len(core.reply_hooks) == 1  # init(core) ran


def test_pyroute_errors(tmp_path: Path) -> None:
    from sipexpress.script.pyroute import load_script

    bad = tmp_path / "bad.py"
    bad.write_text("def request_route(ctx:\n")
    with pytest.raises(ConfigError, match=r"bad\.py:1"):
        load_script(bad, Core())
    nomain = tmp_path / "nomain.py"
    nomain.write_text("X = 1\n")
    with pytest.raises(ConfigError, match="no request_route"):
        load_script(nomain, Core())
    nomod = tmp_path / "nomod.py"
    nomod.write_text("MODULES = ['nosuchmodule']\nasync def request_route(ctx):\n    return 1\n")
    with pytest.raises(ConfigError, match="nosuchmodule"):
        load_script(nomod, Core())


# -- RFC 3263 ---------------------------------------------------------------------
def test_plan_numeric_and_explicit() -> None:
    assert plan("192.0.2.1").targets == (Target("udp", "192.0.2.1", 5060),)
    assert plan("[::1]", 5070, "tcp").targets == (Target("tcp", "::1", 5070),)
    assert plan("localhost").targets == (Target("udp", "127.0.0.1", 5060),)
    p = plan("example.com", 5080)
    assert p.a_host == "example.com" and p.port == 5080 and not p.targets
    p = plan("example.com", transport="tcp")
    assert p.srv_names == (("_sip._tcp.example.com", "tcp"),)
    p = plan("example.com")
    assert p.naptr_host == "example.com"
    assert p.srv_names == (("_sip._udp.example.com", "udp"), ("_sip._tcp.example.com", "tcp"))
    assert plan("example.com", secure=True).srv_names == (("_sips._tcp.example.com", "tls"),)


def test_order_naptr_and_srv() -> None:
    recs = [
        NaptrRecord(50, 50, "s", "SIP+D2U", "_sip._udp.example.com."),
        NaptrRecord(10, 50, "s", "SIP+D2T", "_sip._tcp.example.com."),
        NaptrRecord(10, 60, "s", "SIPS+D2T", "_sips._tcp.example.com."),
        NaptrRecord(5, 5, "u", "SIP+D2U", "x"),
    ]
    assert order_naptr(recs) == [("_sip._tcp.example.com", "tcp"), ("_sip._udp.example.com", "udp")]
    srv = [
        SrvRecord(20, 0, 5060, "c.example.com"),
        SrvRecord(10, 60, 5060, "a.example.com"),
        SrvRecord(10, 40, 5060, "b.example.com"),
        SrvRecord(10, 10, 5060, "."),
    ]
    assert [r.target for r in order_srv(srv, rand=lambda: 0.0)] == [
        "b.example.com",
        "a.example.com",
        "c.example.com",
    ]
    assert [r.target for r in order_srv(srv, rand=lambda: 0.99)] == [
        "a.example.com",
        "b.example.com",
        "c.example.com",
    ]


def test_sip_layer_stays_sans_io() -> None:
    import sipexpress.sip.locate as locate

    src = Path(locate.__file__).read_text()
    assert "import asyncio" not in src and "import socket" not in src


def test_pyroute_calls_module_functions_and_core_actions() -> None:
    from sipexpress.script import pyroute

    core = Core({"listen": "127.0.0.1"})
    core.load_module("maxfwd")
    msg = SipMessage.parse(
        b"INVITE sip:bob@example.com SIP/2.0\r\nVia: SIP/2.0/UDP 192.0.2.1;branch=z9hG4bK1\r\n"
        b"From: <sip:a@example.com>;tag=1\r\nTo: <sip:bob@example.com>\r\nCall-ID: c\r\n"
        b"CSeq: 1 INVITE\r\nContent-Length: 0\r\n\r\n"
    )
    ctx = RequestContext(core, msg, ReceiveInfo(Proto.UDP, "192.0.2.1", 5060, "127.0.0.1", 5060))
    # a module function by its cfg name; numbers are passed through the fix-up as text
    assert pyroute.mf_process_maxfwd_header(ctx, 10) > 0
    assert msg.max_forwards == 10
    # a core action
    assert pyroute.rewritehost(ctx, "192.0.2.55") == 1
    assert ctx.ruri == "sip:bob@192.0.2.55"
    with pytest.raises(ConfigError, match="no_such_function"):
        pyroute.no_such_function(ctx)


def test_pyroute_function_follows_the_core_and_calls_once() -> None:
    """A pyroute function remembers the last core's handler: another core
    gets its own; an exception from the handler (even KeyError, which the
    cache lookup also catches) propagates after exactly one call."""
    from sipexpress.core.registry import Module, ScriptFunction
    from sipexpress.script import pyroute

    calls: list[tuple[str, int]] = []

    class Probe(Module):
        name = "probe_cache"

        def __init__(self, core: object, label: str) -> None:
            super().__init__(core)
            self.label = label

        def functions(self) -> list[ScriptFunction]:
            return [ScriptFunction("probe_cache_fn", self.fn, arities=(1,))]

        def fn(self, ctx: RequestContext, arg: str) -> int:
            calls.append((self.label, int(arg)))
            if arg == "7":
                raise KeyError("from the handler")
            return 1

    rcv = ReceiveInfo(Proto.UDP, "192.0.2.1", 5060, "127.0.0.1", 5060)
    msg = _ack("x")
    cores = []
    for label in ("a", "b"):
        core = Core({"listen": "127.0.0.1"})
        core.add_module(Probe(core, label))
        cores.append(RequestContext(core, msg, rcv))
    fn = pyroute.probe_cache_fn
    a, b = cores
    assert fn(a, 1) == 1 and fn(a, 1) == 1 and fn(b, 2) == 1 and fn(a, 3) == 1 and fn(b, 2) == 1
    assert calls == [("a", 1), ("a", 1), ("b", 2), ("a", 3), ("b", 2)]
    calls.clear()
    with pytest.raises(KeyError, match="from the handler"):
        fn(a, 7)
    with pytest.raises(KeyError, match="from the handler"):
        fn(a, 7)  # now served from the cache: still one call
    assert calls == [("a", 7), ("a", 7)]
