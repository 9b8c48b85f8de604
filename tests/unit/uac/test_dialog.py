"""RFC 3261 §12 dialog state from a 2xx, and where in-dialog requests go."""

from __future__ import annotations

from sipexpress.sip.dialog import Dialog
from sipexpress.sip.message import SipMessage
from sipexpress.uac.flows import parse_completion
from sipexpress.uac.t_uac_dlg import UacOutcome

REQ = (
    b"INVITE sip:alice@example.com SIP/2.0\r\n"
    b"Via: SIP/2.0/UDP 10.0.0.1;branch=z9hG4bKabc\r\n"
    b"From: <sip:controller@foo.bar>;tag=123\r\n"
    b"To: <sip:alice@example.com>\r\n"
    b"Call-ID: 99.fifouacctd\r\n"
    b"CSeq: 1 INVITE\r\n"
    b"Content-Length: 0\r\n\r\n"
)


def reply(record_routes: list[str], contact: str | None = "<sip:alice@192.0.2.7:5062>") -> SipMessage:
    rr = "".join(f"Record-Route: {r}\r\n" for r in record_routes)
    ct = f"Contact: {contact}\r\n" if contact else ""
    return SipMessage.parse(
        (
            "SIP/2.0 200 OK\r\n"
            "Via: SIP/2.0/UDP 10.0.0.1;branch=z9hG4bKabc\r\n"
            f"{rr}"
            "From: <sip:controller@foo.bar>;tag=123\r\n"
            "To: <sip:alice@example.com>;tag=a83bd\r\n"
            "Call-ID: 99.fifouacctd\r\n"
            "CSeq: 1 INVITE\r\n"
            f"{ct}"
            "Content-Length: 0\r\n\r\n"
        ).encode()
    )


def test_no_route_set_goes_to_contact() -> None:
    d = Dialog.from_uac_reply(SipMessage.parse(REQ), reply([]))
    t = d.target()
    assert t is not None
    assert (t.ruri, t.next_hop, t.routes) == ("sip:alice@192.0.2.7:5062", "sip:alice@192.0.2.7:5062", ())


def test_loose_route_set_is_reversed_record_route() -> None:
    d = Dialog.from_uac_reply(
        SipMessage.parse(REQ), reply(["<sip:p2.example.com;lr>", "<sip:p1.foo.bar;lr>"])
    )
    t = d.target()
    assert t is not None
    assert t.ruri == "sip:alice@192.0.2.7:5062"
    assert t.next_hop == "sip:p1.foo.bar;lr"
    assert t.routes == ("<sip:p1.foo.bar;lr>", "<sip:p2.example.com;lr>")
    hdrs = d.headers("REFER")
    assert ("CSeq", "2 REFER") in hdrs
    assert ("To", "<sip:alice@example.com>;tag=a83bd") in hdrs
    assert ("From", "<sip:controller@foo.bar>;tag=123") in hdrs
    assert [v for n, v in hdrs if n == "Route"] == ["<sip:p1.foo.bar;lr>", "<sip:p2.example.com;lr>"]


def test_strict_first_route_becomes_request_uri() -> None:
    d = Dialog.from_uac_reply(
        SipMessage.parse(REQ), reply(["<sip:p2.example.com;lr>", "<sip:strict.foo.bar>"])
    )
    t = d.target()
    assert t is not None
    assert t.ruri == "sip:strict.foo.bar"
    assert t.next_hop == "sip:strict.foo.bar"
    # the rest of the route set, then the remote target as the last Route
    assert t.routes == ("<sip:p2.example.com;lr>", "<sip:alice@192.0.2.7:5062>")


def test_ack_reuses_invite_cseq() -> None:
    d = Dialog.from_uac_reply(SipMessage.parse(REQ), reply([]))
    assert ("CSeq", "1 ACK") in d.headers("ACK", 1)
    assert ("CSeq", "2 BYE") in d.headers("BYE")


def test_completion_reply_lines_round_trip() -> None:
    req = SipMessage.parse(REQ)
    rep = reply(["<sip:192.168.2.16;ftag=1234;lr=on>"], "<sip:44@192.168.2.34:5060>")
    out = UacOutcome(200, "OK", rep, req, Dialog.from_uac_reply(req, rep))
    text = "200 OK\n" + out.render().text
    lines = text.split("\n")
    assert lines[1:4] == [
        "sip:44@192.168.2.34:5060",
        "sip:192.168.2.16;ftag=1234;lr=on",
        "Route: <sip:192.168.2.16;ftag=1234;lr=on>\r",
    ]
    assert lines[4].startswith("Via: ")
    c = parse_completion(text)
    assert c.ok and c.ruri == "sip:44@192.168.2.34:5060"
    assert c.header("To") == "<sip:alice@example.com>;tag=a83bd"


def test_negative_reply_has_no_dialog_lines() -> None:
    req = SipMessage.parse(REQ)
    rep = SipMessage.parse(reply([]).serialize().replace(b"200 OK", b"486 Busy Here"))
    text = "486 Busy Here\n" + UacOutcome(486, "Busy Here", rep, req).render().text
    assert text.split("\n")[1:4] == [".", ".", "."]
