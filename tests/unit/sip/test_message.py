"""SipMessage: parsing, header access, modification, serialisation, framing."""

from __future__ import annotations

import pytest

from sipexpress.sip.errors import SipParseError
from sipexpress.sip.message import SipMessage, StreamFramer, build_reply, build_request

SDP = b"v=0\r\no=- 1 1 IN IP4 192.0.2.1\r\ns=-\r\nc=IN IP4 192.0.2.1\r\nt=0 0\r\nm=audio 4000 RTP/AVP 0\r\n"

INVITE = (
    b"INVITE sip:bob@example.com SIP/2.0\r\n"
    b"Via: SIP/2.0/UDP pc33.example.com:5062;branch=z9hG4bK776asdhds;rport\r\n"
    b"v: SIP/2.0/TCP proxy.example.net;branch=z9hG4bKab, SIP/2.0/UDP [2001:db8::1]:5070;branch=z9hG4bKcd"
    b";received=2001:db8::2\r\n"
    b"Max-Forwards: 70\r\n"
    b'To: "Bob" <sip:bob@example.com>\r\n'
    b'f: "Alice, A." <sip:alice@example.com>;tag=1928301774\r\n'
    b"i: a84b4c76e66710@pc33.example.com\r\n"
    b"CSeq: 314159 INVITE\r\n"
    b"Contact: <sip:alice@pc33.example.com>;expires=60, sip:alice@192.0.2.9;q=0.5\r\n"
    b"Route: <sip:p1.example.com;lr>,\r\n <sip:p2.example.com;lr>\r\n"
    b"Subject: lunch\r\n  at noon\r\n"
    b"c: application/sdp\r\n"
    b"l: %d\r\n"
    b"\r\n" % len(SDP)
) + SDP


def parse(data: bytes = INVITE) -> SipMessage:
    return SipMessage.parse(data)


class TestParse:
    def test_request_line(self) -> None:
        m = parse()
        assert m.is_request and not m.is_response
        assert (m.method, m.ruri, m.version) == ("INVITE", "sip:bob@example.com", "SIP/2.0")
        assert m.raw == INVITE
        assert m.first_line == "INVITE sip:bob@example.com SIP/2.0"

    def test_status_line(self) -> None:
        m = parse(b"SIP/2.0 486 Busy Here\r\nVia: SIP/2.0/UDP h;branch=z9hG4bK1\r\nContent-Length: 0\r\n\r\n")
        assert not m.is_request
        assert (m.status, m.reason, m.version, m.method) == (486, "Busy Here", "SIP/2.0", "")

    def test_status_without_reason(self) -> None:
        assert parse(b"SIP/2.0 100\r\nl: 0\r\n\r\n").reason == ""

    @pytest.mark.parametrize(
        "line,status",
        [
            (b"INVITE sip:x@y SIP/2.0 extra", 400),
            (b"INVITE  sip:x@y SIP/2.0", 400),
            (b"INVITE sip:x@y", 400),
            (b"INV(ITE sip:x@y SIP/2.0", 400),
            (b"INVITE sip:x@y SIP/3.0", 505),
            (b"INVITE sip:x@y HTTP/1.1", 400),
            (b"SIP/2.0 99 Low", 400),
            (b"SIP/2.0 1000 High", 400),
            (b"SIP/2.0 abc Text", 400),
            (b"SIP/3.0 200 OK", 505),
        ],
    )
    def test_bad_start_line(self, line: bytes, status: int) -> None:
        with pytest.raises(SipParseError) as ei:
            parse(line + b"\r\nVia: SIP/2.0/UDP h\r\nCall-ID: x\r\n\r\n")
        assert ei.value.status == status
        # the partial message still offers the lines needed for a 400/505 reply
        assert ei.value.msg is not None
        assert ei.value.msg.raw_header_lines("call-id") == [b"Call-ID: x\r\n"]

    def test_lowercase_version_accepted(self) -> None:
        assert parse(b"OPTIONS sip:x sip/2.0\r\nl: 0\r\n\r\n").version == "SIP/2.0"

    @pytest.mark.parametrize("data", [b"", b"INVITE sip:x SIP/2.0", b"INVITE sip:x SIP/2.0\r\nVia: x"])
    def test_incomplete(self, data: bytes) -> None:
        with pytest.raises(SipParseError):
            parse(data)

    def test_leading_crlf_ignored(self) -> None:
        assert parse(b"\r\n\r\n" + INVITE).method == "INVITE"

    def test_bare_lf(self) -> None:
        m = parse(b"OPTIONS sip:x@y SIP/2.0\nVia: SIP/2.0/UDP h;branch=z9hG4bK1\nCall-ID: abc\nl: 2\n\nhi")
        assert m.call_id == "abc"
        assert m.body == b"hi"
        assert m.raw_header_lines("call-id") == [b"Call-ID: abc\n"]

    def test_missing_blank_line_tolerated(self) -> None:
        m = parse(b"OPTIONS sip:x@y SIP/2.0\r\nCall-ID: abc\r\n")
        assert m.call_id == "abc" and m.body == b""

    def test_index_built_on_first_header_access(self) -> None:
        m = parse()
        assert m._keys is None  # parse() only framed the message
        m.header("via")
        assert m._keys is not None and len(m._keys) == 12

    def test_parse_is_lazy(self) -> None:
        # a broken header line is only noticed when headers are used
        m = parse(b"OPTIONS sip:x@y SIP/2.0\r\nno colon here\r\n\r\n")
        with pytest.raises(SipParseError, match="colon"):
            m.header("via")


