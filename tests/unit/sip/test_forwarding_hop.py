"""sip.forwarding's hop-by-hop CANCEL and ACK: the forwarded request's
Max-Forwards and, for a CANCEL after a 2xx, RFC 3326's Reason."""

from __future__ import annotations

from sipexpress.sip.forwarding import build_ack, build_cancel
from sipexpress.sip.message import SipMessage

INVITE = (
    b"INVITE sip:bob@192.0.2.2 SIP/2.0\r\n"
    b"Via: SIP/2.0/UDP 192.0.2.1;branch=z9hG4bKa\r\n"
    b"Max-Forwards: 69\r\n"
    b"Route: <sip:192.0.2.9;lr>\r\n"
    b"From: <sip:alice@example.com>;tag=1\r\n"
    b"To: <sip:bob@example.com>\r\n"
    b"Call-ID: c1\r\n"
    b"CSeq: 7 INVITE\r\n"
    b"Content-Length: 0\r\n\r\n"
)
VIA = "SIP/2.0/UDP 192.0.2.5:5060;branch=z9hG4bKb"
REASON = b'Reason: SIP;cause=200;text="Call completed elsewhere"\r\n'


def test_cancel_keeps_max_forwards_and_carries_reason() -> None:
    req = SipMessage.parse(INVITE)
    cancel = SipMessage.parse(build_cancel(req, "sip:bob@192.0.2.2", VIA, REASON))
    assert (cancel.method, cancel.cseq.num, cancel.cseq.method) == ("CANCEL", 7, "CANCEL")
    assert cancel.max_forwards == 69
    assert cancel.header("reason") == 'SIP;cause=200;text="Call completed elsewhere"'
    assert cancel.header("route") == "<sip:192.0.2.9;lr>"
    assert not SipMessage.parse(build_cancel(req, "sip:bob@192.0.2.2", VIA)).has_header("reason")


def test_ack_keeps_max_forwards_and_takes_the_replys_to() -> None:
    req = SipMessage.parse(INVITE)
    reply = SipMessage.parse(
        b"SIP/2.0 486 Busy Here\r\nVia: " + VIA.encode() + b"\r\nFrom: <sip:alice@example.com>;tag=1\r\n"
        b"To: <sip:bob@example.com>;tag=b\r\nCall-ID: c1\r\nCSeq: 7 INVITE\r\nContent-Length: 0\r\n\r\n"
    )
    ack = SipMessage.parse(build_ack(req, "sip:bob@192.0.2.2", VIA, reply))
    assert ack.max_forwards == 69 and ack.to.tag == "b" and ack.cseq.method == "ACK"


def test_without_max_forwards_70() -> None:
    req = SipMessage.parse(INVITE.replace(b"Max-Forwards: 69\r\n", b""))
    assert SipMessage.parse(build_cancel(req, "sip:bob@192.0.2.2", VIA)).max_forwards == 70
