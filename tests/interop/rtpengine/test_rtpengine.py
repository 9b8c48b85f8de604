"""The rtpengine module against real rtpengine processes (Debian's
``rtpengine-daemon``, userspace only): SDP rewritten in the INVITE and in
the 200, RTP both ways through rtpengine between a test socket (the
caller's media) and a SIPp callee echoing it (``-rtp_echo``), BYE deleting
the session, failover to a second instance, a 503 when none answers, and
broken SDPs."""

from __future__ import annotations

import re
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from sipexpress.mgmt.client import fifo_request
from sipexpress.modules.rtpengine.ng import NodeSet, parse_sockets
from tests.rtpengine_peer import RtpengineProcess
from tests.support import SIPP_SCENARIOS, SippPhone, free_port, need_tool, udp_exchange, wait_for

pytestmark = pytest.mark.interop

#: rtpengine listens for RTP here: an address none of the phones use, so
#: that a rewritten c= line is told from an original one
RTPE_IP = "127.0.0.3"
FLAGS = "replace-origin replace-session-connection ICE=remove RTP/AVP"

CFG = """
listen=udp:{host}:{port}
fifo="{fifo}"
loadmodule "sl"
loadmodule "tm"
loadmodule "rtpengine"
modparam("rtpengine", "rtpengine_sock", "{socks}")
modparam("rtpengine", "rtpengine_tout_ms", 200)
modparam("rtpengine", "rtpengine_retr", 2)
modparam("rtpengine", "rtpengine_disable_tout", 60)
route {{
    if (method == "OPTIONS") {{ sl_send_reply("200", "OK"); break; }};  # the start-up probe stays here
    if (method == "INVITE") {{
        if (!rtpengine_manage("{flags}")) {{
            sl_send_reply("503", "Media Relay Unavailable");
            break;
        }};
        t_on_reply("1");
    }} else if (method == "BYE") {{
        rtpengine_manage();
    }};
    t_relay_to_udp("127.0.0.1", "{uas}");
}}
onreply_route[1] {{
    if (status =~ "(183)|2[0-9][0-9]") {{
        rtpengine_manage("{flags}");
    }};
}}
"""


@pytest.fixture
def rtpengines(tmp_path: Path) -> Iterator[list[RtpengineProcess]]:
    started: list[RtpengineProcess] = []
    yield started
    for r in started:
        r.stop()


def start_rtpengine(started: list[RtpengineProcess], tmp_path: Path) -> RtpengineProcess:
    r = RtpengineProcess(tmp_path, interface=RTPE_IP)
    started.append(r)
    r.start()
    return r


def dead_url() -> str:
    """An ng address nobody answers on (a free UDP port)."""
    return f"udp:127.0.0.1:{free_port()}"


def sdp_of(message: str) -> tuple[str, int]:
    """(c= address, m=audio port) of a traced SIP message."""
    c = re.search(r"^c=IN IP4 (\S+)", message, re.M)
    m = re.search(r"^m=audio (\d+) ", message, re.M)
    assert c and m, message
    return c.group(1), int(m.group(1))


def messages(trace: str) -> list[str]:
    """The messages of a SIPp ``-trace_msg`` log, without SIPp's lines
    around them."""
    chunks = re.split(r"-{20,}.*\n", trace)
    return [re.sub(r"^\s*UDP message (received|sent).*\n\s*", "", c) for c in chunks]


def traced(trace: str, first_line: str) -> str:
    """The first message in a SIPp trace that starts with ``first_line``."""
    for chunk in messages(trace):
        if chunk.startswith(first_line):
            return chunk
    raise AssertionError(f"no {first_line!r} in trace:\n{trace}")


def invite(port: int, call_id: str, body: bytes, ctype: str = "application/sdp") -> bytes:
    return (
        f"INVITE sip:callee@127.0.0.1:{port} SIP/2.0\r\n"
        f"Via: SIP/2.0/UDP 127.0.0.1:9;branch=z9hG4bK{call_id}\r\n"
        f"From: <sip:caller@127.0.0.1>;tag=f{call_id}\r\n"
        f"To: <sip:callee@127.0.0.1>\r\n"
        f"Call-ID: {call_id}\r\nCSeq: 1 INVITE\r\nMax-Forwards: 70\r\n"
        f"Contact: <sip:caller@127.0.0.1:9>\r\n"
        f"Content-Type: {ctype}\r\nContent-Length: {len(body)}\r\n\r\n"
    ).encode() + body