class TestHeaders:
    def test_case_and_compact(self) -> None:
        m = parse()
        assert m.header("CALL-ID") == m.header("i") == "a84b4c76e66710@pc33.example.com"
        assert m.header("from") == '"Alice, A." <sip:alice@example.com>;tag=1928301774'
        assert m.header("content-type") == "application/sdp"
        assert m.header("X-Nope") is None
        assert m.has_header("Content-Length") and not m.has_header("Expires")

    def test_folding(self) -> None:
        m = parse()
        assert m.header("subject") == "lunch at noon"
        assert m.header_all("route") == ["<sip:p1.example.com;lr>, <sip:p2.example.com;lr>"]

    def test_values_multi(self) -> None:
        m = parse()
        assert m.values("via") == [
            "SIP/2.0/UDP pc33.example.com:5062;branch=z9hG4bK776asdhds;rport",
            "SIP/2.0/TCP proxy.example.net;branch=z9hG4bKab",
            "SIP/2.0/UDP [2001:db8::1]:5070;branch=z9hG4bKcd;received=2001:db8::2",
        ]
        assert len(m.header_all("via")) == 2
        assert m.count("v") == 2
        # comma inside a quoted display name is not a separator
        assert m.values("from") == ['"Alice, A." <sip:alice@example.com>;tag=1928301774']

    def test_names_and_iteration(self) -> None:
        m = parse()
        assert m.header_names()[:3] == ["Via", "v", "Max-Forwards"]
        items = list(m.iter_headers())
        assert items[5] == ("i", "a84b4c76e66710@pc33.example.com")
        assert len(items) == len(m.header_names()) == 12

    def test_raw_header_lines(self) -> None:
        m = parse()
        assert m.raw_header_lines("via") == [
            b"Via: SIP/2.0/UDP pc33.example.com:5062;branch=z9hG4bK776asdhds;rport\r\n",
            b"v: SIP/2.0/TCP proxy.example.net;branch=z9hG4bKab, SIP/2.0/UDP [2001:db8::1]:5070;"
            b"branch=z9hG4bKcd;received=2001:db8::2\r\n",
        ]
        assert m.raw_header_lines("route") == [
            b"Route: <sip:p1.example.com;lr>,\r\n <sip:p2.example.com;lr>\r\n"
        ]
        assert m.raw_header_lines("expires") == []

    def test_non_utf8_value_round_trips(self) -> None:
        m = parse(b"OPTIONS sip:x@y SIP/2.0\r\nX-Bin: a\xffb\r\nl: 0\r\n\r\n")
        v = m.header("x-bin")
        assert v is not None and v.encode("utf-8", "surrogateescape") == b"a\xffb"
        m.insert_header("X-Copy", v)
        assert b"X-Copy: a\xffb\r\n" in m.serialize()


