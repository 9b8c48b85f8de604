"""The regex fast paths of Via, NameAddr and SipUri must give exactly what
the general parsers give (result or SipParseError status), over every
combination of tricky pieces."""

from __future__ import annotations

import itertools
from collections.abc import Callable

from sipexpress.sip.errors import SipParseError
from sipexpress.sip.headers import NameAddr, Via
from sipexpress.sip.uri import SipUri

PARAMS = [
    "", ";lr", ";branch=z9hG4bK1", ";a=b;c", ";A=", ";=x", ";x=[::1]", ";rport;received=1.2.3.4", ";a b",
    ';q="x"', ";%41=1", ";a=%4",
]  # fmt: skip


def outcome(fn: Callable[[str], object], text: str) -> object:
    try:
        r = fn(text)
    except SipParseError as e:
        return ("error", e.status)
    attrs = ("params", "display", "user", "password", "headers", "host", "port")
    return [str(getattr(r, a, None)) for a in attrs] + [str(r)]


def test_via() -> None:
    n = 0
    for proto, tr, sep, host, port, par in itertools.product(
        ["SIP/2.0/", "sip/2.0/", "SIP/2.0/ "],
        ["UDP", "tcp", "x-y", ""],
        [" ", "  "],
        ["h", "192.0.2.1", "[2001:db8::1]", "[:]", "[ab]", "h_x", "", "a b", "[::1"],
        ["", ":5060", ":0", ":65536", ":", ":1a"],
        PARAMS,
    ):
        text = f"{proto}{tr}{sep}{host}{port}{par}"
        assert outcome(Via.parse, text) == outcome(Via._parse, text), text
        n += 1
    assert n > 10000


def test_name_addr() -> None:
    for d, brackets, uri, sp, par in itertools.product(
        ["", '"A" ', '"A\\"b" ', "A ", "A B ", "A, ", '"x"', "a  b ", '"\x01" ', "Jü "],
        [True, False],
        ["sip:a@b", "sips:a@b:5061;lr", "tel:+1", "sip:a@b?x=y", "1x:a", "sip:", "sip:a b", "sip:a,b", "x:y"],
        ["", " "],
        PARAMS,
    ):
        text = f"{d}<{uri}>{sp}{par}" if brackets else f"{uri}{par}"
        assert outcome(NameAddr.parse, text) == outcome(NameAddr._parse, text), text


def test_sip_uri() -> None:
    for scheme, user, host, port, par, hdrs in itertools.product(
        ["sip:", "sips:", "SIP:", "tel:"],
        ["", "alice@", "a%41@", "a:pw@", "a;b=c?d@", "@", "a b@", "+1@", "a?@"],
        ["example.com", "192.0.2.1", "[2001:db8::1]", "[a]", "[ab]", "[::1", "h_x", "", "bad host"],
        ["", ":5060", ":65536", ":"],
        PARAMS,
        ["", "?x=y", "?"],
    ):
        text = f"{scheme}{user}{host}{port}{par}{hdrs}"
        assert outcome(SipUri.parse, text) == outcome(SipUri._parse, text), text


def test_cseq_from_raw_line() -> None:
    """``msg.cseq`` read from the raw line (replies) equals ``CSeq.parse``."""
    from sipexpress.sip.headers import CSeq
    from sipexpress.sip.message import SipMessage

    for num, sep, method, trail in itertools.product(
        ["1", "0", "4294967295", "4294967296", "99999999999", "", "1a", "01"],
        [" ", "  ", "\t", ""],
        ["INVITE", "invite", "X-Y", "", "A B"],
        ["", " ", "\t"],
    ):
        value = f"{num}{sep}{method}{trail}"
        msg = SipMessage.parse(
            f"SIP/2.0 200 OK\r\nVia: SIP/2.0/UDP h\r\nCSeq:{value}\r\nContent-Length: 0\r\n\r\n".encode()
        )
        assert outcome(lambda _, m=msg: m.cseq, value) == outcome(CSeq.parse, value), value


def test_max_forwards_from_raw_line() -> None:
    """``msg.max_forwards`` read from the raw line equals ``parse_uint`` of
    the decoded value (result or error)."""
    from sipexpress.sip.headers import parse_uint
    from sipexpress.sip.message import SipMessage

    for v in [
        "70",
        "0",
        "255",
        "256",
        "007",
        "0255",
        "1a",
        "",
        " 70",
        "70 ",
        "\t70",
        "-1",
        "9999",
        "٣",
        "7 0",
    ]:
        msg = SipMessage.parse(
            f"OPTIONS sip:a@b SIP/2.0\r\nMax-Forwards:{v}\r\nVia: SIP/2.0/UDP h\r\n\r\n".encode()
        )
        assert outcome(lambda _, m=msg: m.max_forwards, v) == outcome(
            lambda s: parse_uint(s.strip(), "Max-Forwards", 255), v
        ), v