def sdp(media_port: int, ip: str = "127.0.0.1") -> bytes:
    return (
        f"v=0\r\no=- 1 1 IN IP4 {ip}\r\ns=-\r\nc=IN IP4 {ip}\r\nt=0 0\r\n"
        f"m=audio {media_port} RTP/AVP 0\r\na=rtpmap:0 PCMU/8000\r\n"
    ).encode()


def rtp(seq: int) -> bytes:
    """An RTP packet (version 2, PCMU) with 160 bytes of payload that name
    its sequence number, so an echo is recognised."""
    header = bytes([0x80, 0x00]) + seq.to_bytes(2, "big") + (seq * 160).to_bytes(4, "big") + b"TEST"
    return header + f"packet {seq:05d} ".encode().ljust(160, b".")


def start_caller(
    workdir: Path, port: int, proxy: str, sdp_ip: str, sdp_port: int, prefix: list[str] | None = None
) -> subprocess.Popen[bytes]:
    """SIPp calling through ``proxy`` with an SDP that offers
    ``sdp_ip:sdp_port`` (the test's media socket); it holds the call until
    an INFO comes, then sends BYE (``uac_media_hold.xml``).  ``prefix``
    runs it elsewhere (``ip netns exec NS``)."""
    cmd = [*(prefix or []), need_tool("sipp"), "-sf", str(SIPP_SCENARIOS / "uac_media_hold.xml")]
    cmd += ["-i", proxy.rsplit(":", 1)[0] if prefix is None else "0.0.0.0", "-p", str(port)]
    cmd += ["-mp", str(free_port()), "-m", "1", "-nostdin", "-timeout", "30", "-trace_msg"]
    cmd += ["-key", "sdp_ip", sdp_ip, "-key", "sdp_port", str(sdp_port), proxy]
    return subprocess.Popen(cmd, cwd=workdir, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def test_call_media_both_ways_through_rtpengine(ser_factory, rtpengines, tmp_path: Path) -> None:
    """A call caller -> ser -> SIPp callee: the INVITE the callee gets and
    the 200 the caller gets point at rtpengine (c= its address, m= its
    ports); RTP sent by the caller to the port of the 200 reaches the
    callee, which echoes it, and comes back to the caller through
    rtpengine; the BYE deletes the session."""
    need_tool("sipp")
    rtpe = start_rtpengine(rtpengines, tmp_path)
    uas = SippPhone("uas", tmp_path / "uas", extra=["-rtp_echo"])
    ser = ser_factory(CFG, socks=rtpe.url, flags=FLAGS, uas=uas.port)
    media = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    media.bind(("127.0.0.1", 0))
    media_port = media.getsockname()[1]
    uac_dir = tmp_path / "uac"
    uac_dir.mkdir()
    uac_port = free_port()
    uac = start_caller(uac_dir, uac_port, f"127.0.0.1:{ser.port}", "127.0.0.1", media_port)
    try:

        def uac_trace() -> str:
            return "".join(p.read_text(errors="replace") for p in uac_dir.glob("*_messages.log"))

        # the call is up when the caller has sent its ACK
        assert wait_for(lambda: "ACK sip:" in uac_trace(), 20), "\n=====".join(
            [uac_trace(), ser.log(), uas.received(), rtpe.log()]
        )
        ok = traced(uac_trace(), "SIP/2.0 200 OK")
        offer = traced(uas.received(), "INVITE sip:")
        # the callee is offered rtpengine, not the caller's socket
        assert sdp_of(offer)[0] == RTPE_IP and sdp_of(offer)[1] != media_port, offer
        assert re.search(rf"^o=\S+ \d+ \d+ IN IP4 {re.escape(RTPE_IP)}", offer, re.M), offer  # replace-origin
        # the caller is answered with rtpengine, not the callee's echo port
        answer_ip, answer_port = sdp_of(ok)
        callee_port = sdp_of(traced(uas.received(), "SIP/2.0 200 OK"))[1]
        assert answer_ip == RTPE_IP and answer_port != callee_port, ok
        calls = rtpe.calls()
        assert len(calls) == 1

        # RTP: caller -> rtpengine -> callee (echo) -> rtpengine -> caller
        media.settimeout(0.2)
        echoed: set[int] = set()
        deadline = time.monotonic() + 10
        seq = 0
        while len(echoed) < 10 and time.monotonic() < deadline:
            seq += 1
            media.sendto(rtp(seq), (answer_ip, answer_port))
            try:
                data, src = media.recvfrom(2048)
            except TimeoutError:
                continue
            assert src == (answer_ip, answer_port)  # it came back through rtpengine
            m = re.search(rb"packet (\d{5}) ", data)
            assert m, data
            echoed.add(int(m.group(1)))
        assert len(echoed) >= 10, f"{len(echoed)} of {seq} packets came back\n{rtpe.log()[-2000:]}"
        stats = rtpe.ng({"command": "query", "call-id": calls[0]})
        assert stats.get(b"result") == b"ok"

        # hang up: the BYE through ser deletes the session in rtpengine
        to_tag = re.search(r"^To:.*;tag=(\S+)", ok, re.M | re.I)
        assert to_tag
        call_id = re.search(r"^Call-ID: *(\S+)", ok, re.M | re.I)
        assert call_id
        info = (
            f"INFO sip:caller@127.0.0.1:{uac_port} SIP/2.0\r\n"
            f"Via: SIP/2.0/UDP 127.0.0.1:{media_port};branch=z9hG4bKinfo1\r\n"
            f"From: <sip:callee@127.0.0.1>;tag={to_tag.group(1)}\r\n"
            f"To: <sip:caller@127.0.0.1>\r\nCall-ID: {call_id.group(1)}\r\n"
            "CSeq: 7 INFO\r\nMax-Forwards: 70\r\nContent-Length: 0\r\n\r\n"
        ).encode()
        media.sendto(info, ("127.0.0.1", uac_port))  # SIPp answers 200 and sends the BYE
        assert uac.wait(20) == 0, uac_trace()
        assert wait_for(lambda: rtpe.calls() == [], 5), rtpe.calls()
        assert rtpe.ng({"command": "query", "call-id": calls[0]}).get(b"result") == b"error"
        # the callee got the BYE (SIPp's uas then lingers 4 s: not waited for)
        assert wait_for(lambda: "BYE sip:" in uas.received(), 5), uas.received()
    finally:
        media.close()
        if uac.poll() is None:
            uac.kill()
            uac.wait(5)
        uas.stop()


def test_failover_first_instance_dead(ser_factory, rtpengines, tmp_path: Path) -> None:
    """The first instance does not answer: after its timeouts the second
    takes the offer; the dead one is then skipped (the next call does not
    wait for it)."""
    rtpe = start_rtpengine(rtpengines, tmp_path)
    dead = dead_url()
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as callee:
        callee.bind(("127.0.0.1", 0))
        callee.settimeout(10)
        socks = f"{dead} {rtpe.url}"
        ser = ser_factory(CFG, socks=socks, flags=FLAGS, uas=callee.getsockname()[1])
        # two Call-IDs that the weights send to the dead instance while it is up
        hashing = NodeSet(parse_sockets(socks), 60)
        call_ids = [c for c in (f"fo{n}" for n in range(100)) if hashing.select(c, 0).url == dead][:2]  # type: ignore[union-attr]
        took = []
        for cid in call_ids:
            started = time.monotonic()
            reply = udp_exchange(invite(ser.port, cid, sdp(free_port())), "127.0.0.1", ser.port, 10)
            took.append(time.monotonic() - started)
            assert reply is not None and reply.startswith(b"SIP/2.0 100"), reply  # tm's, after the offer
            forwarded = ""
            while f"Call-ID: {cid}" not in forwarded:  # skip tm's retransmissions of the one before
                forwarded = callee.recv(65535).decode()
            assert sdp_of(forwarded)[0] == RTPE_IP, forwarded
    assert sorted(rtpe.calls()) == sorted(c.encode() for c in call_ids)
    log = ser.log()
    assert f"rtpengine: {dead} did not answer offer for Call-ID {call_ids[0]}; disabled for 60 s" in log, log
    assert log.count("did not answer") == 1, log  # the second call skipped it
    # the first call waited 2 x 200 ms for the dead one (the second did
    # not: no second log line; its time is not asserted on a loaded machine)
    assert took[0] >= 0.4, took
    # the management side sees it, and can put it back
    show = fifo_request(ser.fifo, "rtpengine.show")
    assert f"{dead} weight=1 disabled=1 recheck_in=" in show and f"{rtpe.url} weight=1 disabled=0" in show, (
        show
    )
    assert fifo_request(ser.fifo, "rtpengine.enable", [dead, "1"]).startswith("200")
    assert f"{dead} weight=1 disabled=0" in fifo_request(ser.fifo, "rtpengine.show")
    ping = fifo_request(ser.fifo, "rtpengine.ping")
    assert f"{dead} no answer" in ping and f"{rtpe.url} pong" in ping, ping
    assert f"{dead} weight=1 disabled=1" in fifo_request(ser.fifo, "rtpengine.show")
    stats = fifo_request(ser.fifo, "stats.get_statistics", ["rtpengine:"])
    assert "rtpengine:offers = 2" in stats and "rtpengine:timeouts = 2" in stats, stats


def test_all_instances_dead_503(ser_factory, tmp_path: Path) -> None:
    """No instance answers: the function is false after tout x retr per
    instance, the script answers 503, a log line says why; meanwhile ser
    keeps serving other requests."""
    d1, d2 = dead_url(), dead_url()
    ser = ser_factory(CFG, socks=f"{d1} {d2}", flags=FLAGS, uas=free_port())
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("127.0.0.1", 0))
        s.settimeout(10)
        started = time.monotonic()
        s.sendto(invite(ser.port, "dead1", sdp(free_port())), ("127.0.0.1", ser.port))
        reply, _ = s.recvfrom(65535)
        took = time.monotonic() - started
    assert reply.startswith(b"SIP/2.0 503 Media Relay Unavailable"), reply
    # 2 instances x 2 tries x 200 ms (the upper bound only says "no hang":
    # the machine may be loaded)
    assert 0.8 <= took < 5.0, took
    log = ser.log()
    assert "no rtpengine instance answered offer for Call-ID dead1" in log, log
    assert d1 in log and d2 in log
    # both disabled now: the next INVITE is refused without waiting
    reply2 = udp_exchange(invite(ser.port, "dead2", sdp(free_port())), "127.0.0.1", ser.port, 5)
    assert reply2 is not None and reply2.startswith(b"SIP/2.0 503"), reply2
    assert "offer for Call-ID dead2 after 0.00 s (tried: none enabled)" in ser.log(), ser.log()