class TestTyped:
    def test_vias(self) -> None:
        m = parse()
        v = m.via1
        assert (v.transport, v.host, v.port, v.branch, v.rport) == (
            "UDP",
            "pc33.example.com",
            5062,
            "z9hG4bK776asdhds",
            "",
        )
        vs = m.vias
        assert [x.host for x in vs] == ["pc33.example.com", "proxy.example.net", "[2001:db8::1]"]
        assert vs[1].rport is None and vs[2].received == "2001:db8::2" and vs[2].port == 5070

    def test_from_to(self) -> None:
        m = parse()
        assert m.from_.display == "Alice, A." and m.from_.tag == "1928301774"
        assert m.from_.uri == "sip:alice@example.com"
        assert m.to.tag is None and m.to.display == "Bob"

    def test_scalars(self) -> None:
        m = parse()
        assert m.call_id == "a84b4c76e66710@pc33.example.com"
        assert (m.cseq.num, m.cseq.method) == (314159, "INVITE")
        assert m.max_forwards == 70
        assert m.content_length == len(SDP)
        assert m.expires is None
        assert m.body == SDP
        assert m.content_type == "application/sdp"

    def test_contacts_routes(self) -> None:
        m = parse()
        cs = m.contacts
        assert [c.uri for c in cs] == ["sip:alice@pc33.example.com", "sip:alice@192.0.2.9"]
        assert cs[0].expires == 60 and cs[1].q == 0.5 and not cs.star and not m.contact_star
        assert [r.uri for r in m.routes] == ["sip:p1.example.com;lr", "sip:p2.example.com;lr"]
        assert m.record_routes == []

    def test_contact_star(self) -> None:
        m = parse(b"REGISTER sip:x SIP/2.0\r\nContact: *\r\nExpires: 0\r\nl: 0\r\n\r\n")
        assert m.contact_star and list(m.contacts) == [] and m.expires == 0

    def test_contact_star_mixed(self) -> None:
        m = parse(b"REGISTER sip:x SIP/2.0\r\nContact: *, <sip:a@b>\r\nl: 0\r\n\r\n")
        with pytest.raises(SipParseError):
            m.contacts  # noqa: B018

    def test_parsed_ruri(self) -> None:
        u = parse().parsed_ruri
        assert (u.scheme, u.user, u.host) == ("sip", "bob", "example.com")

    def test_missing_required(self) -> None:
        m = parse(b"OPTIONS sip:x@y SIP/2.0\r\nl: 0\r\n\r\n")
        for attr in ("via1", "from_", "to", "call_id", "cseq"):
            with pytest.raises(SipParseError, match="missing"):
                getattr(m, attr)
        assert m.max_forwards is None and m.content_length == 0 and m.vias == []

    @pytest.mark.parametrize(
        "header,attr",
        [
            (b"Max-Forwards: 256", "max_forwards"),
            (b"Max-Forwards: -1", "max_forwards"),
            (b"CSeq: 1", "cseq"),
            (b"CSeq: x INVITE", "cseq"),
            (b"CSeq: 99999999999 INVITE", "cseq"),
            (b"Expires: soon", "expires"),
            (b"Via: SIP/2.0/UDP", "via1"),
            (b"Via: SIP/2.0/UDP host:99999", "via1"),
            (b"Via: SIP/2.0/UDP host;;", "vias"),
            (b"From: <sip:a@b", "from_"),
            (b"To: a b <sip:a@b> junk", "to"),
            (b"Call-ID: a b", "call_id"),
            (b"Date: yesterday", "date"),
            (b"Contact: <sip:a@b>;;", "contacts"),
            (b"Route: sip:a@b, <junk", "routes"),
        ],
    )
    def test_malformed_value(self, header: bytes, attr: str) -> None:
        m = parse(b"OPTIONS sip:x@y SIP/2.0\r\n" + header + b"\r\nl: 0\r\n\r\n")
        with pytest.raises(SipParseError):
            getattr(m, attr)

    def test_body_beyond_content_length_ignored(self) -> None:
        m = parse(b"MESSAGE sip:x@y SIP/2.0\r\nl: 2\r\n\r\nhi there")
        assert m.body == b"hi"

    def test_body_shorter_than_content_length(self) -> None:
        m = parse(b"MESSAGE sip:x@y SIP/2.0\r\nl: 20\r\n\r\nhi")
        with pytest.raises(SipParseError, match="Content-Length"):
            m.body  # noqa: B018

    def test_body_without_content_length(self) -> None:
        assert parse(b"MESSAGE sip:x@y SIP/2.0\r\nVia: x\r\n\r\nrest").body == b"rest"

    def test_authorization(self) -> None:
        m = parse(
            b"REGISTER sip:x SIP/2.0\r\n"
            b'Authorization: Digest username="bob", realm="a.com", nonce="n,1", uri="sip:x", '
            b'response="0123", qop=auth, nc=00000001, cnonce="c"\r\n'
            b'WWW-Authenticate: Digest realm="a.com", nonce="xyz", qop="auth,auth-int", stale=FALSE\r\n'
            b"l: 0\r\n\r\n"
        )
        (cred,) = m.authorization
        assert cred.scheme == "Digest" and cred.is_digest
        assert cred.params == {
            "username": "bob",
            "realm": "a.com",
            "nonce": "n,1",
            "uri": "sip:x",
            "response": "0123",
            "qop": "auth",
            "nc": "00000001",
            "cnonce": "c",
        }
        (ch,) = m.www_authenticate
        assert ch.params["qop"] == "auth,auth-int" and ch.params["stale"] == "FALSE"
        assert m.proxy_authorization == [] and m.proxy_authenticate == []


