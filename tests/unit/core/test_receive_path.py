"""Core.receive with a capturing listener: routes (sync, async, suspending),
400s for malformed requests, hooks, no double reply."""

from __future__ import annotations

import asyncio
from typing import Any

from sipexpress.core.context import Proto, ReceiveInfo, RequestContext, RouteTable
from sipexpress.core.runner import Runner
from sipexpress.core.server import Core
from sipexpress.sip.message import SipMessage
from tests.support import wait_for_async


class Capture:
    proto = Proto.UDP
    af = 2
    ip = "127.0.0.1"
    port = via_port = 5999
    via_host = "127.0.0.1"

    def __init__(self) -> None:
        self.sent: list[tuple[bytes, str, int]] = []

    def sendto(self, data: bytes, ip: str, port: int) -> bool:
        self.sent.append((data, ip, port))
        return True


def request(
    method: str = "OPTIONS", contact: str = "<sip:a@192.0.2.1>", cseq_method: str | None = None
) -> bytes:
    return (
        f"{method} sip:x@127.0.0.1:5999 SIP/2.0\r\n"
        "Via: SIP/2.0/UDP 192.0.2.1:5060;branch=z9hG4bK77\r\n"
        "From: <sip:a@example.com>;tag=1\r\nTo: <sip:x@example.com>\r\nCall-ID: c1\r\n"
        f"CSeq: 5 {cseq_method or method}\r\nContact: {contact}\r\nContent-Length: 0\r\n\r\n"
    ).encode()


def make(route: Any) -> tuple[Core, Capture, ReceiveInfo]:
    core = Core({"listen": "udp:127.0.0.1:5999", "sip_warning": 0})
    core.load_module("sl")
    cap = Capture()
    core.udp_listeners.append(cap)  # type: ignore[arg-type]
    core.set_routes(RouteTable({"0": route}, {}, {}, {}))
    rcv = ReceiveInfo(Proto.UDP, "192.0.2.1", 5060, "127.0.0.1", 5999, 2, cap)
    return core, cap, rcv


def status(data: bytes) -> int:
    return SipMessage.parse(data).status


async def test_sync_and_async_routes_reply() -> None:
    def sync_route(ctx: RequestContext) -> int:
        return ctx.core.send_reply(ctx, 200, "OK")

    core, cap, rcv = make(sync_route)
    core.loop = asyncio.get_running_loop()
    core.receive(request(), rcv)
    assert [status(d) for d, _, _ in cap.sent] == [200]
    assert cap.sent[0][1:] == ("192.0.2.1", 5060)

    async def slow_route(ctx: RequestContext) -> int:
        await asyncio.sleep(0.01)  # really suspends: handed to a Task
        return ctx.core.send_reply(ctx, 202, "Later")

    core, cap, rcv = make(slow_route)
    core.loop = asyncio.get_running_loop()
    core.receive(request(), rcv)
    assert cap.sent == []
    assert await wait_for_async(lambda: cap.sent)
    assert [status(d) for d, _, _ in cap.sent] == [202]


async def test_malformed_request_gets_400_and_ack_nothing() -> None:
    async def route(ctx: RequestContext) -> int:
        return ctx.core.send_reply(ctx, 200, "OK")

    core, cap, rcv = make(route)
    core.loop = asyncio.get_running_loop()
    core.receive(request(cseq_method="INVITE"), rcv)  # CSeq method mismatch
    assert len(cap.sent) == 1
    reply = SipMessage.parse(cap.sent[0][0])
    assert reply.status == 400 and "CSeq" in reply.reason
    core.receive(request("ACK", cseq_method="INVITE"), rcv)
    core.receive(b"garbage\r\n\r\n", rcv)
    assert len(cap.sent) == 1
    assert core.stats.bad_msgs == 3


async def test_parse_error_inside_route_after_reply_sends_nothing_more() -> None:
    async def route(ctx: RequestContext) -> int:
        ctx.core.send_reply(ctx, 200, "OK")
        ctx.msg.contacts  # noqa: B018 - malformed: raises SipParseError
        return 1

    core, cap, rcv = make(route)
    core.loop = asyncio.get_running_loop()
    core.receive(request(contact="<sip:a@192.0.2.1"), rcv)
    assert [status(d) for d, _, _ in cap.sent] == [200]

    async def route2(ctx: RequestContext) -> int:
        ctx.msg.contacts  # noqa: B018
        return 1

    core, cap, rcv = make(route2)
    core.loop = asyncio.get_running_loop()
    core.receive(request(contact="<sip:a@192.0.2.1"), rcv)
    assert [status(d) for d, _, _ in cap.sent] == [400]


