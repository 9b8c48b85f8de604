"""nathelper's script functions on real messages, compiled from ser.cfg
text: the nat_uac_test bits one by one, the Contact/received/SDP rewrites,
and broken input (clear results, never an exception)."""

from __future__ import annotations

import pytest

from sipexpress.core.context import Proto
from sipexpress.modules.nathelper import NathelperModule
from sipexpress.sip import sdp as sdplib
from sipexpress.sip.message import SipMessage
from sipexpress.sip.nat import fix_sdp, is_private
from tests.unit.script.helpers import Script

PUBLIC = ("203.0.113.7", 40123)  # where the NAT sends the phone's packets from

SDP = (
    "v=0\r\no=- 1 1 IN IP4 192.168.1.20\r\ns=-\r\nc=IN IP4 192.168.1.20\r\nt=0 0\r\n"
    "m=audio 8000 RTP/AVP 0\r\na=rtcp:8001 IN IP4 192.168.1.20\r\nm=video 0 RTP/AVP 31\r\nc=IN IP4 0.0.0.0\r\n"
)


def msg(
    contact: str = "<sip:alice@192.168.1.20:5062>",
    via: str = "192.168.1.20:5062",
    body: str = "",
    method: str = "INVITE",
    extra: str = "",
) -> bytes:
    ctype = "Content-Type: application/sdp\r\n" if body else ""
    return (
        f"{method} sip:bob@example.org SIP/2.0\r\n"
        f"Via: SIP/2.0/UDP {via};branch=z9hG4bK1;rport\r\n"
        "From: <sip:alice@example.org>;tag=1\r\nTo: <sip:bob@example.org>\r\n"
        f"Call-ID: c1\r\nCSeq: 1 {method}\r\nMax-Forwards: 70\r\n"
        + (f"Contact: {contact}\r\n" if contact is not None else "")
        + extra
        + ctype
        + f"Content-Length: {len(body)}\r\n\r\n{body}"
    ).encode()


def script(body: str) -> Script:
    return Script('loadmodule "nathelper"\nroute { ' + body + " }")


async def run_test(flags: int, data: bytes, src: tuple[str, int] = PUBLIC) -> int:
    s = script(f'if (nat_uac_test("{flags}")) {{ setflag(1); }};')
    _, ctx = await s.run(data, src=src)
    return 1 if ctx.isflagset(1) else -1


@pytest.mark.parametrize(
    ("flags", "data", "src", "expected"),
    [
        # 1: Contact has a private address
        (1, msg(), PUBLIC, 1),
        (1, msg(contact="<sip:alice@198.51.100.9>"), PUBLIC, -1),
        (1, msg(contact="<sip:alice@100.64.1.1>"), PUBLIC, 1),  # carrier-grade NAT (Kamailio)
        (1, msg(contact="<sip:alice@phone.example.org>"), PUBLIC, -1),  # a name is no address
        # 2: Via host differs from the source address
        (2, msg(), PUBLIC, 1),
        (2, msg(via="203.0.113.7:40123"), PUBLIC, -1),
        # 4: Via host is private
        (4, msg(), PUBLIC, 1),
        (4, msg(via="198.51.100.9"), PUBLIC, -1),
        # 8: SDP has a private address (held 0.0.0.0 does not count)
        (8, msg(body=SDP), PUBLIC, 1),
        (8, msg(body=SDP.replace("192.168.1.20", "198.51.100.9")), PUBLIC, -1),
        # 16: Via port differs from the source port
        (16, msg(via="203.0.113.7:40123"), PUBLIC, -1),
        (16, msg(via="203.0.113.7:5060"), PUBLIC, 1),
        (16, msg(via="203.0.113.7"), ("203.0.113.7", 5060), -1),  # no port in Via = 5060
        # 32: the source itself is private; 128: Contact port differs from the source port
        (32, msg(), ("10.0.0.5", 5060), 1),
        (32, msg(), PUBLIC, -1),
        (128, msg(contact="<sip:a@203.0.113.7:40123>"), PUBLIC, -1),
        (128, msg(contact="<sip:a@203.0.113.7>"), PUBLIC, 1),
        # 256: an SDP c= address differs from the source
        (
            256,
            msg(body=SDP.replace("192.168.1.20", "203.0.113.7").replace("0.0.0.0", "203.0.113.7")),
            PUBLIC,
            -1,
        ),
        (256, msg(body=SDP), PUBLIC, 1),
        # several bits: any one true is enough; none true is false
        (19, msg(contact="<sip:a@198.51.100.9>", via="203.0.113.7:5060"), PUBLIC, 1),
        (3, msg(contact="<sip:a@198.51.100.9>", via="203.0.113.7:40123"), PUBLIC, -1),
    ],
    ids=lambda v: str(v) if isinstance(v, int) else "",
)
async def test_nat_uac_test_bits(flags: int, data: bytes, src: tuple[str, int], expected: int) -> None:
    assert await run_test(flags, data, src) == expected


