"""``SipMessage.validate``'s quick check: it may only prove validity, never
change the outcome.  Every message must validate (or fail, with the same
reason) exactly as the full check alone does, and the typed values the
quick check caches must equal the parsers' own."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from sipexpress.sip.errors import SipParseError
from sipexpress.sip.headers import (
    Contact,
    NameAddr,
    Via,
    contact_from_line,
    name_addr_from_line,
    via_from_line,
)
from sipexpress.sip.message import SipMessage
from tests.support import RFC4475


def _full_only(msg: SipMessage) -> None:
    """``validate()`` with the quick check switched off."""
    msg._full_check(False)


def _validate(check: Callable[[SipMessage], None], data: bytes) -> tuple[str, object]:
    try:
        check(SipMessage.parse(data))
    except SipParseError as e:
        return ("error", (e.status, e.reason))
    return ("ok", None)


def _typed(msg: SipMessage) -> tuple[str, str, object, str, str]:
    return (str(msg.via1), str(msg.to), msg.to.params, str(msg.cseq), str(msg.from_))


def _same_outcome(data: bytes) -> None:
    fast = _validate(SipMessage.validate, data)
    full = _validate(_full_only, data)
    assert fast == full, data
    if fast[0] == "ok":
        m = SipMessage.parse(data)
        m.validate()
        f = SipMessage.parse(data)
        _full_only(f)
        assert _typed(m) == _typed(f)


@pytest.mark.parametrize("path", sorted(Path(RFC4475).glob("*.dat")), ids=lambda p: p.stem)
def test_rfc4475_outcomes_unchanged(path: Path) -> None:
    _same_outcome(path.read_bytes())


_tok = st.text("abcXYZ019-.!%*_+`'~", min_size=1, max_size=5)
_params = st.lists(
    st.tuples(_tok, st.one_of(st.none(), _tok, st.sampled_from(['"q v"', "", "a b", "x;y"]))),
    max_size=2,
).map(lambda ps: "".join(f";{n}" if v is None else f";{n}={v}" for n, v in ps))
_blank = st.sampled_from(["", " ", "  ", "\t"])
_display = st.sampled_from(["", '"Alice" ', '"Al\\"ice" ', "Alice ", "Al,ice ", '"x"', "Zoë ", '"\x01" '])
_uri = st.sampled_from(
    ["sip:a@b", "sips:a@b:5061;lr", "tel:+1", "sip:a@b?x=y", "sip:", "sip:a b", "sip:zoë@b"]
)
_name_addr = st.builds(
    lambda d, br, u, p: f"{d}<{u}>{p}" if br else f"{u}{p}", _display, st.booleans(), _uri, _params
)
_via = st.builds(
    lambda proto, tr, host, port, p: f"{proto}{tr} {host}{port}{p}",
    st.sampled_from(["SIP/2.0/", "sip/2.0/", "SIP/2.1/"]),
    st.sampled_from(["UDP", "tcp", ""]),
    st.sampled_from(["h", "192.0.2.1", "[2001:db8::1]", "bad host", "[::1"]),
    st.sampled_from(["", ":5060", ":65536", ":"]),
    _params,
)


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(_blank, _via, _blank)
def test_via_from_line_agrees(lead: str, text: str, trail: str) -> None:
    line = f"Via:{lead}{text}{trail}".encode()
    v = via_from_line(line, 4)
    if v is not None:
        ref = Via.parse(text)
        assert (str(v), v.params, v.port) == (str(ref), ref.params, ref.port)


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(_blank, _name_addr, _blank)
def test_name_addr_from_line_agrees(lead: str, text: str, trail: str) -> None:
    line = f"To:{lead}{text}{trail}".encode()
    na = name_addr_from_line(line, 3)
    if na is not None:
        ref = NameAddr.parse(text)
        assert (na.display, na.uri, na.params) == (ref.display, ref.uri, ref.params)
    c = contact_from_line(line, 3)
    assert (c is None) == (na is None)
    if c is not None:
        cref = Contact.parse(text)
        assert type(c) is type(cref) is Contact
        assert (c.display, c.uri, c.params) == (cref.display, cref.uri, cref.params)


@pytest.mark.parametrize(
    "value",
    ["<sip:a@b>;expires=60", "<sip:a@b>, <sip:c@d>", "*", "sip:a@b;q=0.5", '"x,y" <sip:a@b>', "<sip:a,b@c>"],
)
def test_contacts_fast_path_agrees(value: str) -> None:
    data = f"REGISTER sip:h SIP/2.0\r\nContact: {value}\r\n\r\n".encode()
    fast = SipMessage.parse(data).contacts
    split = [Contact.parse(v) for v in value.split(", ")] if value != "*" else []
    assert [(c.display, c.uri, c.params) for c in fast] == [(c.display, c.uri, c.params) for c in split]
    assert fast.star == (value == "*")


_good = {
    "Via": st.sampled_from(["SIP/2.0/UDP 192.0.2.1:5060;branch=z9hG4bK1", "SIP/2.0/TCP h;rport;branch=x"]),
    "From": st.sampled_from(
        ["<sip:a@b>;tag=1", '"A" <sip:a@b>;tag=2', "sip:a@b;tag=3", "Bob <sips:b@c>;tag=4"]
    ),
    "To": st.sampled_from(["<sip:a@b>", '"A" <sip:a@b>;tag=x', "sip:a@b", "Bob <sips:b@c:5061>;x=y"]),
    "Call-ID": st.sampled_from(["abc@h", "x"]),
    "Max-Forwards": st.sampled_from(["70", "0"]),
    "Content-Length": st.sampled_from(["0", "5"]),
}
#: one field made bad (or odd but valid) at a time, so a wrong verdict on
#: that field is not hidden behind another error
_faults = st.one_of(
    st.just(("", "")),
    st.tuples(st.just("Via"), _via),
    st.tuples(st.sampled_from(["From", "To"]), _name_addr),
    st.tuples(st.just("Call-ID"), st.sampled_from(["a b", "", "a\tb", 'x;y="z"', "a@b "])),
    st.tuples(
        st.just("CSeq"),
        st.sampled_from(
            [
                "4294967295 {m}",
                "4294967296 {m}",
                "1  {m}",
                "x {m}",
                "1 OPTIONS",
                "1",
                "01 {m}",
                "1{m}",
                "1 {m}@",
                "1\t{m}",
            ]
        ),
    ),
    st.tuples(st.just("Max-Forwards"), st.sampled_from(["255", "256", "0070", "-1", "7 0", ""])),
    st.tuples(st.just("Content-Length"), st.sampled_from(["6", "999999999", "1000000000", "x", "-1", " 5"])),
    st.tuples(
        st.just("ruri"), st.sampled_from(["<sip:s@h>", "sip:s@h?a=b", "tel:+1", "urn:x", "sip:s@h:99999"])
    ),
    st.tuples(
        st.sampled_from(["Via", "From", "To", "Call-ID", "CSeq", "Max-Forwards", "Content-Length"]),
        st.just("DUP"),
    ),
    st.tuples(st.sampled_from(["Via", "From", "To", "Call-ID", "CSeq"]), st.just("MISSING")),
    st.tuples(st.just("Via2"), _via),
)


@settings(max_examples=500, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    st.sampled_from(["OPTIONS", "REGISTER", "INVITE"]),
    st.fixed_dictionaries(_good),
    _faults,
    _blank,
)
def test_quick_check_never_changes_validate(
    method: str, good: dict[str, str], fault: tuple[str, str], blank: str
) -> None:
    ruri = "sip:s@h"
    fields = dict(good, CSeq=f"1 {method}")
    extra: list[tuple[str, str]] = []
    name, value = fault
    if name == "ruri":
        ruri = value
    elif name == "Via2":
        extra.append(("Via", value))
    elif value == "DUP":
        extra.append((name, fields[name]))
    elif value == "MISSING":
        del fields[name]
    elif name:
        fields[name] = value.format(m=method)
    lines = [(n, f"{blank}{v}{blank}") for n, v in fields.items()] + extra
    head = f"{method} {ruri} SIP/2.0\r\n" + "".join(f"{n}: {v}\r\n" for n, v in lines)
    _same_outcome(head.encode() + b"\r\nhello")


def test_everyday_request_takes_the_quick_path() -> None:
    data = (
        b"OPTIONS sip:service@127.0.0.1:5060 SIP/2.0\r\n"
        b"Via: SIP/2.0/UDP 127.0.0.1:6000;branch=z9hG4bK-1-0;rport\r\n"
        b"Max-Forwards: 70\r\n"
        b'From: "Zo\xc3\xab" <sip:sipp@127.0.0.1:6000>;tag=1\r\n'
        b"To: <sip:service@127.0.0.1:5060>\r\n"
        b"Call-ID: 1-2@127.0.0.1\r\n"
        b"CSeq: 1 OPTIONS\r\n"
        b"Content-Length: 0\r\n\r\n"
    )
    msg = SipMessage.parse(data)
    assert msg._quick_check() is True
    assert msg.via1.rport == "" and msg.via1.branch == "z9hG4bK-1-0"
    assert msg.to.tag is None and msg.cseq.num == 1 and msg.from_.display == "Zoë"
    # a mismatching CSeq method is not proven valid; validate() reports it
    bad = SipMessage.parse(data.replace(b"CSeq: 1 OPTIONS", b"CSeq: 1 INVITE"))
    assert bad._quick_check() is False
    with pytest.raises(SipParseError, match="CSeq method"):
        bad.validate()