class TestModify:
    def test_unmodified_round_trip(self) -> None:
        m = parse()
        m.via1, m.vias, m.contacts, m.body  # noqa: B018
        assert m.serialize() is INVITE

    def test_proxy_edits(self) -> None:
        m = parse()
        m.set_ruri("sip:bob@192.0.2.4:5060")
        m.add_via("SIP/2.0/UDP 192.0.2.1;branch=z9hG4bKnew")
        m.replace_header("Max-Forwards", str((m.max_forwards or 70) - 1))
        out = m.serialize()
        assert out.startswith(
            b"INVITE sip:bob@192.0.2.4:5060 SIP/2.0\r\n"
            b"Via: SIP/2.0/UDP 192.0.2.1;branch=z9hG4bKnew\r\n"
            b"Via: SIP/2.0/UDP pc33.example.com:5062;branch=z9hG4bK776asdhds;rport\r\n"
        )
        assert b"\r\nMax-Forwards: 69\r\n" in out and b"Max-Forwards: 70" not in out
        # every other byte as received
        assert out.endswith(INVITE[INVITE.index(b"To: ") :])
        m2 = SipMessage.parse(out)
        assert m2.ruri == "sip:bob@192.0.2.4:5060" and m2.via1.branch == "z9hG4bKnew"
        assert m2.max_forwards == 69 and m2.body == SDP and len(m2.vias) == 4
        # accessors reflect the edits without reparsing
        assert m.via1.branch == "z9hG4bKnew" and m.max_forwards == 69 and m.ruri == m2.ruri
        assert m.parsed_ruri.host == "192.0.2.4"

    def test_remove_top_via(self) -> None:
        m = parse()
        m.remove_top_via()
        assert m.via1.host == "proxy.example.net"
        m.remove_top_via()  # first value of a multi-value field
        assert m.via1.host == "[2001:db8::1]"
        assert m.header_names()[0] == "Via"
        m.remove_top_via()
        assert m.vias == [] and not m.has_header("via")
        with pytest.raises(SipParseError):
            m.remove_top_via()

    def test_set_top_via(self) -> None:
        m = parse()
        m.remove_top_via()
        m.set_top_via("SIP/2.0/UDP new.example.com;branch=z9hG4bKx")
        assert [v.host for v in m.vias] == ["new.example.com", "[2001:db8::1]"]

    def test_insert_remove_replace(self) -> None:
        m = parse()
        m.insert_header("X-Top", "1")
        m.insert_header("X-Bottom", "2", first=False)
        m.append_header_raw("P-A: a\r\nP-B: b\r\n  folded\r\n")
        names = m.header_names()
        assert names[0] == "X-Top" and names[-3:] == ["X-Bottom", "P-A", "P-B"]
        assert m.header("p-b") == "b folded"
        assert m.remove_header("via") == 2 and m.vias == []
        assert m.remove_first("contact") and not m.remove_first("contact")
        m.replace_header("Subject", "dinner")
        assert m.header_all("subject") == ["dinner"]
        m.replace_header("X-New", "v")
        assert m.header("x-new") == "v"
        out = SipMessage.parse(m.serialize())
        assert out.header("x-top") == "1" and out.header("p-b") == "b folded" and out.body == SDP

    def test_replace_removes_duplicates(self) -> None:
        m = parse(b"OPTIONS sip:x@y SIP/2.0\r\nA: 1\r\nB: x\r\nA: 2\r\nA: 3\r\nl: 0\r\n\r\n")
        m.replace_header("a", "9")
        assert m.serialize() == b"OPTIONS sip:x@y SIP/2.0\r\na: 9\r\nB: x\r\nl: 0\r\n\r\n"

    def test_set_body(self) -> None:
        m = parse()
        m.set_body(b"hello", "text/plain")
        m2 = SipMessage.parse(m.serialize())
        assert m2.body == b"hello" and m2.content_type == "text/plain" and m2.content_length == 5
        assert m.body == b"hello" and m.content_length == 5

    def test_ensure_content_length(self) -> None:
        m = parse(b"MESSAGE sip:x@y SIP/2.0\r\nVia: x\r\n\r\nbody")
        m.ensure_content_length()
        assert m.serialize() == b"MESSAGE sip:x@y SIP/2.0\r\nVia: x\r\nContent-Length: 4\r\n\r\nbody"

    def test_trailing_bytes_dropped_when_modified(self) -> None:
        m = parse(b"MESSAGE sip:x@y SIP/2.0\r\nl: 2\r\n\r\nhiJUNK")
        m.insert_header("X", "1")
        assert m.serialize() == b"MESSAGE sip:x@y SIP/2.0\r\nX: 1\r\nl: 2\r\n\r\nhi"

    def test_edits_drop_only_affected_cached_values(self) -> None:
        m = parse()
        fr, cs, via = m.from_, m.cseq, m.via1
        m.set_top_via("SIP/2.0/UDP 192.0.2.77;branch=z9hG4bKq;received=1.2.3.4")
        assert m.from_ is fr and m.cseq is cs  # still cached
        assert m.via1 is not via and m.via1.received == "1.2.3.4"
        m.replace_header("From", "<sip:new@example.com>;tag=9")
        assert m.from_.tag == "9" and m.cseq is cs
        m.append_header_raw("Contact: <sip:z@z>\r\n")
        assert [c.uri for c in m.contacts][-1] == "sip:z@z"

    def test_copy_is_independent(self) -> None:
        m = parse()
        c = m.copy()
        c.add_via("SIP/2.0/UDP c;branch=z9hG4bKc")
        c.set_ruri("sip:c@c")
        assert m.serialize() is INVITE and m.ruri == "sip:bob@example.com"
        assert c.via1.host == "c"


