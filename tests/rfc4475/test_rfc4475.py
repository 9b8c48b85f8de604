"""RFC 4475 (SIP torture test messages) against the message layer.

Every message is read byte-exact from tests/data/rfc4475.

Where each invalid message is rejected
--------------------------------------
``parse``     ``SipMessage.parse`` raises (framing / start line).  The error
              carries ``.msg`` (a partial message) so a 400/505 can still be
              built from its Via/From/To/Call-ID/CSeq lines.
``validate``  ``msg.validate()`` raises: the headers every proxy relies on.
``strict``    only ``msg.validate(strict=True)`` (and the accessor named)
              raises: Contact / Date -- what a registrar or UA looks at.
``app``       syntactically valid; the RFC wants an application decision
              (416, 420, 483, 415 ...) for which the layer exposes the facts.

=========== ========= ======  =================================================
message     level     status  reason (RFC 4475 section)
=========== ========= ======  =================================================
badinv01    validate  400     Via ``;;,;,,`` empty params/values (3.1.2.1)
clerr       validate  400     Content-Length larger than the body (3.1.2.2)
scalar02    validate  400     CSeq > 2**32-1, Max-Forwards 300 (3.1.2.3)
scalarlg    validate  400     (response) CSeq too large (3.1.2.4)
quotbal     validate  400     unterminated quoted display name in To (3.1.2.5)
ltgtruri    validate  400     Request-URI enclosed in <> (3.1.2.6)
lwsruri     parse     400     whitespace inside the Request-URI (3.1.2.7)
lwsstart    parse     400     several SP in the Request-Line (3.1.2.8)
trws        parse     400     trailing SP after SIP/2.0 (3.1.2.9)
escruri     validate  400     headers in the Request-URI (3.1.2.10)
baddate     strict    400     non-GMT Date (3.1.2.11) -- ``msg.date``
regbadct    strict    400     Contact addr-spec with ``?`` outside <> (3.1.2.12)
badaspec    validate  400     spaces inside <> in To (3.1.2.13)
baddn       validate  400     unquoted display name with a comma in From (3.1.2.14)
badvers     parse     505     SIP/7.0 (3.1.2.15)
mismatch01  validate  400     CSeq method OPTIONS vs INVITE (3.1.2.16)
mismatch02  validate  400     unknown method vs CSeq INVITE (3.1.2.17)
bigcode     parse     400     (response) status code 4294967301 (3.1.2.18)
ncl         validate  400     negative Content-Length (3.1.2.19 in INDEX)
insuf       validate  400     missing To/From/Call-ID/Max-Forwards (3.3.1)
multi01     validate  400     several To/From/Call-ID/CSeq (3.3.10)
mcl01       validate  400     two Content-Length values (3.3.11)
=========== ========= ======  =================================================

Valid messages (3.1.1, 3.2, 3.3 others, 3.4) parse, pass ``validate(strict=
True)`` and round-trip: ``serialize()`` of the unmodified message is the
input, and a modified-then-reverted message re-serialises to the same
semantics.
"""

from __future__ import annotations

import pytest

from sipexpress.sip.errors import SipParseError
from sipexpress.sip.message import SipMessage
from sipexpress.sip.uri import SipUri
from tests.support import RFC4475 as DIR

VALID = [
    # 3.1.1
    "wsinv", "intmeth", "esc01", "escnull", "esc02", "lwsdisp", "longreq", "dblreq", "semiuri", "transports",
    "mpart01", "unreason", "noreason",
    # 3.2
    "badbranch",
    # 3.3 (valid syntax; the application decides)
    "unkscm", "novelsc", "unksm2", "bext01", "invut", "regaut01", "bcast", "zeromf", "cparam01", "cparam02",
    "regescrt", "sdp01",
    # 3.4
    "inv2543",
]  # fmt: skip

# name -> (level, status, substring of the reason)
INVALID: dict[str, tuple[str, int, str]] = {
    "badinv01": ("validate", 400, "Via"),
    "clerr": ("validate", 400, "Content-Length"),
    "scalar02": ("validate", 400, "CSeq"),
    "scalarlg": ("validate", 400, "CSeq"),
    "quotbal": ("validate", 400, "To"),
    "ltgtruri": ("validate", 400, "Request-URI"),
    "lwsruri": ("parse", 400, "Request-Line"),
    "lwsstart": ("parse", 400, "Request-Line"),
    "trws": ("parse", 400, "Request-Line"),
    "escruri": ("validate", 400, "Request-URI"),
    "baddate": ("strict", 400, "Date"),
    "regbadct": ("strict", 400, "Contact"),
    "badaspec": ("validate", 400, "To"),
    "baddn": ("validate", 400, "From"),
    "badvers": ("parse", 505, "Version"),
    "mismatch01": ("validate", 400, "CSeq method"),
    "mismatch02": ("validate", 400, "CSeq method"),
    "bigcode": ("parse", 400, "status code"),
    "ncl": ("validate", 400, "Content-Length"),
    "insuf": ("validate", 400, "missing"),
    "multi01": ("validate", 400, "multiple"),
    "mcl01": ("validate", 400, "Content-Length"),
}