BROKEN = [
    # (case, body, Content-Type, what the log says)
    (
        "no c= line",
        b"v=0\r\no=- 1 1 IN IP4 127.0.0.1\r\ns=-\r\nt=0 0\r\nm=audio 4000 RTP/AVP 0\r\n",
        "application/sdp",
        "failed: Incomplete SDP specification",
    ),
    (
        "bad m= line",
        b"v=0\r\no=- 1 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\nm=audio x\r\n",
        "application/sdp",
        "failed: Failed to parse SDP",
    ),
    ("garbage as SDP", b"\x00\xff garbage \r\n=\r\n", "application/sdp", "failed: Failed to parse SDP"),
    ("not an SDP", b"hello, this is text", "text/plain", "has no SDP body (Content-Type 'text/plain')"),
]


def test_broken_sdp(ser_factory, rtpengines, tmp_path: Path) -> None:
    """A broken SDP: rtpengine_offer is false (the script answers 503 here),
    a log line says why (rtpengine's reason, or that the body is no SDP),
    the body is not changed, no session is left in rtpengine, and ser
    carries on with the next call."""
    rtpe = start_rtpengine(rtpengines, tmp_path)
    ser = ser_factory(CFG, socks=rtpe.url, flags=FLAGS, uas=free_port())
    for n, (case, body, ctype, why) in enumerate(BROKEN):
        cid = f"broken{n}"
        reply = udp_exchange(invite(ser.port, cid, body, ctype), "127.0.0.1", ser.port, 5)
        assert reply is not None and reply.startswith(b"SIP/2.0 503"), (case, reply)
        lines = [ln for ln in ser.log().splitlines() if f"[{cid}]" in ln]
        assert len(lines) == 1 and "ERROR: sipexpress.rtpengine: rtpengine: offer" in lines[0], (case, lines)
        assert why in lines[0], (case, lines)
        assert rtpe.calls() == [], case
    assert ser.alive()
    ok = udp_exchange(invite(ser.port, "good1", sdp(free_port())), "127.0.0.1", ser.port, 5)
    assert ok is not None and ok.startswith(b"SIP/2.0 100"), ok
    assert wait_for(lambda: rtpe.calls() == [b"good1"], 5)