async def test_nat_uac_test_websocket_bit() -> None:
    s = script('if (nat_uac_test("64")) { setflag(1); };')
    _, ctx = await s.run(msg(), src=PUBLIC, proto=Proto.WS)
    assert ctx.isflagset(1)
    _, ctx = await s.run(msg(), src=PUBLIC, proto=Proto.TCP)
    assert not ctx.isflagset(1)


async def test_private_contact_from_a_public_source_is_detected_and_fixed() -> None:
    """Item 5: the Contact claims 192.168.1.20:5062, the packet came from
    203.0.113.7:40123; nat_uac_test finds it, fix_nated_contact rewrites the
    first Contact to the source (keeping user, parameters and the others)."""
    s = script('if (nat_uac_test("1")) { if (fix_nated_contact()) { setflag(1); }; };')
    contact = (
        '"Alice" <sip:alice@192.168.1.20:5062;transport=udp;maddr=192.168.1.20>;expires=60, <sip:x@10.0.0.1>'
    )
    _, ctx = await s.run(msg(contact=contact), src=PUBLIC)
    assert ctx.isflagset(1)
    out = SipMessage.parse(ctx.msg.serialize())
    first, second = out.contacts
    assert first.uri == "sip:alice@203.0.113.7:40123;transport=udp"
    assert first.display == "Alice" and first.params["expires"] == "60"
    assert second.uri == "sip:x@10.0.0.1"


async def test_fix_nated_contact_ipv6_source() -> None:
    s = script("fix_nated_contact();")
    _, ctx = await s.run(msg(), src=("2001:db8::7", 5070))
    assert SipMessage.parse(ctx.msg.serialize()).contacts[0].uri == "sip:alice@[2001:db8::7]:5070"


async def test_fix_nated_register_sets_received_for_save() -> None:
    s = script("if (fix_nated_register()) { setflag(1); };")
    _, ctx = await s.run(msg(method="REGISTER"), src=PUBLIC)
    assert ctx.isflagset(1) and ctx.data["received"] == "sip:203.0.113.7:40123"
    _, ctx = await s.run(msg(method="REGISTER"), src=PUBLIC, proto=Proto.TCP)
    assert ctx.data["received"] == "sip:203.0.113.7:40123;transport=tcp"
    _, ctx = await s.run(msg(method="INVITE"), src=PUBLIC)
    assert not ctx.isflagset(1) and "received" not in ctx.data  # only for REGISTER


async def test_add_rcv_param_to_each_contact_or_uri() -> None:
    s = script("add_rcv_param();")
    _, ctx = await s.run(
        msg(method="REGISTER", contact="<sip:a@192.168.1.20>, <sip:b@192.168.1.20>"), src=PUBLIC
    )
    cs = SipMessage.parse(ctx.msg.serialize()).contacts
    assert [c.params["received"] for c in cs] == ['"sip:203.0.113.7:40123"'] * 2
    s = script('add_rcv_param("1");')
    _, ctx = await s.run(msg(method="REGISTER"), src=PUBLIC)
    assert SipMessage.parse(ctx.msg.serialize()).contacts[0].uri == (
        "sip:alice@192.168.1.20:5062;received=sip:203.0.113.7:40123"
    )
    _, ctx = await s.run(msg(method="REGISTER"), src=PUBLIC, proto=Proto.TCP)
    assert "received" not in ctx.msg.serialize().decode()  # UDP only, as Kamailio


