"""Core pieces without sockets: myself, Via/rport, replies, stateless branch."""

from __future__ import annotations

import pytest

from sipexpress.core.context import Branch, Proto, ReceiveInfo, RequestContext
from sipexpress.core.server import SERVER_HEADER, Core
from sipexpress.sip.forwarding import stateless_branch, via_destination, via_with
from sipexpress.sip.headers import Via
from sipexpress.sip.message import SipMessage


def make_core(**opts: object) -> Core:
    base: dict[str, object] = {"listen": ["udp:10.1.2.3:5060", "tcp:10.1.2.3:5070", "udp:[::1]:5062"]}
    base.update(opts)
    return Core(base)


REQ = (
    "INVITE sip:bob@example.com SIP/2.0\r\n"
    "Via: SIP/2.0/UDP {via};branch=z9hG4bKabc\r\n"
    "Via: SIP/2.0/TCP relay.example.org;branch=z9hG4bKdef\r\n"
    "Record-Route: <sip:rr.example.org;lr>\r\n"
    "Max-Forwards: 70\r\n"
    "From: Alice <sip:alice@example.com>;tag=1928\r\n"
    "To: Bob <sip:bob@example.com>{totag}\r\n"
    "Call-ID: a84b4c76e66710\r\n"
    "CSeq: 314159 INVITE\r\n"
    "Contact: <sip:alice@pc33.example.com>\r\n"
    "Content-Length: 0\r\n\r\n"
)


def ctx_for(
    core: Core, via: str = "192.0.2.1:5060", totag: str = "", src: str = "192.0.2.1", sport: int = 5060
):
    msg = SipMessage.parse(REQ.format(via=via, totag=totag).encode())
    rcv = ReceiveInfo(Proto.UDP, src, sport, "10.1.2.3", 5060)
    return RequestContext(core, msg, rcv)


def parse_reply(data: bytes) -> SipMessage:
    m = SipMessage.parse(data)
    assert not m.is_request
    return m


# -- myself ------------------------------------------------------------------
def test_myself_listen_addresses_and_ports() -> None:
    core = make_core()
    assert core.is_myself("10.1.2.3")  # no port = 5060
    assert core.is_myself("10.1.2.3", 5060, Proto.UDP)
    assert not core.is_myself("10.1.2.3", 5060, Proto.TCP)  # tcp socket is on 5070
    assert core.is_myself("10.1.2.3", 5070)
    assert core.is_myself("10.1.2.3", 5070, Proto.TCP)
    assert not core.is_myself("10.1.2.3", 5071)
    assert core.is_myself("[::1]", 5062) and core.is_myself("::1", 5062)
    assert core.is_myself("[0:0::1]", 5062)  # IPv6 compared as addresses
    assert not core.is_myself("10.1.2.4")
    assert not core.is_myself("example.com")


def test_myself_aliases() -> None:
    core = make_core(alias=["Example.com", "sip.example.org:5080"])
    assert core.is_myself("example.COM")
    assert core.is_myself("example.com", 1234)  # alias without port = any port
    assert core.is_myself("sip.example.org", 5080)
    assert not core.is_myself("sip.example.org")  # 5060 != 5080
    assert not core.is_myself("other.example.com")


def test_myself_wildcard_listen_expands_to_local_addresses() -> None:
    core = Core({"listen": "udp:0.0.0.0:5099"})
    assert core.is_myself("127.0.0.1", 5099)
    assert core.is_myself("localhost", 5099)
    assert not core.is_myself("127.0.0.1", 5098)


def test_myself_default_port_option() -> None:
    core = Core({"listen": "127.0.0.1", "port": 5077})
    assert core.is_myself("127.0.0.1", 5077)
    assert not core.is_myself("127.0.0.1")


def test_myself_extra_names() -> None:
    core = make_core()
    core.myself.add_names(["proxy.example.net"])
    assert core.is_myself("PROXY.example.net", 5060)
    assert not core.is_myself("proxy.example.net", 5099)


