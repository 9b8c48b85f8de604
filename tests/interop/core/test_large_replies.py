"""Replies that fit no UDP datagram, against a real ``ser``: over TCP to
the client when ser has TCP, else a 500 that says so (logged); the
shipped configuration answers a 60 KB Request-URI with its 513, now that
no Warning header copies the URI into the reply (sip_warning is off)."""

from __future__ import annotations

import socket
import uuid
from collections.abc import Callable

import pytest

from sipexpress.sip.message import SipMessage, StreamFramer
from tests.support import SerProcess, shipped_template

pytestmark = pytest.mark.interop

StartSer = Callable[..., SerProcess]

CFG = """\
debug=3
fork=no
listen=udp:{host}:{port}
{tcp}
loadmodule "sl"
loadmodule "usrloc"
loadmodule "registrar"
route {{
    if (method=="REGISTER") {{ save("location"); break; }};
    sl_send_reply("404", "Not Found");
}}
"""

PAD = "p" * 90


def register(sp: SerProcess, via: str, contacts: list[str]) -> bytes:
    lines = [
        f"REGISTER sip:{sp.host} SIP/2.0",
        f"Via: SIP/2.0/{via};branch=z9hG4bK{uuid.uuid4().hex[:16]}",
        f"From: <sip:crowd@{sp.host}>;tag=1",
        f"To: <sip:crowd@{sp.host}>",
        f"Call-ID: {uuid.uuid4().hex}",
        "CSeq: 1 REGISTER",
        *(f"Contact: <{c}>" for c in contacts),
        "Expires: 600",
        "Content-Length: 0",
    ]
    return ("\r\n".join(lines) + "\r\n\r\n").encode()


def crowd(sp: SerProcess, via_tcp: bool) -> None:
    """Register 700 long contacts for one AOR (about 90 KB of Contact).
    Over UDP, the replies listing all bindings outgrow a datagram on the way."""
    for batch in range(7):
        contacts = [f"sip:{PAD}{batch:02d}{i:03d}@127.0.0.1:5999" for i in range(100)]
        if via_tcp:
            with socket.create_connection((sp.host, sp.port), timeout=5) as s:
                s.sendall(register(sp, "TCP 127.0.0.1:9", contacts))
                assert s.recv(65535).startswith(b"SIP/2.0 200 ")
        else:  # 100 contacts of 110 bytes fit a datagram
            with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as u:
                u.settimeout(5)
                u.bind(("127.0.0.1", 0))
                u.sendto(register(sp, f"UDP 127.0.0.1:{u.getsockname()[1]}", contacts), (sp.host, sp.port))
                status = u.recv(65535)[:40]
                assert status.startswith(b"SIP/2.0 200 ") or (
                    batch >= 5 and status.startswith(b"SIP/2.0 500 Reply Too Large For UDP")
                )


def test_too_large_reply_goes_over_tcp(ser_factory: StartSer) -> None:
    sp = ser_factory(CFG.replace("{tcp}", "listen=tcp:{host}:{port}"))
    crowd(sp, via_tcp=True)
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as u, socket.socket() as t:
        u.bind(("127.0.0.1", 0))
        port = u.getsockname()[1]
        t.bind(("127.0.0.1", port))  # the client listens on TCP at its sent-by too
        t.listen(1)
        t.settimeout(5)
        u.sendto(register(sp, f"UDP 127.0.0.1:{port}", []), (sp.host, sp.port))
        conn, _ = t.accept()
        with conn:
            conn.settimeout(5)
            framer = StreamFramer(max_size=1 << 20)
            frames: list[bytes] = []
            while not frames:
                chunk = conn.recv(65536)
                assert chunk
                frames = framer.feed(chunk)
        reply = SipMessage.parse(frames[0])
        assert reply.status == 200 and len(frames[0]) > 65507 and len(reply.contacts) == 700
    assert "fits no datagram; sent over TCP" in sp.log()


def test_too_large_reply_becomes_a_500_without_tcp(ser_factory: StartSer) -> None:
    sp = ser_factory(CFG.replace("{tcp}", ""))
    crowd(sp, via_tcp=False)
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as u:
        u.bind(("127.0.0.1", 0))
        u.settimeout(5)
        u.sendto(register(sp, f"UDP 127.0.0.1:{u.getsockname()[1]}", []), (sp.host, sp.port))
        reply = SipMessage.parse(u.recv(65535))
    assert reply.status == 500 and reply.reason == "Reply Too Large For UDP"
    assert reply.call_id and reply.cseq.method == "REGISTER"
    assert "fits no datagram; sent a 500 instead" in sp.log()


def test_shipped_config_answers_a_huge_request_uri_with_513(ser_factory: StartSer) -> None:
    sp = ser_factory(shipped_template())
    ruri = f"sip:{'u' * 60000}@{sp.host}:{sp.port}"
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as u:
        u.bind(("127.0.0.1", 0))
        u.settimeout(5)
        port = u.getsockname()[1]
        request = (
            f"OPTIONS {ruri} SIP/2.0\r\nVia: SIP/2.0/UDP 127.0.0.1:{port};branch=z9hG4bKbig\r\n"
            f"Max-Forwards: 70\r\nFrom: <sip:a@{sp.host}>;tag=1\r\nTo: <sip:b@{sp.host}>\r\n"
            "Call-ID: big-ruri\r\nCSeq: 1 OPTIONS\r\nContent-Length: 0\r\n\r\n"
        )
        u.sendto(request.encode(), (sp.host, sp.port))
        reply = SipMessage.parse(u.recv(65535))
    assert reply.status == 513 and reply.header("warning") is None
