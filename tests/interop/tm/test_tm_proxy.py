"""tm as a stateful proxy, driven by raw-socket phones: retransmissions,
hop-by-hop ACK, CANCEL, timers, failure_route and forking."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from sipexpress.sip.message import SipMessage
from tests.interop.tm.phone import Phone, reply_addr, reply_to
from tests.support import free_port, options_request, udp_exchange

pytestmark = pytest.mark.interop

ROUTES = """
import asyncio
from sipexpress.script.pyroute import t_relay, t_newtran, t_reply, t_on_failure, t_on_reply, t_replicate
OPTIONS = {{"listen": ["udp:{host}:{port}", "tcp:{host}:{port}"], "sip_warning": False}}
MODULES = ["tm"]
MODPARAMS = [("tm", "fr_timer", {fr}), ("tm", "fr_inv_timer", {fr_inv}), ("tm", "noisy_ctimer", {noisy})]
COUNT = {{}}

def count(what):
    COUNT[what] = COUNT.get(what, 0) + 1

async def request_route(ctx):
    m = ctx.msg.method
    count(m)
    if m == "OPTIONS" and "@" not in ctx.ruri:
        ctx.reply_headers.append("X-Count: " + ",".join(f"{{k}}={{v}}" for k, v in sorted(COUNT.items())) + "\\r\\n")
        t_newtran(ctx)
        return t_reply(ctx, 200, "OK")
{body}

async def failure_route_1(ctx):
    count("failure")
    await asyncio.sleep(0.01)  # a failure route that really suspends
    if ctx.isflagset(3):
        return t_reply(ctx, 404, "Not Here Either")
    ctx.append_branch("sip:second@127.0.0.1:{uas2}")
    return await t_relay(ctx)

def onreply_route_1(ctx):
    count("reply%d" % ctx.msg.status)
    return 1
"""

RELAY = """
    if m == "REGISTER":
        await t_replicate(ctx, "127.0.0.1", "{uas2}")
        return t_reply(ctx, 200, "Saved")
    ctx.set_ruri("sip:callee@127.0.0.1:{uas1}")
    if "fork" in (ctx.msg.header("subject") or ""):
        ctx.append_branch("sip:second@127.0.0.1:{uas2}")
    if "failover" in (ctx.msg.header("subject") or ""):
        t_on_failure(ctx, "1")
    if "busy404" in (ctx.msg.header("subject") or ""):
        ctx.setflag(3)
        t_on_failure(ctx, "1")
    t_on_reply(ctx, "1")
    return await t_relay(ctx)