def load(name: str) -> bytes:
    return (DIR / f"{name}.dat").read_bytes()


def test_every_message_is_classified() -> None:
    names = {p.stem for p in DIR.glob("*.dat")}
    assert names == set(VALID) | set(INVALID)
    assert len(names) == 49


@pytest.mark.parametrize("name", VALID)
def test_valid_parses_and_round_trips(name: str) -> None:
    data = load(name)
    m = SipMessage.parse(data)
    m.validate(strict=True)
    assert m.serialize() == data
    # every accessor works
    list(m.iter_headers())
    m.vias, m.from_, m.to, m.call_id, m.cseq, m.max_forwards, m.content_length  # noqa: B018
    m.contacts, m.routes, m.record_routes, m.expires, m.date, m.body, m.authorization  # noqa: B018
    # a modification keeps the rest intact; the result parses to the same values
    m.insert_header("X-Test", "1")
    out = SipMessage.parse(m.serialize())
    assert out.header("x-test") == "1"
    assert out.call_id == m.call_id and out.cseq == m.cseq and out.body == m.body
    assert [str(v) for v in out.vias] == [str(v) for v in m.vias]
    m.remove_header("x-test")
    assert SipMessage.parse(m.serialize()).header_names() == SipMessage.parse(data).header_names()


@pytest.mark.parametrize("name", sorted(INVALID))
def test_invalid_rejected(name: str) -> None:
    level, status, reason = INVALID[name]
    data = load(name)
    if level == "parse":
        with pytest.raises(SipParseError) as ei:
            SipMessage.parse(data)
        if ei.value.msg is not None and ei.value.msg.is_request:
            # enough is known to answer it
            assert ei.value.msg.raw_header_lines("call-id")
            assert ei.value.msg.raw_header_lines("via")
    else:
        m = SipMessage.parse(data)
        assert m.serialize() == data
        if level == "validate":
            with pytest.raises(SipParseError) as ei:
                m.validate()
        else:
            m.validate()  # lenient level accepts it
            with pytest.raises(SipParseError) as ei:
                m.validate(strict=True)
    assert ei.value.status == status
    assert reason in ei.value.reason


# -- details the RFC asks about -------------------------------------------------


def test_wsinv_values() -> None:
    m = SipMessage.parse(load("wsinv"))
    assert m.to.tag == "1918181833n" and m.from_.tag == "98asjd8"
    assert m.from_.display == 'J Rosenberg \\"'
    assert m.max_forwards == 68 and m.cseq.num == 9 and m.cseq.method == "INVITE"
    assert [(v.transport, v.host, v.branch) for v in m.vias] == [
        ("UDP", "192.0.2.2", "390skdjuw"),
        ("TCP", "spindle.example.com", "z9hG4bK9ikj8"),
        ("UDP", "192.168.255.111", "z9hG4bK30239"),
    ]
    assert m.header("NewFangledHeader") == "newfangled value continued newfangled value"
    assert m.header("subject") == ""
    assert m.contacts[0].display == 'Quoted string ""' and m.contacts[0].params["q"] == "0.33"
    assert m.contacts[0].params["newparam"] == "newvalue" and "secondparam" in m.contacts[0].params
    assert m.routes[0].uri == "sip:services.example.com;lr;unknownwith=value;unknown-no-value"
    assert len(m.body) == 150


def test_intmeth_values() -> None:
    m = SipMessage.parse(load("intmeth"))
    assert m.method == "!interesting-Method0123456789_*+`.%indeed'~" == m.cseq.method
    u = m.parsed_ruri
    assert u.user == "1_unusual.URI~(to-be!sure)&isn't+it$/crazy?,/;;*"
    assert u.password == "&it+has=1,weird!*pas$wo~d_too.(doesn't-it)"
    assert m.to.display == "BEL:\x07 NUL:\x00 DEL:\x7f"
    assert m.from_.display == "token1~` token2'+_ token3*%!.-"
    assert m.from_.tag == "_token~1'+`*%!-."
    assert m.call_id == "intmeth.word%ZK-!.*_+'@word`~)(><:\\/\"][?}{"
    assert m.header("extensionHeader-!.%*+_`'~") == "\ufeff大停電"