async def test_request_hook_consumes() -> None:
    async def route(ctx: RequestContext) -> int:
        return ctx.core.send_reply(ctx, 200, "OK")

    core, cap, rcv = make(route)
    core.loop = asyncio.get_running_loop()
    core.request_hooks.append(lambda ctx: ctx.msg.method == "OPTIONS")
    core.receive(request(), rcv)
    assert cap.sent == []
    core.receive(request("INFO"), rcv)
    assert len(cap.sent) == 1


async def test_reply_forwarded_by_second_via() -> None:
    core, cap, rcv = make(lambda ctx: 1)
    core.loop = asyncio.get_running_loop()
    reply = (
        b"SIP/2.0 200 OK\r\nVia: SIP/2.0/UDP 127.0.0.1:5999;branch=z9hG4bKx\r\n"
        b"Via: SIP/2.0/UDP uac.example.com:5070;rport=40001;received=192.0.2.9;branch=z9hG4bKy\r\n"
        b"From: <sip:a@example.com>;tag=1\r\nTo: <sip:x@example.com>;tag=2\r\nCall-ID: c1\r\n"
        b"CSeq: 5 OPTIONS\r\nContent-Length: 0\r\n\r\n"
    )
    core.receive(reply, rcv)
    (data, ip, port), *_ = cap.sent
    assert (ip, port) == ("192.0.2.9", 40001)
    out = SipMessage.parse(data)
    assert len(out.vias) == 1 and out.via1.host == "uac.example.com"
    assert core.stats.fwd_replies == 1
    # a reply with only our Via is dropped
    core.receive(
        reply.replace(
            b"Via: SIP/2.0/UDP uac.example.com:5070;rport=40001;received=192.0.2.9;branch=z9hG4bKy\r\n", b""
        ),
        rcv,
    )
    assert len(cap.sent) == 1


async def test_sl_reply_error_uses_last_error() -> None:
    from sipexpress.core import errors

    async def route(ctx: RequestContext) -> int:
        sl: Any = ctx.core.module("sl")
        if ctx.msg.method == "INFO":
            # forwarding to a name that cannot resolve fails with E_BAD_ADDRESS
            res = await ctx.core.forward(ctx, "no-such-host.invalid", 5060)
            assert res == errors.E_BAD_ADDRESS
        return int(sl.sl_reply_error(ctx))

    core, cap, rcv = make(route)
    core.loop = asyncio.get_running_loop()
    # a name server on a loopback port where nobody answers: no traffic leaves
    from sipexpress.core.resolver import Resolver
    from tests.support import free_port

    core.resolver = Resolver(timeout=0.5, nameservers=["127.0.0.1"], dns_port=free_port())
    core.receive(request("INFO"), rcv)
    core.receive(request("MESSAGE"), rcv)
    for _ in range(100):
        if len(cap.sent) == 2:
            break
        await asyncio.sleep(0.05)
    firsts = sorted(SipMessage.parse(d).first_line for d, _, _ in cap.sent)
    assert firsts == [
        "SIP/2.0 478 Unresolvable destination (478/SL)",
        "SIP/2.0 500 I'm terribly sorry, server error occurred (1/SL)",
    ]


async def test_requests_wait_until_the_modules_have_started() -> None:
    """A request that arrives while a module is still starting (e.g. loading
    a table) is routed once start() is done, not before (ser.cfg functions
    of an unstarted module would fail)."""
    from sipexpress.core.registry import Module

    gate = asyncio.Event()
    started: list[bool] = []

    class SlowStart(Module):
        name = "slow_start_test"

        async def start(self) -> None:
            await gate.wait()
            started.append(True)

    seen: list[bool] = []

    def route(ctx: RequestContext) -> int:
        seen.append(bool(started))
        return ctx.core.send_reply(ctx, 200, "OK")

    from tests.support import free_port

    core = Core({"listen": f"udp:127.0.0.1:{free_port()}", "sip_warning": 0})
    core.load_module("sl")
    core.set_routes(RouteTable({"0": route}, {}, {}, {}))
    cap = Capture()
    core.add_module(SlowStart(core))
    runner = Runner(core)
    starting = asyncio.create_task(runner.start())
    try:
        for _ in range(100):
            if core.udp_listeners:
                break
            await asyncio.sleep(0.01)
        lst = core.udp_listeners[0]
        rcv = ReceiveInfo(Proto.UDP, "192.0.2.1", 5060, "127.0.0.1", lst.port, 2, cap)
        core.receive(request(), rcv)
        await asyncio.sleep(0.05)  # nothing may be routed: a window, not a wait
        assert seen == [] and cap.sent == []  # held, not routed yet
        gate.set()
        await starting
        assert seen == [True]  # routed after the module started
        assert status(cap.sent[0][0]) == 200
        core.receive(request(), rcv)  # and from then on at once
        assert seen == [True, True]
    finally:
        gate.set()
        await runner.stop()
