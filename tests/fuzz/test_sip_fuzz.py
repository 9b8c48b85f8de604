"""Property tests: mutated real messages never raise anything but
SipParseError -- from parse(), from any accessor, from validate(), from the
modification API or from StreamFramer (the h11 invariant: "either parse it,
or raise the protocol error")."""

from __future__ import annotations

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from sipexpress.sip.errors import SipParseError
from sipexpress.sip.message import SipMessage, StreamFramer
from tests.fuzz.targets import exercise, only_parse_errors, sip_message
from tests.support import RFC4475

INVITE = (
    b"INVITE sip:bob@biloxi.example.com;transport=udp SIP/2.0\r\n"
    b"Via: SIP/2.0/UDP pc33.atlanta.example.com:5060;branch=z9hG4bK776asdhds;rport\r\n"
    b"Via: SIP/2.0/TCP [2001:db8::1]:5070;branch=z9hG4bKa, SIP/2.0/UDP h;received=192.0.2.1\r\n"
    b"Max-Forwards: 70\r\n"
    b'To: "Bob" <sip:bob@biloxi.example.com>\r\n'
    b'From: "Alice" <sip:alice@atlanta.example.com>;tag=1928301774\r\n'
    b"Call-ID: a84b4c76e66710@pc33.atlanta.example.com\r\n"
    b"CSeq: 314159 INVITE\r\n"
    b"Contact: <sip:alice@pc33.atlanta.example.com>;expires=30;q=0.7\r\n"
    b"Route: <sip:p1.example.com;lr>, <sip:p2.example.com;lr>\r\n"
    b"Record-Route: <sip:rr.example.com;lr>\r\n"
    b'Authorization: Digest username="alice", realm="atlanta.example.com", nonce="abc", '
    b'uri="sip:bob@biloxi.example.com", response="0123456789abcdef"\r\n'
    b"Expires: 60\r\n"
    b"Date: Sat, 13 Nov 2010 23:29:00 GMT\r\n"
    b"Subject: folded\r\n value\r\n"
    b"Content-Type: application/sdp\r\n"
    b"Content-Length: 23\r\n"
    b"\r\n"
    b"v=0\r\no=- 1 1 IN IP4 x\r\n"
)
assert (
    INVITE.endswith(b"\r\n\r\n" + b"v=0\r\no=- 1 1 IN IP4 x\r\n")
    and len(b"v=0\r\no=- 1 1 IN IP4 x\r\n") == 23
)
REPLY = (
    b"SIP/2.0 200 OK\r\n"
    b"v: SIP/2.0/UDP 192.0.2.1;branch=z9hG4bK1;received=192.0.2.9;rport=5060\r\n"
    b"f: <sip:a@b>;tag=1\r\nt: <sip:c@d>;tag=2\r\ni: x@y\r\nCSeq: 1 OPTIONS\r\n"
    b"m: *\r\nl: 0\r\n\r\n"
)
SEEDS = [INVITE, REPLY] + [p.read_bytes() for p in sorted(RFC4475.glob("*.dat"))]

SPECIAL = [b":", b",", b";", b'"', b"<", b">", b"\\", b"\r\n", b"\r\n ", b" ", b"\t", b"\x00", b"%", b"=", b"@",
           b"[", b"]", b"/", b"?", b"\xff", b"\r\n\r\n", b"SIP/2.0", b"9999999999999999999999"]  # fmt: skip


@st.composite
def mutated(draw: st.DrawFn) -> bytes:
    data = bytearray(draw(st.sampled_from(SEEDS)))
    for _ in range(draw(st.integers(1, 4))):
        kind = draw(
            st.sampled_from(["flip", "truncate", "insert", "special", "dupline", "delline", "delete"])
        )
        n = len(data)
        pos = draw(st.integers(0, max(n - 1, 0)))
        if kind == "flip" and n:
            data[pos] = draw(st.integers(0, 255))
        elif kind == "truncate":
            del data[pos:]
        elif kind == "insert":
            data[pos:pos] = draw(st.binary(min_size=1, max_size=8))
        elif kind == "special":
            data[pos:pos] = draw(st.sampled_from(SPECIAL))
        elif kind == "delete":
            del data[pos : pos + draw(st.integers(1, 20))]
        else:
            lines = bytes(data).split(b"\r\n")
            i = draw(st.integers(0, max(len(lines) - 1, 0)))
            if kind == "dupline":
                lines.insert(i, lines[i])
            elif len(lines) > 1:
                del lines[i]
            data = bytearray(b"\r\n".join(lines))
    return bytes(data)


@settings(max_examples=600, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(mutated())
def test_mutated_messages_raise_only_sip_parse_error(data: bytes) -> None:
    sip_message(data)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.binary(max_size=300))
def test_random_bytes(data: bytes) -> None:
    try:
        m = SipMessage.parse(data)
    except SipParseError:
        return
    exercise(m)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(mutated(), min_size=1, max_size=3), st.integers(1, 64))
def test_stream_framer(msgs: list[bytes], chunk: int) -> None:
    stream = b"".join(msgs)
    f = StreamFramer(max_size=8192)
    try:
        for i in range(0, len(stream), chunk):
            for frame in f.feed(stream[i : i + chunk]):
                assert frame and len(frame) <= 8192
                only_parse_errors(lambda frame=frame: SipMessage.parse(frame))  # type: ignore[misc]
    except SipParseError as e:
        assert e.reason


def test_framer_recovers_valid_stream() -> None:
    msgs = [INVITE, REPLY, INVITE]
    f = StreamFramer()
    assert f.feed(b"".join(msgs)) == msgs