"""


class Env:
    def __init__(self, ser: Any, uac: Phone, uas1: Phone, uas2: Phone) -> None:
        self.ser = ser
        self.uac = uac
        self.uas1 = uas1
        self.uas2 = uas2
        self.proxy = (ser.host, ser.port)

    def counts(self) -> dict[str, int]:
        r = udp_exchange(options_request(self.ser.host, self.ser.port), self.ser.host, self.ser.port)
        assert r is not None
        m = SipMessage.parse(r)
        text = m.header("x-count") or ""
        return {k: int(v) for k, v in (kv.split("=") for kv in text.split(",") if kv)}

    def invite(self, subject: str = "") -> str:
        inv = self.uac.invite(f"sip:callee@{self.ser.host}:{self.ser.port}")
        if subject:
            inv = inv.replace("Max-Forwards: 70\r\n", f"Max-Forwards: 70\r\nSubject: {subject}\r\n")
        return inv


@pytest.fixture
def env_factory(ser_factory: Callable[..., Any]) -> Iterator[Callable[..., Env]]:
    phones: list[Phone] = []

    def make(fr: int = 10, fr_inv: int = 20, noisy: int = 1) -> Env:
        uac, uas1, uas2 = Phone(), Phone(), Phone()
        phones.extend([uac, uas1, uas2])
        body = RELAY.format(uas1=uas1.port, uas2=uas2.port)
        port = free_port()
        cfg = ROUTES.format(
            host="127.0.0.1", port=port, fr=fr, fr_inv=fr_inv, noisy=noisy, body=body, uas2=uas2.port
        )
        ser = ser_factory(cfg.replace("{", "{{").replace("}", "}}"), port=port, suffix=".py")
        return Env(ser, uac, uas1, uas2)

    yield make
    for p in phones:
        p.close()


def test_retransmissions_absorbed_and_hop_by_hop_ack(env_factory: Callable[..., Env]) -> None:
    e = env_factory()
    inv = e.invite()
    e.uac.send(inv, e.proxy)
    trying = e.uac.expect(100)
    assert trying.reason == "trying -- your call is important to us"
    req = e.uas1.expect("INVITE")
    assert req.ruri == f"sip:callee@127.0.0.1:{e.uas1.port}"
    assert len(req.vias) == 2
    for _ in range(3):  # every retransmission gets the last reply again
        e.uac.send(inv, e.proxy)
        assert e.uac.expect(100).status == 100
    e.uas1.send(reply_to(req, 180, "Ringing"), reply_addr(req))
    r180 = e.uac.expect(180)
    assert len(r180.vias) == 1  # our Via removed
    e.uac.send(inv, e.proxy)
    assert e.uac.expect(180).status == 180
    e.uas1.send(reply_to(req, 486, "Busy Here"), reply_addr(req))
    ack = e.uas1.expect("ACK")  # hop-by-hop ACK from tm
    assert ack.via1.branch == req.via1.branch
    assert ack.cseq.method == "ACK" and ack.to.params.get("tag") == "uas1"
    busy = e.uac.expect(486)
    e.uac.send(inv, e.proxy)
    assert e.uac.expect(486).status == 486
    e.uac.send(e.uac.hop_request("ACK", busy.header("to")), e.proxy)
    late = e.uas1.drain(0.4)
    assert [m.method for m in late if m.is_request and m.method != "INVITE"] == []
    counts = e.counts()
    assert counts["INVITE"] == 1  # the request route ran once
    assert "ACK" not in counts  # ACK to the negative reply absorbed before the script
    assert counts["reply180"] == 1 and counts["reply486"] == 1


def test_200_relayed_and_ack_end_to_end(env_factory: Callable[..., Env]) -> None:
    e = env_factory()
    e.uac.send(e.invite(), e.proxy)
    req = e.uas1.expect("INVITE")
    ok = reply_to(req, 200, "OK", extra=f"Contact: <sip:callee@127.0.0.1:{e.uas1.port}>\r\n")
    e.uas1.send(ok, reply_addr(req))
    r = e.uac.expect(200)
    e.uas1.send(ok, reply_addr(req))  # 2xx retransmission from the UAS is relayed too
    assert e.uac.expect(200).status == 200
    ack = e.uac.hop_request("ACK", r.header("to")).replace(
        e.uac.branch, e.uac.branch + "ack2xx"
    )  # a new transaction
    e.uac.send(ack, e.proxy)
    got = e.uas1.expect("ACK")
    assert got.via1.branch != req.via1.branch
    assert e.counts()["ACK"] == 1


def test_fr_timer_no_reply_408_and_retransmission(env_factory: Callable[..., Env]) -> None:
    e = env_factory(fr=2)
    t0 = time.monotonic()
    e.uac.send(e.invite(), e.proxy)
    e.uac.expect(100)
    r = e.uac.expect(408, timeout=5)
    assert 1.8 <= time.monotonic() - t0 < 4
    assert r.to.params.get("tag")  # local replies carry a to-tag
    invites = [m for m in e.uas1.drain(0.2) if m.is_request and m.method == "INVITE"]
    assert len(invites) >= 1  # the retransmission (Timer A = 1s) arrived


def test_fr_inv_timer_408_and_cancel_downstream(env_factory: Callable[..., Env]) -> None:
    e = env_factory(fr_inv=2)
    e.uac.send(e.invite(), e.proxy)
    req = e.uas1.expect("INVITE")
    t0 = time.monotonic()
    e.uas1.send(reply_to(req, 180, "Ringing"), reply_addr(req))
    e.uac.expect(180)
    cancel = e.uas1.expect("CANCEL", timeout=5)
    assert cancel.via1.branch == req.via1.branch
    assert 1.8 <= time.monotonic() - t0 < 4
    e.uas1.send(reply_to(cancel, 200, "OK"), reply_addr(cancel))
    e.uas1.send(reply_to(req, 487, "Request Terminated"), reply_addr(req))
    r = e.uac.expect(408, timeout=3)
    assert r.status == 408
    e.uas1.expect("ACK")
    assert all(m.status != 487 for m in e.uac.drain(0.3) if not m.is_request)


def test_fr_inv_timer_silent_without_noisy_ctimer(env_factory: Callable[..., Env]) -> None:
    e = env_factory(fr_inv=1, noisy=0)
    e.uac.send(e.invite(), e.proxy)
    req = e.uas1.expect("INVITE")
    e.uas1.send(reply_to(req, 180, "Ringing"), reply_addr(req))
    e.uac.expect(180)
    assert [m for m in e.uac.drain(1.8) if not m.is_request and m.status >= 200] == []
    assert [m for m in e.uas1.drain(0.1) if m.is_request and m.method == "CANCEL"] == []


def test_cancel_while_ringing(env_factory: Callable[..., Env]) -> None:
    e = env_factory()
    e.uac.send(e.invite(), e.proxy)
    req = e.uas1.expect("INVITE")
    e.uas1.send(reply_to(req, 180, "Ringing"), reply_addr(req))
    e.uac.expect(180)
    e.uac.send(e.uac.hop_request("CANCEL"), e.proxy)
    ok = e.uac.expect(200)
    assert ok.cseq.method == "CANCEL" and ok.reason == "canceling"
    cancel = e.uas1.expect("CANCEL")
    assert cancel.via1.branch == req.via1.branch
    e.uas1.send(reply_to(cancel, 200, "OK"), reply_addr(cancel))
    e.uas1.send(reply_to(req, 487, "Request Terminated"), reply_addr(req))
    r = e.uac.expect(487)
    assert r.cseq.method == "INVITE"
    e.uas1.expect("ACK")
    # a retransmitted CANCEL gets the same 200 again
    e.uac.send(e.uac.hop_request("CANCEL"), e.proxy)
    assert e.uac.expect(200).cseq.method == "CANCEL"


def test_cancel_before_any_reply(env_factory: Callable[..., Env]) -> None:
    e = env_factory()
    e.uac.send(e.invite(), e.proxy)
    req = e.uas1.expect("INVITE")
    e.uac.expect(100)
    e.uac.send(e.uac.hop_request("CANCEL"), e.proxy)
    got = [(m.status, m.cseq.method) for m in e.uac.drain(0.5) if not m.is_request]
    assert (200, "CANCEL") in got and (487, "INVITE") in got
    # the branch answers late: now it gets the CANCEL (RFC 3261 §9.1)
    e.uas1.send(reply_to(req, 180, "Ringing"), reply_addr(req))
    cancel = e.uas1.expect("CANCEL")
    assert cancel.via1.branch == req.via1.branch


def test_failure_route_serial_forking(env_factory: Callable[..., Env]) -> None:
    e = env_factory()
    e.uac.send(e.invite("failover"), e.proxy)
    req = e.uas1.expect("INVITE")
    e.uas1.send(reply_to(req, 486, "Busy Here"), reply_addr(req))
    e.uas1.expect("ACK")
    req2 = e.uas2.expect("INVITE")
    assert req2.ruri == f"sip:second@127.0.0.1:{e.uas2.port}"
    assert req2.via1.branch != req.via1.branch
    e.uas2.send(reply_to(req2, 200, "OK", to_tag="uas2"), reply_addr(req2))
    r = e.uac.expect(200)
    assert r.to.params["tag"] == "uas2"
    assert all(m.is_request or m.status != 486 for m in e.uac.received)
    c = e.counts()
    assert c["failure"] == 1 and c["INVITE"] == 1


def test_failure_route_t_reply(env_factory: Callable[..., Env]) -> None:
    e = env_factory()
    e.uac.send(e.invite("busy404"), e.proxy)
    req = e.uas1.expect("INVITE")
    e.uas1.send(reply_to(req, 486, "Busy Here"), reply_addr(req))
    r = e.uac.expect(404)
    assert r.reason == "Not Here Either"
    assert e.counts()["failure"] == 1


def test_parallel_fork_first_200_wins_other_cancelled(env_factory: Callable[..., Env]) -> None:
    e = env_factory()
    e.uac.send(e.invite("fork"), e.proxy)
    r1 = e.uas1.expect("INVITE")
    r2 = e.uas2.expect("INVITE")
    e.uas2.send(reply_to(r2, 180, "Ringing", to_tag="uas2"), reply_addr(r2))
    e.uac.expect(180)
    e.uas1.send(reply_to(r1, 200, "OK"), reply_addr(r1))
    ok = e.uac.expect(200)
    assert ok.to.params["tag"] == "uas1"
    cancel = e.uas2.expect("CANCEL")
    assert cancel.via1.branch == r2.via1.branch
    e.uas2.send(reply_to(cancel, 200, "OK", to_tag="uas2"), reply_addr(cancel))
    e.uas2.send(reply_to(r2, 487, "Request Terminated", to_tag="uas2"), reply_addr(r2))
    e.uas2.expect("ACK")
    assert [m.status for m in e.uac.drain(0.4) if not m.is_request and m.status >= 300] == []


def test_parallel_fork_both_200_forwarded(env_factory: Callable[..., Env]) -> None:
    e = env_factory()
    e.uac.send(e.invite("fork"), e.proxy)
    r1 = e.uas1.expect("INVITE")
    r2 = e.uas2.expect("INVITE")
    e.uas1.send(reply_to(r1, 200, "OK"), reply_addr(r1))
    e.uas2.send(reply_to(r2, 200, "OK", to_tag="uas2"), reply_addr(r2))
    tags = {e.uac.expect(200).to.params["tag"], e.uac.expect(200).to.params["tag"]}
    assert tags == {"uas1", "uas2"}


def test_all_branches_fail_lowest_wins(env_factory: Callable[..., Env]) -> None:
    e = env_factory()
    e.uac.send(e.invite("fork"), e.proxy)
    r1 = e.uas1.expect("INVITE")
    r2 = e.uas2.expect("INVITE")
    e.uas1.send(reply_to(r1, 486, "Busy Here"), reply_addr(r1))
    # no final reply may come while uas2 has not answered: a window, not a wait
    assert [m for m in e.uac.drain(0.3) if not m.is_request and m.status >= 300] == []
    e.uas2.send(reply_to(r2, 404, "Not Found", to_tag="uas2"), reply_addr(r2))
    assert e.uac.expect(404).status == 404


def test_loose_route_next_hop_is_top_route(env_factory: Callable[..., Env]) -> None:
    e = env_factory()
    inv = e.invite().replace(
        "Max-Forwards: 70\r\n", f"Max-Forwards: 70\r\nRoute: <sip:127.0.0.1:{e.uas2.port};lr>\r\n"
    )
    e.uac.send(inv, e.proxy)
    req = e.uas2.expect("INVITE")  # sent to the Route, Request-URI kept
    assert req.ruri == f"sip:callee@127.0.0.1:{e.uas1.port}"
    assert req.header("route") == f"<sip:127.0.0.1:{e.uas2.port};lr>"
    assert int(req.header("max-forwards") or 0) == 69
    assert e.uas1.drain(0.2) == []


def test_cancelled_transaction_gets_no_new_branches(env_factory: Callable[..., Env]) -> None:
    e = env_factory()
    e.uac.send(e.invite("failover"), e.proxy)
    req = e.uas1.expect("INVITE")
    e.uas1.send(reply_to(req, 180, "Ringing"), reply_addr(req))
    e.uac.expect(180)
    e.uac.send(e.uac.hop_request("CANCEL"), e.proxy)
    cancel = e.uas1.expect("CANCEL")
    e.uas1.send(reply_to(cancel, 200, "OK"), reply_addr(cancel))
    e.uas1.send(reply_to(req, 487, "Request Terminated"), reply_addr(req))
    assert e.uac.expect(487).cseq.method == "INVITE"
    assert [m for m in e.uas2.drain(0.3) if m.is_request] == []  # failure_route could not fork
    assert e.counts()["failure"] == 1


def test_6xx_cancels_other_branches_and_wins(env_factory: Callable[..., Env]) -> None:
    e = env_factory()
    e.uac.send(e.invite("fork"), e.proxy)
    r1 = e.uas1.expect("INVITE")
    r2 = e.uas2.expect("INVITE")
    e.uas2.send(reply_to(r2, 180, "Ringing", to_tag="uas2"), reply_addr(r2))
    e.uas1.send(reply_to(r1, 603, "Decline"), reply_addr(r1))
    cancel = e.uas2.expect("CANCEL")
    e.uas2.send(reply_to(cancel, 200, "OK", to_tag="uas2"), reply_addr(cancel))
    e.uas2.send(reply_to(r2, 487, "Request Terminated", to_tag="uas2"), reply_addr(r2))
    assert e.uac.expect(603).reason == "Decline"  # 6xx beats the lower 487


def test_t_replicate_copy_replies_not_relayed(env_factory: Callable[..., Env]) -> None:
    e = env_factory()
    reg = (
        f"REGISTER sip:127.0.0.1:{e.ser.port} SIP/2.0\r\n"
        f"Via: SIP/2.0/UDP 127.0.0.1:{e.uac.port};branch=z9hG4bKrepl1\r\n"
        "From: <sip:a@127.0.0.1>;tag=1\r\nTo: <sip:a@127.0.0.1>\r\nCall-ID: repl1\r\n"
        "CSeq: 1 REGISTER\r\nContent-Length: 0\r\n\r\n"
    )
    e.uac.send(reg, e.proxy)
    copy = e.uas2.expect("REGISTER")
    assert copy.call_id == "repl1" and len(copy.vias) == 2
    assert e.uac.expect(200).reason == "Saved"
    e.uas2.send(reply_to(copy, 200, "Backup OK"), reply_addr(copy))
    assert [m.reason for m in e.uac.drain(0.3) if not m.is_request] == []