SER09 = """
    if (method == "INVITE") {{
        if (!force_rtp_proxy()) {{ sl_send_reply("503", "Media Relay Unavailable"); break; }};
        t_on_reply("1");
    }} else if (method == "BYE") {{
        unforce_rtp_proxy();
    }};
    t_relay_to_udp("127.0.0.1", "{uas}");
}}
onreply_route[1] {{
    if (status =~ "2[0-9][0-9]") {{ force_rtp_proxy(); }};
}}
"""
KAMAILIO = """
    if (method == "INVITE") {{
        if (!rtpengine_offer("replace-origin via-branch=1")) {{ sl_send_reply("503", "Media Relay Unavailable"); break; }};
        t_on_reply("1");
    }} else if (method == "BYE") {{
        rtpengine_delete();
    }};
    t_relay_to_udp("127.0.0.1", "{uas}");
}}
onreply_route[1] {{
    if (status =~ "2[0-9][0-9]") {{ rtpengine_answer("replace-origin via-branch=2"); }};
}}
"""


def reply_to(request: bytes, status: str, to_tag: str, body: bytes = b"") -> bytes:
    """A UAS's reply: the request's Vias, From, To (with our tag), Call-ID
    and CSeq copied (RFC 3261 §8.2.6.2)."""
    head, _, _ = request.partition(b"\r\n\r\n")
    keep = [
        ln
        for ln in head.split(b"\r\n")[1:]
        if ln.split(b":")[0].lower() in (b"via", b"from", b"call-id", b"cseq")
    ]
    to = next(ln for ln in head.split(b"\r\n") if ln.lower().startswith(b"to:"))
    lines = [f"SIP/2.0 {status}".encode(), *keep, to + f";tag={to_tag}".encode()]
    if body:
        lines.append(b"Content-Type: application/sdp")
    lines.append(f"Content-Length: {len(body)}".encode())
    return b"\r\n".join(lines) + b"\r\n\r\n" + body


