"""Micro benchmark of the SIP message layer (plain script).

    python bench/parser_bench.py [seconds-per-case]

Prints messages/second and µs/message for:
  parse      SipMessage.parse() of a typical INVITE with SDP
  route      parse + the route-relevant headers (via1, From/To tags, Call-ID,
             CSeq, Max-Forwards, parsed Request-URI)
  validate   parse + validate()
  proxy      parse + set_ruri + add_via + Max-Forwards decrement + serialize
  reply      parse OPTIONS + validate + build_reply (stateless 200 OK path)
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable

from sipexpress.sip.message import SipMessage, build_reply

INVITE = (
    b"INVITE sip:bob@biloxi.example.com SIP/2.0\r\n"
    b"Via: SIP/2.0/UDP pc33.atlanta.example.com:5060;branch=z9hG4bK776asdhds;rport\r\n"
    b"Max-Forwards: 70\r\n"
    b'To: "Bob" <sip:bob@biloxi.example.com>\r\n'
    b'From: "Alice" <sip:alice@atlanta.example.com>;tag=1928301774\r\n'
    b"Call-ID: a84b4c76e66710@pc33.atlanta.example.com\r\n"
    b"CSeq: 314159 INVITE\r\n"
    b"Contact: <sip:alice@pc33.atlanta.example.com>\r\n"
    b"User-Agent: bench/1.0\r\n"
    b"Allow: INVITE, ACK, CANCEL, OPTIONS, BYE\r\n"
    b"Content-Type: application/sdp\r\n"
    b"Content-Length: %d\r\n"
    b"\r\n"
)
SDP = (
    b"v=0\r\n"
    b"o=alice 2890844526 2890844526 IN IP4 pc33.atlanta.example.com\r\n"
    b"s=-\r\n"
    b"c=IN IP4 192.0.2.101\r\n"
    b"t=0 0\r\n"
    b"m=audio 49172 RTP/AVP 0\r\n"
    b"a=rtpmap:0 PCMU/8000\r\n"
)
INVITE = INVITE % len(SDP) + SDP

OPTIONS = (
    b"OPTIONS sip:127.0.0.1:5060 SIP/2.0\r\n"
    b"Via: SIP/2.0/UDP 127.0.0.1:40000;branch=z9hG4bK1b2c3d4e5f6a7b8c;rport\r\n"
    b"Max-Forwards: 70\r\n"
    b"From: <sip:probe@127.0.0.1>;tag=8a7b6c5d\r\n"
    b"To: <sip:127.0.0.1>\r\n"
    b"Call-ID: 0f1e2d3c4b5a69788796a5b4c3d2e1f0@probe\r\n"
    b"CSeq: 1 OPTIONS\r\n"
    b"Content-Length: 0\r\n\r\n"
)


def case_parse() -> None:
    SipMessage.parse(INVITE)


def case_route() -> None:
    m = SipMessage.parse(INVITE)
    m.via1.branch  # noqa: B018
    m.from_.tag  # noqa: B018
    m.to.tag  # noqa: B018
    m.call_id  # noqa: B018
    m.cseq  # noqa: B018
    m.max_forwards  # noqa: B018
    m.parsed_ruri  # noqa: B018


def case_validate() -> None:
    SipMessage.parse(INVITE).validate()


def case_proxy() -> None:
    m = SipMessage.parse(INVITE)
    m.set_ruri("sip:bob@192.0.2.4:5060")
    m.add_via("SIP/2.0/UDP 192.0.2.1:5060;branch=z9hG4bK0a1b2c3d4e5f")
    mf = m.max_forwards
    m.replace_header("Max-Forwards", str((mf if mf is not None else 70) - 1))
    m.serialize()


def case_reply() -> None:
    m = SipMessage.parse(OPTIONS)
    m.validate()
    build_reply(m, 200, "OK", to_tag="abc123", received="127.0.0.1", rport=40000)


def run(name: str, fn: Callable[[], None], seconds: float) -> None:
    for _ in range(2000):
        fn()
    n = 0
    t0 = time.process_time()
    deadline = t0 + seconds
    while True:
        for _ in range(1000):
            fn()
        n += 1000
        t = time.process_time()
        if t >= deadline:
            break
    dt = t - t0
    print(f"{name:9s} {n / dt:12,.0f} msg/s  {dt / n * 1e6:7.2f} µs/msg")


def main() -> None:
    seconds = float(sys.argv[1]) if len(sys.argv) > 1 else 1.0
    print(f"python {sys.version.split()[0]}, INVITE {len(INVITE)} bytes, CPU time per case {seconds}s")
    for name, fn in (
        ("parse", case_parse),
        ("route", case_route),
        ("validate", case_validate),
        ("proxy", case_proxy),
        ("reply", case_reply),
    ):
        run(name, fn, seconds)


if __name__ == "__main__":
    main()