def test_header_groups_follow_edits() -> None:
    """``raw_header_groups`` positions come from a layout shared by messages
    with the same header names; an edit must not leave it stale."""
    data = (
        b"OPTIONS sip:a@b SIP/2.0\r\nVia: SIP/2.0/UDP h\r\nv: SIP/2.0/UDP i\r\nFrom: <sip:a@b>;tag=1\r\n"
        b"To: <sip:c@d>\r\nCall-ID: x\r\nCSeq: 1 OPTIONS\r\n\r\n"
    )
    m = SipMessage.parse(data)
    assert m.raw_header_groups(["via", "to", "route"]) == [
        [b"Via: SIP/2.0/UDP h\r\n", b"v: SIP/2.0/UDP i\r\n"],
        [b"To: <sip:c@d>\r\n"],
        [],
    ]
    m.add_via("SIP/2.0/UDP new")
    m.remove_header("To")
    assert m.raw_header_groups(("via", "to")) == [
        [b"Via: SIP/2.0/UDP new\r\n", b"Via: SIP/2.0/UDP h\r\n", b"v: SIP/2.0/UDP i\r\n"],
        [],
    ]
    # another message with the original layout still sees its own fields
    assert SipMessage.parse(data).raw_header_groups(("to",)) == [[b"To: <sip:c@d>\r\n"]]