def recv_until(s: socket.socket, start: bytes) -> bytes:
    while True:
        data = s.recv(65535)
        if data.startswith(start):
            return data


@pytest.mark.parametrize("script", [SER09, KAMAILIO], ids=["force_rtp_proxy", "offer-answer-delete"])
def test_request_and_reply_rewritten_then_deleted(
    ser_factory, rtpengines, tmp_path: Path, script: str
) -> None:
    """SER 0.9's force_rtp_proxy()/unforce_rtp_proxy() and Kamailio's
    rtpengine_offer/answer/delete: the INVITE's SDP and the 200's SDP point
    at rtpengine, the BYE ends the session there."""
    rtpe = start_rtpengine(rtpengines, tmp_path)
    cfg = CFG[: CFG.index('    if (method == "INVITE")')] + script
    with (
        socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as caller,
        socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as callee,
    ):
        for s in (caller, callee):
            s.bind(("127.0.0.1", 0))
            s.settimeout(5)
        ser = ser_factory(cfg, socks=rtpe.url, flags="", uas=callee.getsockname()[1])
        dest = ("127.0.0.1", ser.port)
        caller_media, callee_media = free_port(), free_port()
        if script is SER09:
            # marked by a relay before (SER 0.9's a=nortpproxy:yes): left alone without 'f'
            marked = invite(ser.port, "marked09", sdp(caller_media) + b"a=nortpproxy:yes\r\n")
            caller.sendto(marked, dest)
            assert recv_until(caller, b"SIP/2.0 ").startswith(b"SIP/2.0 503")
            assert "the SDP is marked a=nortpproxy:yes; left alone" in ser.log(), ser.log()
            assert rtpe.calls() == []
        caller.sendto(invite(ser.port, "call09", sdp(caller_media)), dest)
        got = recv_until(callee, b"INVITE ").decode()
        assert sdp_of(got)[0] == RTPE_IP and sdp_of(got)[1] != caller_media, got
        callee.sendto(reply_to(got.encode(), "200 OK", "callee1", sdp(callee_media)), dest)
        ok = recv_until(caller, b"SIP/2.0 200").decode()
        assert sdp_of(ok)[0] == RTPE_IP and sdp_of(ok)[1] != callee_media, ok
        assert rtpe.calls() == [b"call09"]
        bye = (
            invite(ser.port, "call09", b"")
            .replace(b"INVITE sip:", b"BYE sip:")
            .replace(b"CSeq: 1 INVITE", b"CSeq: 2 BYE")
            .replace(b"To: <sip:callee@127.0.0.1>", b"To: <sip:callee@127.0.0.1>;tag=callee1")
            .replace(b"branch=z9hG4bKcall09", b"branch=z9hG4bKbye09")
        )
        caller.sendto(bye, dest)
        got_bye = recv_until(callee, b"BYE ")
        assert wait_for(lambda: rtpe.calls() == [], 5), rtpe.calls()
        callee.sendto(reply_to(got_bye, "200 OK", "callee1"), dest)
        assert recv_until(caller, b"SIP/2.0 200")
    assert "ERROR" not in ser.log(), ser.log()