def test_escapes() -> None:
    m = SipMessage.parse(load("esc01"))
    assert m.parsed_ruri.user_unescaped == "sips:user@example.com"
    assert SipUri.parse(m.to.uri).user_unescaped == "user"
    assert SipUri.parse(m.from_.uri).user_unescaped == "I have spaces"
    assert SipUri.parse(m.contacts[0].uri).params == {"%6c%72": None, "n%61me": "v%61lue%25%34%31"}
    m2 = SipMessage.parse(load("escnull"))
    assert [SipUri.parse(c.uri).user_unescaped for c in m2.contacts] == ["\x00", "\x00\x00"]
    m3 = SipMessage.parse(load("esc02"))
    assert m3.method == "RE%47IST%45R" and m3.to.display == "%Z%45"
    assert len(m3.contacts) == 2 and m3.header("C%6Fntact") == "<sip:alias2@host2.example.com>"


def test_dblreq_only_first_message() -> None:
    m = SipMessage.parse(load("dblreq"))
    assert m.method == "REGISTER" and m.body == b"" and m.content_length == 0


def test_longreq() -> None:
    m = SipMessage.parse(load("longreq"))
    assert len(m.vias) == 34 and m.vias[-1].received == "192.0.2.5"
    assert m.header(
        "unknown-longlonglonglonglonglonglonglonglonglonglonglonglonglonglonglonglonglonglonglong-name"
    )


def test_semiuri_and_transports() -> None:
    u = SipMessage.parse(load("semiuri")).parsed_ruri
    assert u.user == "user;par=u%40example.net" and u.host == "example.com" and u.params == {}
    vs = SipMessage.parse(load("transports")).vias
    assert [v.transport for v in vs] == ["UDP", "SCTP", "TLS", "UNKNOWN", "TCP"]


def test_mpart_binary_body() -> None:
    m = SipMessage.parse(load("mpart01"))
    assert len(m.body) == m.content_length == 553 and m.via1.rport == ""


def test_responses() -> None:
    assert SipMessage.parse(load("noreason")).reason == ""
    r = SipMessage.parse(load("unreason"))
    assert r.status == 200 and r.reason.startswith("= 2**3 * 5**2 но сто")


def test_application_level_facts() -> None:
    # 416: unknown Request-URI scheme
    for name in ("unkscm", "novelsc"):
        with pytest.raises(SipParseError) as ei:
            SipMessage.parse(load(name)).parsed_ruri  # noqa: B018
        assert ei.value.status == 416
    m = SipMessage.parse(load("unksm2"))
    assert m.to.uri == "isbn:2983792873" and m.from_.uri == "http://www.example.com"
    with pytest.raises(SipParseError) as ei:
        SipUri.parse(m.to.uri)
    assert ei.value.status == 416
    # 420: Require / Proxy-Require
    b = SipMessage.parse(load("bext01"))
    assert b.values("require") == ["nothingSupportsThis", "nothingSupportsThisEither"]
    assert b.values("proxy-require") == ["noProxiesSupportThis", "norDoAnyProxiesSupportThis"]
    # 483 vs OPTIONS answered
    assert SipMessage.parse(load("zeromf")).max_forwards == 0
    # unknown auth scheme
    (a,) = SipMessage.parse(load("regaut01")).authorization
    assert a.scheme == "NoOneKnowsThisScheme" and not a.is_digest
    # contact parameters outside / inside <>
    c1 = SipMessage.parse(load("cparam01")).contacts[0]
    assert c1.uri == "sip:+19725552222@gw1.example.net" and "unknownparam" in c1.params
    c2 = SipMessage.parse(load("cparam02")).contacts[0]
    assert c2.params == {} and SipUri.parse(c2.uri).params == {"unknownparam": None}
    # escaped Route header in a Contact URI
    c3 = SipMessage.parse(load("regescrt")).contacts[0]
    assert SipUri.parse(c3.uri).headers == {"Route": "%3Csip:sip.example.com%3E"}
    # RFC 2543 request: no branch, no Max-Forwards, no Content-Length
    old = SipMessage.parse(load("inv2543"))
    assert old.via1.branch is None and old.max_forwards is None and old.content_length is None
    assert old.body.startswith(b"v=0")
    # broadcast Via in a response; badbranch's bare magic cookie
    assert SipMessage.parse(load("bcast")).vias[1].host == "255.255.255.255"
    assert SipMessage.parse(load("badbranch")).via1.branch == "z9hG4bK"
    # content types for 415 decisions
    assert SipMessage.parse(load("invut")).content_type == "application/unknownformat"
    assert SipMessage.parse(load("sdp01")).header("accept") == "text/nobodyKnowsThis"
