"""The parser's caches are bounded in bytes: a real ``ser`` fed large
datagrams, each with its own thousands of header names, keeps its memory."""

from __future__ import annotations

import socket
import uuid
from collections.abc import Callable

import pytest

from tests.support import SerProcess

pytestmark = pytest.mark.interop

StartSer = Callable[..., SerProcess]

CFG = """\
fork=no
listen=udp:{host}:{port}
loadmodule "sl"
route {{ sl_send_reply("200", "OK"); }}
"""


def rss_mb(sp: SerProcess) -> float:
    assert sp.proc is not None
    with open(f"/proc/{sp.proc.pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    raise AssertionError("no VmRSS")


def crafted(sp: SerProcess, n: int, port: int) -> bytes:
    """An OPTIONS of about 56 KB whose 2 100 header names no other message has."""
    head = (
        f"OPTIONS sip:{sp.host}:{sp.port} SIP/2.0\r\n"
        f"Via: SIP/2.0/UDP 127.0.0.1:{port};branch=z9hG4bK{uuid.uuid4().hex[:16]}\r\n"
        f"From: <sip:a@{sp.host}>;tag=1\r\nTo: <sip:b@{sp.host}>\r\n"
        f"Call-ID: {uuid.uuid4().hex}\r\nCSeq: 1 OPTIONS\r\nMax-Forwards: 70\r\n"
    )
    names = "".join(f"X-{n:04d}-{i:04d}-abcdefghijkl: v\r\n" for i in range(2100))
    return (head + names + "Content-Length: 0\r\n\r\n").encode()


def test_distinct_header_names_do_not_grow_memory(ser_factory: StartSer) -> None:
    sp = ser_factory(CFG)
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as u:
        u.bind(("127.0.0.1", 0))
        u.settimeout(5)
        port = u.getsockname()[1]

        def flood(first: int, count: int) -> None:
            for n in range(first, first + count):
                data = crafted(sp, n, port)
                assert len(data) < 65000
                u.sendto(data, (sp.host, sp.port))
                assert u.recv(65535).startswith(b"SIP/2.0 200 ")

        flood(0, 100)  # warm up: the interpreter's own first allocations
        before = rss_mb(sp)
        flood(100, 400)
        grown = rss_mb(sp) - before
    # each such message's layout alone is ~200 KB: kept, 400 of them took 70 MB
    assert grown < 25, f"RSS grew by {grown:.0f} MB"