# -- Via / rport ---------------------------------------------------------------
def test_via_with_sets_received_and_fills_rport() -> None:
    v = Via.parse("SIP/2.0/UDP host.example.com:5070;rport;branch=z9hG4bK1")
    text = via_with(v, "192.0.2.7", 40000)
    assert text == "SIP/2.0/UDP host.example.com:5070;rport=40000;branch=z9hG4bK1;received=192.0.2.7"
    v2 = Via.parse(text)
    assert via_destination(v2) == ("192.0.2.7", 40000)


def test_via_destination_without_rport() -> None:
    assert via_destination(Via.parse("SIP/2.0/UDP 192.0.2.1;branch=x")) == ("192.0.2.1", 5060)
    assert via_destination(Via.parse("SIP/2.0/TLS h.example;received=10.0.0.1")) == (
        "10.0.0.1",
        5061,
    )
    assert via_destination(Via.parse("SIP/2.0/UDP [::1]:5090;received=::2")) == ("::2", 5090)


def test_fix_top_via_received_only_when_host_differs() -> None:
    core = make_core()
    ctx = ctx_for(core)  # Via host == source IP, no rport
    core.fix_top_via(ctx)
    assert ctx.msg.via1.received is None and ctx.msg.via1.rport is None
    ctx = ctx_for(core, via="pc33.example.com:5060")
    core.fix_top_via(ctx)
    core.fix_top_via(ctx)  # idempotent
    assert ctx.msg.via1.received == "192.0.2.1"
    assert ctx.msg.raw_header_lines("via")[0].count(b"received") == 1
    assert len(ctx.msg.vias) == 2  # the second Via is untouched


def test_fix_top_via_rport_and_force_rport() -> None:
    core = make_core()
    ctx = ctx_for(core, via="192.0.2.1:5060;rport", sport=31000)
    core.fix_top_via(ctx)
    # RFC 3581 §4: received too, although it equals the sent-by host
    assert ctx.msg.via1.rport == "31000" and ctx.msg.via1.received == "192.0.2.1"
    ctx = ctx_for(core, sport=31001)
    ctx.force_rport = True
    core.fix_top_via(ctx)
    assert ctx.msg.via1.rport == "31001"


# -- replies ---------------------------------------------------------------------
def test_reply_404_copies_headers_and_adds_tag() -> None:
    core = make_core()
    ctx = ctx_for(core, via="pc33.example.com;rport", sport=40000)
    data = core.build_reply(ctx, 404, "Not Found")
    r = parse_reply(data)
    assert r.status == 404 and r.reason == "Not Found"
    assert [str(v) for v in r.vias] == [
        "SIP/2.0/UDP pc33.example.com;rport=40000;branch=z9hG4bKabc;received=192.0.2.1",
        "SIP/2.0/TCP relay.example.org;branch=z9hG4bKdef",
    ]
    assert r.header("record-route") is None  # only for 180-299
    assert r.from_.tag == "1928" and r.call_id == "a84b4c76e66710" and str(r.cseq) == "314159 INVITE"
    tag = r.to.tag
    assert tag is not None and tag.startswith(core.to_tag_prefix + "-")
    assert r.content_length == 0 and data.endswith(b"Content-Length: 0\r\n\r\n")
    assert SERVER_HEADER in data
    assert r.header("warning") is not None and "via_cnt==2" in (r.header("warning") or "")
    # a retransmission gets the same tag
    again = parse_reply(core.build_reply(ctx_for(core, via="pc33.example.com;rport", sport=40000), 404, "x"))
    assert again.to.tag == tag


def test_reply_keeps_existing_to_tag_and_100_has_none() -> None:
    core = make_core(sip_warning=0, server_signature=0)
    r = parse_reply(core.build_reply(ctx_for(core, totag=";tag=abc"), 486, "Busy Here"))
    assert r.to.tag == "abc"
    assert r.header("server") is None and r.header("warning") is None
    r = parse_reply(core.build_reply(ctx_for(core), 100, "Trying"))
    assert r.to.tag is None


