"""Media through rtpengine for a phone behind a real NAT (tests/netns.py):
the phone registers through the masquerading router, a caller outside
calls it through ser (examples/nat/rtpengine.cfg), rtpengine runs in the
proxy's namespace; RTP flows both ways through rtpengine although the
phone's SDP names its private address -- rtpengine learns the NAT's
public address from the phone's first packet (symmetric RTP).  The BYE
deletes the session."""

from __future__ import annotations

import re
import socket
import time
from pathlib import Path

import pytest

from tests.interop.nat.test_nat_calls import register_phone
from tests.interop.rtpengine.test_rtpengine import rtp, sdp_of, traced
from tests.netns import HOME_IP, OUTSIDE_IP, PROXY_IP, nat_lab, sipp_trace
from tests.rtpengine_peer import RtpengineProcess
from tests.support import ROOT, SIPP_SCENARIOS, free_port, wait_for

pytestmark = pytest.mark.interop

CFG = ROOT / "examples" / "nat" / "rtpengine.cfg"


def rtpengine_cfg(workdir: Path, ng_port: int) -> str:
    text = CFG.read_text()
    subs = [
        (r'(?m)^fifo=".*"$', f'fifo="{workdir}/ser_fifo"'),
        (
            r'(?m)^modparam\("rtpengine", "rtpengine_sock", ".*"\)$',
            f'modparam("rtpengine", "rtpengine_sock", "udp:127.0.0.1:{ng_port}")',
        ),
    ]
    for pattern, repl in subs:
        text, n = re.subn(pattern, repl, text)
        assert n == 1, pattern
    return text


def exchange_rtp(
    phone: socket.socket,
    phone_to: tuple[str, int],
    caller: socket.socket,
    caller_to: tuple[str, int],
    want: int = 10,
) -> tuple[set[int], set[int]]:
    """Both ends send, the phone first (its packet opens the NAT and tells
    rtpengine where the phone really is); what each end got from the other:
    the sequence numbers of the packets that arrived, each checked to come
    from rtpengine's port and to carry the other end's payload."""
    at_phone: set[int] = set()
    at_caller: set[int] = set()
    phone.settimeout(0.05)
    caller.settimeout(0.05)
    deadline = time.monotonic() + 15
    seq = 0
    while (len(at_phone) < want or len(at_caller) < want) and time.monotonic() < deadline:
        seq += 1
        phone.sendto(rtp(seq).replace(b"packet", b"phone "), phone_to)
        caller.sendto(rtp(seq).replace(b"packet", b"caller"), caller_to)
        for sock, got, frm, tag in (
            (phone, at_phone, phone_to, b"caller"),
            (caller, at_caller, caller_to, b"phone "),
        ):
            try:
                while True:
                    data, src = sock.recvfrom(2048)
                    assert src == frm, (src, frm)
                    m = re.search(rb"(caller|phone ) (\d{5}) ", data)
                    assert m and m.group(1) == tag, data
                    got.add(int(m.group(2)))
            except TimeoutError:
                pass
    return at_phone, at_caller


def test_phone_behind_nat_media_both_ways(tmp_path: Path) -> None:
    with nat_lab() as lab:
        rtpe = RtpengineProcess(
            tmp_path, interface=PROXY_IP, netns=lab.public, make_socket=lambda: lab.socket(lab.public)
        )
        try:
            rtpe.start()
            ser = lab.ser(rtpengine_cfg(tmp_path, rtpe.ng_port), tmp_path / "ser")
            register_phone(lab, tmp_path)

            phone_media = lab.socket(lab.home)
            phone_media.bind((HOME_IP, 0))
            caller_media = lab.socket(lab.public)
            caller_media.bind((OUTSIDE_IP, 0))
            phone_args = [
                "-sf",
                str(SIPP_SCENARIOS / "uas_media_key.xml"),
                "-aa",
                "-m",
                "1",
                "-timeout",
                "30",
            ]
            phone_args += ["-mp", str(free_port()), "-key", "sdp_ip", HOME_IP]
            phone_args += ["-key", "sdp_port", str(phone_media.getsockname()[1])]
            phone = lab.sipp(lab.home, HOME_IP, phone_args, tmp_path / "phone")
            caller_args = ["-sf", str(SIPP_SCENARIOS / "uac_media_hold.xml"), "-s", "phone", "-m", "1"]
            caller_args += ["-timeout", "30", "-mp", str(free_port()), "-key", "sdp_ip", OUTSIDE_IP]
            caller_args += ["-key", "sdp_port", str(caller_media.getsockname()[1]), f"{PROXY_IP}:5060"]
            caller = lab.sipp(lab.public, OUTSIDE_IP, caller_args, tmp_path / "caller")
            assert wait_for(lambda: "ACK sip:" in sipp_trace(tmp_path / "caller"), 20), (
                sipp_trace(tmp_path / "caller") + ser.log() + sipp_trace(tmp_path / "phone")
            )
            offer = traced(sipp_trace(tmp_path / "phone"), "INVITE sip:")
            ok = traced(sipp_trace(tmp_path / "caller"), "SIP/2.0 200 OK")
            # each side sees rtpengine in the proxy's network, never the other's address
            to_phone, to_caller = sdp_of(offer), sdp_of(ok)
            assert to_phone[0] == PROXY_IP and to_caller[0] == PROXY_IP, (offer, ok)
            assert HOME_IP not in ok.split("\n\n", 1)[-1], ok

            at_phone, at_caller = exchange_rtp(phone_media, to_phone, caller_media, to_caller)
            assert len(at_phone) >= 10 and len(at_caller) >= 10, (
                len(at_phone),
                len(at_caller),
                rtpe.log()[-3000:],
            )
            calls = rtpe.calls()
            assert len(calls) == 1

            # hang up: the caller's BYE through ser ends the session in rtpengine
            call_id = re.search(r"^Call-ID: *(\S+)", ok, re.M | re.I)
            to_tag = re.search(r"^To:.*;tag=(\S+)", ok, re.M | re.I)
            assert call_id and to_tag
            port = caller_media.getsockname()[1]
            caller_media.sendto(
                (
                    f"INFO sip:caller@{OUTSIDE_IP}:5060 SIP/2.0\r\n"
                    f"Via: SIP/2.0/UDP {OUTSIDE_IP}:{port};branch=z9hG4bKinfo2\r\n"
                    f"From: <sip:phone@{PROXY_IP}>;tag={to_tag.group(1)}\r\nTo: <sip:caller@{OUTSIDE_IP}>\r\n"
                    f"Call-ID: {call_id.group(1)}\r\nCSeq: 9 INFO\r\nMax-Forwards: 70\r\nContent-Length: 0\r\n\r\n"
                ).encode(),
                (OUTSIDE_IP, 5060),
            )
            assert caller.wait(20) == 0, sipp_trace(tmp_path / "caller") + ser.log()
            assert wait_for(lambda: rtpe.calls() == [], 5), rtpe.calls()
            assert phone.wait(10) == 0, sipp_trace(tmp_path / "phone")
            phone_media.close()
            caller_media.close()
        finally:
            rtpe.stop()
