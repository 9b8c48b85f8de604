"""The reply fast path's branch extraction (tm ``_top_branch``) agrees
with the Via parser on every spelling."""

from __future__ import annotations

import pytest

from sipexpress.modules.tm.replies import _top_branch
from sipexpress.sip.message import SipMessage


def reply(via_lines: str) -> SipMessage:
    return SipMessage.parse(
        (
            f"SIP/2.0 200 OK\r\n{via_lines}From: <sip:a@b>;tag=1\r\nTo: <sip:c@d>;tag=2\r\n"
            "Call-ID: x\r\nCSeq: 1 INVITE\r\nContent-Length: 0\r\n\r\n"
        ).encode()
    )


@pytest.mark.parametrize(
    "via",
    [
        "Via: SIP/2.0/UDP 10.0.0.1:5060;branch=z9hG4bKabc\r\n",
        "v: SIP/2.0/UDP 10.0.0.1;rport;branch=z9hG4bKabc;received=1.2.3.4\r\n",
        "Via: SIP/2.0/UDP 10.0.0.1 ; BRANCH = z9hG4bKabc\r\n",
        "Via: SIP/2.0/UDP 10.0.0.1;\r\n branch=z9hG4bKabc\r\n",  # folded
        "Via: SIP/2.0/UDP 10.0.0.1;branch=z9hG4bKabc, SIP/2.0/UDP 10.0.0.2;branch=z9hG4bKother\r\n",
        "Via: SIP/2.0/UDP 10.0.0.1;branch=z9hG4bKabc\r\nVia: SIP/2.0/UDP 10.0.0.2;branch=z9hG4bKx\r\n",
        "Via: SIP/2.0/UDP 10.0.0.1, SIP/2.0/UDP 10.0.0.2;branch=z9hG4bKother\r\n",  # none in the top one
        "Via: SIP/2.0/UDP 10.0.0.1\r\n",
    ],
)
def test_same_branch_as_the_via_parser(via: str) -> None:
    msg = reply(via)
    assert _top_branch(msg) == msg.via1.branch


def test_no_via() -> None:
    assert _top_branch(reply("")) is None


@pytest.mark.parametrize("eol", [b"\r\n", b"\n"])
def test_strip_top_via_cuts_the_via_field_only(eol: bytes) -> None:
    from sipexpress.modules.tm.replies import _strip_top_via

    data = (
        b"SIP/2.0 200 OK\r\nX: Via: SIP/2.0/UDP p;branch=z9hG4bKa\r\nVia: SIP/2.0/UDP p;branch=z9hG4bKa\r\n"
        b"Via: SIP/2.0/UDP q;branch=z9hG4bKb\r\nFrom: <sip:a@b>;tag=1\r\nTo: <sip:b@c>\r\nCall-ID: x\r\n"
        b"CSeq: 1 INVITE\r\nContent-Length: 0\r\n\r\n"
    ).replace(b"\r\n", eol)
    out = SipMessage.parse(_strip_top_via(SipMessage.parse(data)))
    assert out.header("x") == "Via: SIP/2.0/UDP p;branch=z9hG4bKa"
    assert [v.host for v in out.vias] == ["q"]
