"""Typed header parsers, header names, and fast-path/general-parser agreement."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from sipexpress.sip.errors import SipParseError
from sipexpress.sip.headers import (
    COMPACT,
    AuthHeader,
    CSeq,
    NameAddr,
    Via,
    canonical_name,
    header_key,
    parse_date,
    parse_params,
    split_values,
    unquote,
)


def test_compact_table() -> None:
    for short in "imftvlckseourbxy":
        assert short in COMPACT
    assert header_key("i") == "call-id" and header_key("I") == "call-id" and header_key(" Via ") == "via"
    assert header_key("X-Custom") == "x-custom"


@pytest.mark.parametrize(
    "name,canon",
    [
        ("call-id", "Call-ID"),
        ("i", "Call-ID"),
        ("CSEQ", "CSeq"),
        ("via", "Via"),
        ("www-authenticate", "WWW-Authenticate"),
        ("x-foo-bar", "X-Foo-Bar"),
        ("content-length", "Content-Length"),
        ("l", "Content-Length"),
        ("record-route", "Record-Route"),
    ],
)
def test_canonical_name(name: str, canon: str) -> None:
    assert canonical_name(name) == canon


def test_split_values() -> None:
    assert split_values('a, "b,c" <sip:x,y>;p=1 ,d') == ["a", '"b,c" <sip:x,y>;p=1', "d"]
    assert split_values("a,,b") == ["a", "b"]
    assert split_values("a,,b", keep_empty=True) == ["a", "", "b"]
    assert split_values('"x\\",y", z') == ['"x\\",y"', "z"]
    with pytest.raises(SipParseError):
        split_values('"open, x')


def test_unquote() -> None:
    assert unquote('"a\\"b\\\\c"') == 'a"b\\c'
    assert unquote("plain") == "plain"


def test_params() -> None:
    assert parse_params('a=1 ; B = x ;c;d="q;s"') == {"a": "1", "b": "x", "c": None, "d": '"q;s"'}
    for bad in ("", "a=", "=1", "a;;b", "a b=1", "a=x y"):
        with pytest.raises(SipParseError):
            parse_params(bad)


class TestVia:
    def test_basic(self) -> None:
        v = Via.parse(
            "SIP/2.0/UDP 192.0.2.1:5060;branch=z9hG4bK1;rport;received=192.0.2.9;maddr=224.2.0.1;ttl=16"
        )
        assert (v.protocol, v.transport, v.host, v.port) == ("SIP/2.0", "UDP", "192.0.2.1", 5060)
        assert (v.branch, v.rport, v.received, v.maddr, v.ttl) == (
            "z9hG4bK1",
            "",
            "192.0.2.9",
            "224.2.0.1",
            "16",
        )
        assert v.sent_by == "192.0.2.1:5060"
        assert (
            str(v)
            == "SIP/2.0/UDP 192.0.2.1:5060;branch=z9hG4bK1;rport;received=192.0.2.9;maddr=224.2.0.1;ttl=16"
        )

    def test_rport_value_and_absent(self) -> None:
        assert Via.parse("SIP/2.0/UDP h;rport=5061").rport == "5061"
        assert Via.parse("SIP/2.0/UDP h").rport is None

    def test_whitespace_and_case(self) -> None:
        v = Via.parse("sip / 2.0 / tcp   host.example.com : 5070 ; Branch = z9hG4bKx ;rport")
        assert (v.transport, v.host, v.port, v.branch, v.rport) == (
            "TCP",
            "host.example.com",
            5070,
            "z9hG4bKx",
            "",
        )

    def test_ipv6(self) -> None:
        v = Via.parse("SIP/2.0/UDP [2001:db8::9]:5080;received=2001:db8::1;branch=z9hG4bKa")
        assert (v.host, v.port, v.received) == ("[2001:db8::9]", 5080, "2001:db8::1")

    @pytest.mark.parametrize(
        "text",
        [
            "",
            "SIP/2.0",
            "SIP/2.0/UDP",
            "SIP/2.0/UDP ",
            "HTTP/2.0/UDP h",
            "SIP/2.0/UDP h:",
            "SIP/2.0/UDP h:70000",
            "SIP/2.0/UDP h;",
            "SIP/2.0/UDP h;;",
            "SIP/2.0/UDP h;branch=",
            "SIP/2.0/UDP [::1",
            "SIP/2.0/UDP h h",
            "SIP/2.0/UDP h;a b",
        ],
    )
    def test_invalid(self, text: str) -> None:
        with pytest.raises(SipParseError):
            Via.parse(text)


class TestNameAddr:
    @pytest.mark.parametrize(
        "text,display,uri,params",
        [
            ('"Alice" <sip:a@b>;tag=1', "Alice", "sip:a@b", {"tag": "1"}),
            ("<sip:a@b;lr>", None, "sip:a@b;lr", {}),
            ("Alice Smith <sip:a@b> ; tag = x", "Alice Smith", "sip:a@b", {"tag": "x"}),
            ("sip:a@b;tag=1", None, "sip:a@b", {"tag": "1"}),
            ("caller<sip:a@b>", "caller", "sip:a@b", {}),
            ('"Quoted \\"q\\"" <sip:a@b>', 'Quoted "q"', "sip:a@b", {}),
            ('"" <sip:a@b>', "", "sip:a@b", {}),
            ("<tel:+123>;expires=5", None, "tel:+123", {"expires": "5"}),
            ("<sip:a@b?subject=x,y>", None, "sip:a@b?subject=x,y", {}),
            # unquoted UTF-8 display names are tolerated (common in the wild)
            ("Jürgen Müller <sip:j@x>", "Jürgen Müller", "sip:j@x", {}),
        ],
    )
    def test_valid(self, text: str, display: str | None, uri: str, params: dict[str, str]) -> None:
        na = NameAddr.parse(text)
        assert (na.display, na.uri, na.params) == (display, uri, params)
        again = NameAddr.parse(str(na))
        assert (again.display, again.uri, again.params) == (display, uri, params)

    @pytest.mark.parametrize(
        "text",
        [
            "",
            '"open <sip:a@b>',
            "Bell, A <sip:a@b>",
            "< sip:a@b >",
            "<sip:a@b",
            "sip:a@b?x=y",
            "<sip:a@b> x",
            "<sip:a@b>;",
            "nocolon",
            "<sip:a@b>;tag=",
            '"x" sip:a@b',
            "<1sip:a>",
        ],
    )
    def test_invalid(self, text: str) -> None:
        with pytest.raises(SipParseError):
            NameAddr.parse(text)


def test_cseq() -> None:
    c = CSeq.parse(" 0009 \r\n INVITE")
    assert (c.num, c.method, str(c)) == (9, "INVITE", "9 INVITE")
    assert CSeq.parse("4294967295 ACK").num == 4294967295
    for bad in ("", "1", "INVITE", "1 2 3", "-1 INVITE", "4294967296 INVITE", "1 INV(ITE"):
        with pytest.raises(SipParseError):
            CSeq.parse(bad)


def test_auth_header() -> None:
    a = AuthHeader.parse('Digest username="a\\"b", realm="r", algorithm=MD5, qop=auth, nc=00000001')
    assert a.scheme == "Digest" and a.params["username"] == 'a"b' and a.params["nc"] == "00000001"
    b = AuthHeader.parse(str(a))
    assert b.params == a.params
    assert AuthHeader.parse("Unknown opaque-data=here").params == {"opaque-data": "here"}
    for bad in ("", 'Digest username="x', "Digest =x", "Digest a b"):
        with pytest.raises(SipParseError):
            AuthHeader.parse(bad)


def test_date() -> None:
    assert parse_date("Sat, 13 Nov 2010 23:29:00 GMT") == datetime(2010, 11, 13, 23, 29, tzinfo=UTC)
    for bad in ("Fri, 01 Jan 2010 16:00:00 EST", "Sat, 31 Feb 2010 00:00:00 GMT", "yesterday"):
        with pytest.raises(SipParseError):
            parse_date(bad)


# -- the regex fast paths must agree with the general parsers ------------------

_tok = st.text("abcXYZ019-.!%*_+`'~", min_size=1, max_size=6)
_sp = st.sampled_from(["", " ", "  "])
_hosts = st.sampled_from(
    ["h", "a.example.com", "192.0.2.1", "[2001:db8::1]", "h_x", "bad host", "[::1", "", "[:]", "[ab]"]
)
_ports = st.sampled_from(["", ":5060", ":0", ":65535", ":65536", ":99999", ":", ":12a"])
_params = st.lists(
    st.tuples(_tok, st.one_of(st.none(), _tok, st.sampled_from(['"q v"', "", "a b", "2001:db8::1"]))),
    max_size=3,
).map(lambda ps: "".join(f";{n}" if v is None else f";{n}={v}" for n, v in ps))


def _outcome(fn: object, text: str) -> object:
    try:
        r = fn(text)  # type: ignore[operator]
    except SipParseError:
        return "error"
    return (type(r).__name__, str(r), getattr(r, "params", None), getattr(r, "display", None))


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    st.sampled_from(["SIP/2.0/", "SIP/2.0/ ", "sip/2.0/", "SIP/2.1/"]),
    st.sampled_from(["UDP", "tcp", "x-y", ""]),
    st.sampled_from([" ", "  ", "\t"]),
    _hosts,
    _ports,
    _params,
)
def test_via_fast_path_agrees(proto: str, tr: str, sep: str, host: str, port: str, params: str) -> None:
    text = f"{proto}{tr}{sep}{host}{port}{params}"
    assert _outcome(Via.parse, text) == _outcome(Via._parse, text)


_displays = st.sampled_from(
    ["", '"Alice" ', '"Al\\"ice" ', "Alice ", "Alice Smith ", "Al,ice ", '"x"', "a  b ", '"\x01" ']
)
_uris = st.sampled_from(
    ["sip:a@b", "sips:a@b:5061;lr", "tel:+1", "sip:a@b?x=y", "1x:a", "sip:", "sip:a b", "sip:a,b"]
)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(_displays, st.booleans(), _uris, _sp, _params)
def test_name_addr_fast_path_agrees(display: str, brackets: bool, uri: str, sp: str, params: str) -> None:
    text = f"{display}<{uri}>{sp}{params}" if brackets else f"{uri}{params}"
    assert _outcome(NameAddr.parse, text) == _outcome(NameAddr._parse, text)
