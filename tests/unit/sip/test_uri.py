"""SIP/SIPS/TEL URIs (RFC 3261 §19.1)."""

from __future__ import annotations

from collections.abc import Callable

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from sipexpress.sip.errors import SipParseError
from sipexpress.sip.uri import SipUri, unescape


def test_full() -> None:
    u = SipUri.parse(
        "sips:alice:secret@Example.COM:5061;transport=TCP;lr;maddr=239.1.1.1?subject=hi&priority=urgent"
    )
    assert (u.scheme, u.user, u.password, u.host, u.port) == ("sips", "alice", "secret", "Example.COM", 5061)
    assert u.params == {"transport": "TCP", "lr": None, "maddr": "239.1.1.1"}
    assert u.transport == "tcp" and u.lr and u.maddr == "239.1.1.1" and u.secure
    assert u.headers == {"subject": "hi", "priority": "urgent"}
    assert (
        str(u)
        == "sips:alice:secret@Example.COM:5061;transport=TCP;lr;maddr=239.1.1.1?subject=hi&priority=urgent"
    )


def test_host_only_and_ipv6() -> None:
    u = SipUri.parse("sip:192.0.2.1")
    assert u.user is None and u.host == "192.0.2.1" and u.port is None and u.hostport == "192.0.2.1"
    v = SipUri.parse("sip:bob@[2001:db8::1]:5070;transport=udp")
    assert (v.host, v.port, v.transport) == ("[2001:db8::1]", 5070, "udp")
    assert str(v) == "sip:bob@[2001:db8::1]:5070;transport=udp"


def test_escapes() -> None:
    u = SipUri.parse("sip:%61lice%20b@example.com;n%61me=v%61lue")
    assert u.user == "%61lice%20b" and u.user_unescaped == "alice b"
    assert unescape("v%61lue") == "value"
    assert SipUri.parse("sip:null-%00-null@example.com").user_unescaped == "null-\x00-null"
    assert SipUri.parse("sip:sips%3Auser%40example.com@example.net").user_unescaped == "sips:user@example.com"


def test_user_with_reserved_chars() -> None:
    u = SipUri.parse("sip:user;par=u%40example.net@example.com")
    assert u.user == "user;par=u%40example.net" and u.host == "example.com" and u.params == {}
    w = SipUri.parse("sip:+1-212-555-1212:1234@gateway.com;user=phone")
    assert w.user == "+1-212-555-1212" and w.password == "1234" and w.params == {"user": "phone"}


def test_tel() -> None:
    u = SipUri.parse("tel:+358-555-1234567;postd=pp22")
    assert (u.scheme, u.user, u.host, u.params) == ("tel", "+358-555-1234567", "", {"postd": "pp22"})
    assert str(u) == "tel:+358-555-1234567;postd=pp22"


@pytest.mark.parametrize(
    "text",
    [
        "nobodyKnowsThisScheme:totallyopaquecontent",
        "soap.beep://192.0.2.103:3002",
        "http://www.example.com",
        "isbn:2983792873",
    ],
)
def test_unsupported_scheme_is_416(text: str) -> None:
    with pytest.raises(SipParseError) as ei:
        SipUri.parse(text)
    assert ei.value.status == 416


@pytest.mark.parametrize(
    "text",
    [
        "",
        "sip",
        "sip:",
        "sip:@host",
        "sip:a@",
        "sip:a@b:",
        "sip:a@b:70000",
        "sip:a@b:x",
        "sip:a b@c",
        "sip:a@b c",
        "sip:a@[::1",
        "sip:a@b;",
        "sip:a@b;x=",
        "sip:a@b?x",
        "sip:%zz@b",
        "sip:a@b;p=%4",
        "<sip:a@b>",
        "1:x",
        "sip:a@b;;lr",
    ],
)
def test_invalid(text: str) -> None:
    with pytest.raises(SipParseError) as ei:
        SipUri.parse(text)
    assert ei.value.status == 400


@pytest.mark.parametrize(
    "a,b,equal",
    [
        ("sip:%61lice@atlanta.com;transport=TCP", "sip:alice@AtLanTa.CoM;Transport=tcp", True),
        ("sip:carol@chicago.com", "sip:carol@chicago.com;newparam=5", True),
        ("sip:carol@chicago.com;security=on", "sip:carol@chicago.com;newparam=5", True),
        (
            "sip:biloxi.com;transport=tcp;method=REGISTER?to=sip:bob%40biloxi.com",
            "sip:biloxi.com;method=REGISTER;transport=tcp?to=sip:bob%40biloxi.com",
            True,
        ),
        (
            "sip:alice@atlanta.com?subject=project%20x&priority=urgent",
            "sip:alice@atlanta.com?priority=urgent&subject=project%20x",
            True,
        ),
        ("SIP:ALICE@AtLanTa.CoM;Transport=udp", "sip:alice@AtLanTa.CoM;Transport=UDP", False),
        ("sip:bob@biloxi.com", "sip:bob@biloxi.com:5060", False),
        ("sip:bob@biloxi.com", "sip:bob@biloxi.com;transport=udp", False),
        ("sip:carol@chicago.com", "sip:carol@chicago.com?Subject=next%20meeting", False),
        ("sip:bob@phone21.boxesbybob.com", "sip:bob@192.0.2.4", False),
        ("sip:carol@chicago.com;security=on", "sip:carol@chicago.com;security=off", False),
    ],
)
def test_rfc3261_comparison(a: str, b: str, equal: bool) -> None:
    # RFC 3261 §19.1.4 examples
    assert SipUri.parse(a).rfc_equal(SipUri.parse(b)) is equal
    assert SipUri.parse(b).rfc_equal(SipUri.parse(a)) is equal


def test_copy_and_mutate() -> None:
    u = SipUri.parse("sip:a@b;lr")
    c = u.copy()
    c.host = "c"
    c.params["transport"] = "tcp"
    assert str(u) == "sip:a@b;lr" and str(c) == "sip:a@c;lr;transport=tcp"


# -- the fast path must agree with the general parser --------------------------

_users = st.sampled_from(["", "alice@", "a%41@", "a:pw@", "a;b=c?d@", "@", "a b@", "+1-212@"])
_hosts = st.sampled_from(
    ["example.com", "192.0.2.1", "[2001:db8::1]", "[a]", "[::1", "h_x", "", "bad host", "ex%41"]
)
_ports = st.sampled_from(["", ":5060", ":0", ":65535", ":65536", ":99999", ":", ":1a"])
_uparams = st.lists(
    st.tuples(
        st.sampled_from(["lr", "transport", "maddr", "X", "a%41", "", "a b", "[x]"]),
        st.one_of(st.none(), st.sampled_from(["udp", "TCP", "239.0.0.1", "", "[::1]", "%4", "a=b"])),
    ),
    max_size=3,
).map(lambda ps: "".join(f";{n}" if v is None else f";{n}={v}" for n, v in ps))


def _outcome(fn: Callable[[str], SipUri], text: str) -> object:
    try:
        u = fn(text)
    except SipParseError as e:
        return ("error", e.status)
    return (u.scheme, u.user, u.password, u.host, u.port, u.params, u.headers, str(u))


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.sampled_from(["sip:", "sips:", "SIP:", "tel:"]), _users, _hosts, _ports, _uparams,
       st.sampled_from(["", "?x=y", "?"]))  # fmt: skip
def test_fast_path_agrees(scheme: str, user: str, host: str, port: str, params: str, headers: str) -> None:
    text = f"{scheme}{user}{host}{port}{params}{headers}"
    assert _outcome(SipUri.parse, text) == _outcome(SipUri._parse, text)