async def test_fix_nated_sdp_flags() -> None:
    s = script('if (fix_nated_sdp("15")) { setflag(1); };')
    _, ctx = await s.run(msg(body=SDP), src=PUBLIC)
    assert ctx.isflagset(1)
    out = SipMessage.parse(ctx.msg.serialize())
    body = out.body.decode()
    assert out.content_length == len(out.body)
    sdp = sdplib.parse(out.body)
    assert sdp.addresses() == ["203.0.113.7", "0.0.0.0"]  # the held stream stays on hold
    assert sdp.origin_address == "203.0.113.7"
    assert "a=rtcp:8001 IN IP4 203.0.113.7" in body
    assert body.count("a=direction:active") == 2  # one per media section
    assert "a=nortpproxy:yes" in body and "a=oldmediaip:192.168.1.20" in body
    assert body.endswith("\r\n") and "\n\n" not in body.replace("\r\n", "\n")
    # an address given explicitly; nothing to change answers 2 (Kamailio)
    s = script('fix_nated_sdp("2", "198.51.100.50");')
    _, ctx = await s.run(msg(body=SDP), src=PUBLIC)
    assert sdplib.parse(ctx.msg.body).addresses()[0] == "198.51.100.50"
    nh = s.loaded.module("nathelper")
    assert isinstance(nh, NathelperModule)
    assert nh.fix_nated_sdp(ctx, 2, "198.51.100.50") == 2


def test_fix_sdp_keeps_bare_lf_bodies_and_untouched_bytes() -> None:
    body = SDP.replace("\r\n", "\n").encode()
    out = fix_sdp(body, 2, "203.0.113.7", oldmediaip=False)
    assert out is not None
    assert out[0] == body.replace(b"IN IP4 192.168.1.20\nt=", b"IN IP4 203.0.113.7\nt=").replace(
        b"8001 IN IP4 192.168.1.20", b"8001 IN IP4 203.0.113.7"
    )
    assert fix_sdp(body, 0, "203.0.113.7") == (body, False)


@pytest.mark.parametrize(
    "data",
    [
        msg(contact="*"),
        msg(contact=None),  # type: ignore[arg-type]
        msg(contact="<sip:alice@>"),
        msg(contact="<not a uri"),
        msg(contact="<tel:+123456>"),
        msg(via="[::1"),
        msg(body="not sdp at all"),
        msg(body="v=0\r\nc=IN IP4\r\nm=audio x RTP/AVP 0\r\n"),
        msg(body="v=0\r\no=short\r\n"),
    ],
    ids=["star", "none", "no-host", "unclosed", "tel", "bad-via", "not-sdp", "bad-c", "bad-o"],
)
async def test_broken_input_gives_clear_results(data: bytes) -> None:
    """Item 5: malformed Contact, Via or SDP: every function answers
    (false / -1 for a rewrite it cannot do), none raises or hangs, and the
    message is still sendable."""
    s = script(
        'if (nat_uac_test("511")) { setflag(1); }; fix_nated_contact(); add_rcv_param(); fix_nated_sdp("15");'
    )
    rc, ctx = await s.run(data, src=PUBLIC)
    assert isinstance(rc, int)
    SipMessage.parse(ctx.msg.serialize())


@pytest.mark.parametrize(
    ("host", "private"),
    [
        ("10.1.2.3", True),
        ("172.31.255.255", True),
        ("172.32.0.1", False),
        ("192.168.0.1", True),
        ("100.127.255.255", True),
        ("100.128.0.0", False),
        ("192.0.0.7", True),
        ("192.0.0.8", False),
        ("8.8.8.8", False),
        ("[fd00::1]", True),
        ("2001:db8::1", False),
        ("example.org", False),
        ("", False),
    ],
)
def test_is_private(host: str, private: bool) -> None:
    assert is_private(host) is private


async def test_force_rtp_proxy_without_a_relay_is_false_and_says_why(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """SER 0.9's force_rtp_proxy from nathelper with neither rtpproxy_sock
    nor the rtpengine module: false at once, the body untouched, a log line
    naming what to configure; rtpproxy_disable: false without a word."""
    s = script("if (!force_rtp_proxy()) { setflag(1); }; if (!unforce_rtp_proxy()) { setflag(2); };")
    _, ctx = await s.run(msg(body=SDP), src=PUBLIC)
    assert ctx.isflagset(1) and ctx.isflagset(2)
    assert ctx.msg.body.decode() == SDP
    assert 'modparam("nathelper", "rtpproxy_sock"' in caplog.text and "rtpengine ng socket" in caplog.text
    caplog.clear()
    s = Script(
        'loadmodule "nathelper"\nmodparam("nathelper", "rtpproxy_disable", 1)\n'
        'modparam("nathelper", "rtpproxy_sock", "udp:127.0.0.1:9")\n'
        "route { if (!force_rtp_proxy()) { setflag(1); }; }"
    )
    _, ctx = await s.run(msg(body=SDP), src=PUBLIC)
    assert ctx.isflagset(1) and "rtpproxy_sock" not in caplog.text