class TestSerializeWithVia:
    """``serialize_with_via`` gives what add_via + serialize gives, and
    leaves the message as it was."""

    @pytest.mark.parametrize(
        "data",
        [
            INVITE,
            INVITE.replace(b"\r\n", b"\n"),  # bare LF line ends
            b"OPTIONS sip:x@y SIP/2.0\r\nMax-Forwards: 5\r\nv: SIP/2.0/UDP a;branch=z9hG4bK1\r\n"
            b"Via: SIP/2.0/TCP b\r\nl: 0\r\n\r\n",  # Vias below another field, compact form
            b"OPTIONS sip:x@y SIP/2.0\r\nX: 1\r\n  folded\r\nVia: SIP/2.0/UDP a\r\nl: 0\r\n\r\n",
            b"OPTIONS sip:x@y SIP/2.0\r\nX: 1\r\nl: 0\r\n\r\n",  # no Via at all
        ],
    )
    @pytest.mark.parametrize("edit", ["none", "ruri", "header", "body"])
    def test_same_as_add_via(self, data: bytes, edit: str) -> None:
        m = SipMessage.parse(data)
        if edit == "ruri":
            m.set_ruri("sip:new@192.0.2.9")
        elif edit == "header":
            m.replace_header("Max-Forwards", "3")
            m.remove_header("X")
        elif edit == "body":
            m.set_body(b"hello")
        before = m.serialize()
        got = m.serialize_with_via("SIP/2.0/UDP 192.0.2.1;branch=z9hG4bKsl")
        assert m.serialize() == before
        m.add_via("SIP/2.0/UDP 192.0.2.1;branch=z9hG4bKsl")
        assert got == m.serialize()
        assert SipMessage.parse(got).via1.branch == "z9hG4bKsl"

    @pytest.mark.parametrize("edit", ["none", "ruri", "header"])
    def test_with_request_uri(self, edit: str) -> None:
        m = SipMessage.parse(INVITE)
        if edit == "ruri":
            m.set_ruri("sip:first@192.0.2.9")
        elif edit == "header":
            m.replace_header("Max-Forwards", "3")
        before = m.serialize()
        got = m.serialize_with_via("SIP/2.0/UDP 192.0.2.1;branch=z9hG4bKb1", "sip:bob@192.0.2.7:5070")
        assert m.serialize() == before
        ruri = m.ruri
        m.set_ruri("sip:bob@192.0.2.7:5070")
        m.add_via("SIP/2.0/UDP 192.0.2.1;branch=z9hG4bKb1")
        assert got == m.serialize()
        # the same URI as the message's: as without one
        m2 = SipMessage.parse(INVITE)
        assert m2.serialize_with_via("SIP/2.0/UDP x", m2.ruri) == m2.serialize_with_via("SIP/2.0/UDP x")
        assert ruri != "sip:bob@192.0.2.7:5070"


class TestBuild:
    def test_build_reply(self) -> None:
        m = parse()
        out = build_reply(m, 200, "OK", to_tag="abc", headers=["Server: t"], received="192.0.2.7", rport=5062)
        r = SipMessage.parse(out)
        assert (r.status, r.reason) == (200, "OK")
        assert r.via1.received == "192.0.2.7" and r.via1.rport == "5062"
        assert len(r.vias) == 3 and r.vias[1].host == "proxy.example.net"
        assert r.to.tag == "abc" and r.from_.tag == "1928301774"
        assert r.call_id == m.call_id and r.cseq == m.cseq
        assert r.header("server") == "t" and r.content_length == 0
        r.validate()

    def test_build_reply_keeps_existing_tag_and_100(self) -> None:
        m = parse(
            b"BYE sip:x@y SIP/2.0\r\nVia: SIP/2.0/UDP h;branch=z9hG4bK1\r\nFrom: <sip:a@b>;tag=1\r\n"
            b"To: <sip:c@d>;tag=2\r\nCall-ID: c\r\nCSeq: 2 BYE\r\nl: 0\r\n\r\n"
        )
        assert b"To: <sip:c@d>;tag=2\r\n" in build_reply(m, 200, "OK", to_tag="zzz")
        m2 = parse(INVITE)
        assert b'To: "Bob" <sip:bob@example.com>\r\n' in build_reply(m2, 100, "Trying", to_tag="zzz")

    def test_build_request(self) -> None:
        m = build_request(
            "MESSAGE",
            "sip:bob@example.com",
            [
                ("Via", "SIP/2.0/UDP h;branch=z9hG4bK1"),
                ("From", "<sip:a@b>;tag=1"),
                ("To", "<sip:bob@example.com>"),
                ("Call-ID", "x"),
                ("CSeq", "1 MESSAGE"),
                ("Max-Forwards", "70"),
            ],
            body=b"hi",
            content_type="text/plain",
        )
        m.validate()
        assert m.body == b"hi" and m.content_type == "text/plain" and m.cseq.method == "MESSAGE"