def test_reply_2xx_copies_record_route_and_extra_headers() -> None:
    core = make_core(sip_warning=0)
    ctx = ctx_for(core)
    ctx.reply_headers.append("P-From-Script: 1\r\n")
    data = core.build_reply(ctx, 200, "OK", ["Contact: <sip:x@y>"], b"v=0\r\n")
    r = parse_reply(data)
    assert r.header("record-route") == "<sip:rr.example.org;lr>"
    assert r.header("p-from-script") == "1" and r.header("contact") == "<sip:x@y>"
    assert r.body == b"v=0\r\n" and r.content_length == 5


def test_reply_3xx_contact_from_destination_set() -> None:
    core = make_core(sip_warning=0)
    ctx = ctx_for(core)
    r = parse_reply(core.build_reply(ctx, 302, "Moved"))
    assert r.header("contact") is None  # nothing rewritten, no branches
    ctx.set_ruri("sip:bob@192.0.2.9")
    ctx.branches.append(Branch("sip:bob@192.0.2.10", q=500))
    ctx.branches.append(Branch("sip:bob@192.0.2.11"))
    r = parse_reply(core.build_reply(ctx, 302, "Moved"))
    assert r.header("contact") == "sip:bob@192.0.2.9, <sip:bob@192.0.2.10>;q=0.5, sip:bob@192.0.2.11"


def test_send_reply_never_answers_ack() -> None:
    core = make_core()
    msg = SipMessage.parse(
        b"ACK sip:b@example.com SIP/2.0\r\nVia: SIP/2.0/UDP 192.0.2.1;branch=z9hG4bK1\r\n"
        b"From: <sip:a@example.com>;tag=1\r\nTo: <sip:b@example.com>;tag=2\r\nCall-ID: c\r\n"
        b"CSeq: 1 ACK\r\nContent-Length: 0\r\n\r\n"
    )
    ctx = RequestContext(core, msg, ReceiveInfo(Proto.UDP, "192.0.2.1", 5060, "10.1.2.3", 5060))
    assert core.send_reply(ctx, 200, "OK") == -1


# -- stateless branch --------------------------------------------------------------
def test_stateless_branch_is_stable_and_rfc3261() -> None:
    core = make_core()
    b1 = stateless_branch(ctx_for(core).msg, "sip:bob@192.0.2.9")
    b2 = stateless_branch(ctx_for(core).msg, "sip:bob@192.0.2.9")
    b3 = stateless_branch(ctx_for(core).msg, "sip:bob@192.0.2.10")
    b4 = stateless_branch(ctx_for(core, via="192.0.2.1:5060;x=1").msg, "sip:bob@192.0.2.9")
    assert b1 == b2 and b1.startswith("z9hG4bK")
    assert b1 != b3  # another target
    assert b4 == b1  # other Via params do not matter, branch and sent-by do


def test_build_forward_adds_via_and_restores_message() -> None:
    core = make_core()

    class Lst:
        proto = Proto.UDP
        ip = "10.1.2.3"
        port = 5060
        via_host = "10.1.2.3"

    ctx = ctx_for(core, via="pc33.example.com")
    ctx.set_ruri("sip:bob@192.0.2.9:5080")
    out = SipMessage.parse(core.stateless.build_forward(ctx, Proto.UDP, Lst()))
    assert out.ruri == "sip:bob@192.0.2.9:5080"
    assert out.via1.host == "10.1.2.3" and out.via1.port == 5060
    assert out.via1.branch == stateless_branch(ctx.msg, "sip:bob@192.0.2.9:5080")
    assert out.vias[1].received == "192.0.2.1"
    assert len(out.vias) == 3
    # the request itself keeps its request URI and Via list
    assert ctx.msg.ruri == "sip:bob@example.com" and len(ctx.msg.vias) == 2
    assert ctx.original_ruri == "sip:bob@example.com"


@pytest.mark.parametrize("proto", [Proto.UDP, Proto.TCP])
def test_build_forward_ipv6_via(proto: Proto) -> None:
    core = make_core()

    class Lst:
        ip = "::1"
        port = 5062
        via_host = "[::1]"

    ctx = ctx_for(core)
    out = SipMessage.parse(core.stateless.build_forward(ctx, proto, Lst()))
    assert out.via1.host == "[::1]" and out.via1.port == 5062 and out.via1.transport == proto.name
