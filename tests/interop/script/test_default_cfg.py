"""The default etc/ser.cfg on a running ``ser``: registrar, user location
lookup, stateful forwarding, the sanity checks (SER 0.9 default script)."""

from __future__ import annotations

import re
import socket
import tempfile
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support import ROOT, SerProcess, free_port, shipped_config

pytestmark = pytest.mark.interop


@pytest.fixture(scope="module")
def ser() -> Iterator[SerProcess]:
    port = free_port()
    workdir = Path(tempfile.mkdtemp(prefix="ser-default-"))
    text = (ROOT / "etc" / "ser.cfg").read_text()
    assert text == (ROOT / "src" / "sipexpress" / "etc" / "ser.cfg").read_text(), "packaged copy differs"
    text = shipped_config(port, f"{workdir}/ser_fifo") + "\nlog_stderror=yes\nfork=no\n"
    cfg = workdir / "ser.cfg"
    cfg.write_text(text)
    sp = SerProcess(cfg, "127.0.0.1", port, workdir)
    sp.start()
    yield sp
    sp.stop()


def msg(method: str, ruri: str, port: int, extra: str = "", maxfwd: int = 70, to: str | None = None) -> bytes:
    return (
        f"{method} {ruri} SIP/2.0\r\n"
        f"Via: SIP/2.0/UDP 127.0.0.1:{port};branch=z9hG4bK{uuid.uuid4().hex[:12]}\r\n"
        f"Max-Forwards: {maxfwd}\r\n"
        f"From: <sip:alice@127.0.0.1>;tag={uuid.uuid4().hex[:6]}\r\n"
        f"To: <{to or ruri}>\r\n"
        f"Call-ID: {uuid.uuid4().hex}@test\r\n"
        f"CSeq: 1 {method}\r\n"
        f"{extra}"
        "Content-Length: 0\r\n\r\n"
    ).encode()


class Peer:
    def __init__(self) -> None:
        self.s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.s.bind(("127.0.0.1", 0))
        self.s.settimeout(3)
        self.port = self.s.getsockname()[1]

    def send(self, data: bytes, port: int) -> None:
        self.s.sendto(data, ("127.0.0.1", port))

    def recv(self) -> bytes:
        return self.s.recvfrom(65535)[0]

    def close(self) -> None:
        self.s.close()


def test_register_lookup_and_relay(ser: SerProcess) -> None:
    caller, callee = Peer(), Peer()
    try:
        me = f"127.0.0.1:{ser.port}"
        callee.send(
            msg(
                "REGISTER",
                f"sip:{me}",
                callee.port,
                f"Contact: <sip:bob@127.0.0.1:{callee.port}>;expires=300\r\n",
                to=f"sip:bob@{me}",
            ),
            ser.port,
        )
        reply = callee.recv().decode()
        assert reply.startswith("SIP/2.0 200 "), reply
        assert re.search(rf"Contact: <sip:bob@127\.0\.0\.1:{callee.port}>;expires=\d+", reply), reply

        caller.send(msg("INVITE", f"sip:bob@{me}", caller.port), ser.port)
        got = callee.recv().decode()
        assert got.startswith(f"INVITE sip:bob@127.0.0.1:{callee.port} SIP/2.0"), got
        assert "P-hint: usrloc applied" in got
        assert "Record-Route:" in got
        mf = re.search(r"Max-Forwards: (\d+)", got)
        assert mf is not None and int(mf.group(1)) < 70, got  # decremented (maxfwd may also cap it)
        trying = caller.recv().decode()
        assert trying.startswith("SIP/2.0 100 "), trying
    finally:
        caller.close()
        callee.close()


def test_unknown_user_404(ser: SerProcess) -> None:
    p = Peer()
    try:
        p.send(msg("INVITE", f"sip:nobody@127.0.0.1:{ser.port}", p.port), ser.port)
        reply = p.recv().decode()
        assert reply.startswith("SIP/2.0 404 Not Found"), reply
        assert ";tag=" in reply.split("To:", 1)[1].split("\r\n", 1)[0]
    finally:
        p.close()


def test_max_forwards_zero_483(ser: SerProcess) -> None:
    p = Peer()
    try:
        p.send(msg("INVITE", f"sip:nobody@127.0.0.1:{ser.port}", p.port, maxfwd=0), ser.port)
        assert p.recv().decode().startswith("SIP/2.0 483 Too Many Hops")
    finally:
        p.close()


def test_too_big_513(ser: SerProcess) -> None:
    p = Peer()
    try:
        big = "X-Pad: " + "a" * 2100 + "\r\n"
        p.send(msg("OPTIONS", f"sip:nobody@127.0.0.1:{ser.port}", p.port, big), ser.port)
        assert p.recv().decode().startswith("SIP/2.0 513 Message too big")
    finally:
        p.close()