class TestStreamFramer:
    def test_split_and_partial(self) -> None:
        f = StreamFramer()
        stream = b"\r\n\r\n" + INVITE + INVITE
        out: list[bytes] = []
        for i in range(0, len(stream), 7):
            out += f.feed(stream[i : i + 7])
        assert out == [INVITE, INVITE] and f.buffered == 0 and f.keepalives == 1

    def test_many_in_one_chunk(self) -> None:
        msg = b"OPTIONS sip:x SIP/2.0\r\nContent-Length:   3\r\n\r\nabc"
        assert StreamFramer().feed(msg * 3 + msg[:10]) == [msg] * 3

    def test_compact_content_length(self) -> None:
        msg = b"OPTIONS sip:x SIP/2.0\r\nL : 0\r\n\r\n"
        assert StreamFramer().feed(msg) == [msg]

    @pytest.mark.parametrize(
        "msg,status",
        [
            (b"OPTIONS sip:x SIP/2.0\r\nVia: x\r\n\r\n", 400),
            (b"OPTIONS sip:x SIP/2.0\r\nContent-Length: -1\r\n\r\n", 400),
            (b"OPTIONS sip:x SIP/2.0\r\nContent-Length: 1\r\nl: 2\r\n\r\n", 400),
            (b"OPTIONS sip:x SIP/2.0\r\nContent-Length: 99999\r\n\r\n", 413),
        ],
    )
    def test_errors(self, msg: bytes, status: int) -> None:
        with pytest.raises(SipParseError) as ei:
            StreamFramer(max_size=4096).feed(msg)
        assert ei.value.status == status

    def test_too_large_header(self) -> None:
        f = StreamFramer(max_size=100)
        with pytest.raises(SipParseError) as ei:
            f.feed(b"OPTIONS sip:x SIP/2.0\r\n" + b"X: y\r\n" * 40)
        assert ei.value.status == 413


@pytest.mark.parametrize(
    "via,received,rport,expected",
    [
        (
            "SIP/2.0/UDP h:5060;branch=z9hG4bK1;rport",
            "1.2.3.4",
            7,
            "SIP/2.0/UDP h:5060;branch=z9hG4bK1;rport=7;received=1.2.3.4",
        ),
        ("SIP/2.0/UDP h;rport;branch=z9hG4bK1", None, 7, "SIP/2.0/UDP h;rport=7;branch=z9hG4bK1"),
        ("SIP/2.0/UDP h;branch=z9hG4bK1", "1.2.3.4", 7, "SIP/2.0/UDP h;branch=z9hG4bK1;received=1.2.3.4"),
        ("SIP/2.0/UDP h;branch=z9hG4bK1;rport=5", None, 7, "SIP/2.0/UDP h;branch=z9hG4bK1;rport=5"),
        # not the simple case: rebuilt from the parsed Via
        ("SIP/2.0/UDP h;received=9.9.9.9;rport", "1.2.3.4", 7, "SIP/2.0/UDP h;received=1.2.3.4;rport=7"),
        ("SIP/2.0/UDP h ; rport", "1.2.3.4", 7, "SIP/2.0/UDP h;rport=7;received=1.2.3.4"),
        (
            "SIP/2.0/UDP h;rport, SIP/2.0/UDP g",
            "1.2.3.4",
            7,
            "SIP/2.0/UDP h;rport=7;received=1.2.3.4, SIP/2.0/UDP g",
        ),
    ],
)
def test_build_reply_patches_top_via(via: str, received: str | None, rport: int, expected: str) -> None:
    m = parse(
        f"OPTIONS sip:x@y SIP/2.0\r\nVia: {via}\r\nVia: SIP/2.0/UDP z\r\nFrom: <sip:a@b>;tag=1\r\n"
        f"To: <sip:c@d>\r\nCall-ID: c\r\nCSeq: 1 OPTIONS\r\nl: 0\r\n\r\n".encode()
    )
    r = SipMessage.parse(build_reply(m, 200, "OK", received=received, rport=rport))
    assert r.header_all("via") == [expected, "SIP/2.0/UDP z"]
