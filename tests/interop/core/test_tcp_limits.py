"""TCP limits of a real ``ser``: per-source and total connection limits,
a deadline for completing a message (slowloris), idle lifetime; each limit
hit logged once per source, other clients served meanwhile."""

from __future__ import annotations

import contextlib
import socket
import time
from collections.abc import Callable, Iterator

import pytest

from tests.support import SerProcess, options_request, wait_for

pytestmark = pytest.mark.interop

StartSer = Callable[..., SerProcess]

CFG = """\
debug=3
fork=no
listen=tcp:{host}:{port}
listen=udp:{host}:{port}
tcp_max_connections={total}
tcp_max_connections_per_source={per_source}
tcp_msg_read_timeout=1
tcp_connection_lifetime=3
loadmodule "sl"
route {{ sl_send_reply("200", "OK"); }}
"""


def tcp_options(sp: SerProcess, sock: socket.socket) -> bytes:
    """Send an OPTIONS on ``sock``; the reply, b"" when the server refused."""
    sock.settimeout(3)
    try:
        sock.sendall(options_request(sp.host, sp.port).replace(b"SIP/2.0/UDP", b"SIP/2.0/TCP"))
        return sock.recv(65535)
    except (ConnectionResetError, BrokenPipeError):
        return b""


def connect(sp: SerProcess, src: str = "127.0.0.1") -> socket.socket:
    s = socket.socket()
    s.bind((src, 0))
    s.connect((sp.host, sp.port))
    return s


@pytest.fixture
def open_sockets() -> Iterator[list[socket.socket]]:
    socks: list[socket.socket] = []
    yield socks
    for s in socks:
        with contextlib.suppress(OSError):
            s.close()


def test_per_source_limit(ser_factory: StartSer, open_sockets: list[socket.socket]) -> None:
    sp = ser_factory(CFG, total=100, per_source=5)
    for _ in range(5):
        open_sockets.append(connect(sp))
        assert tcp_options(sp, open_sockets[-1]).startswith(b"SIP/2.0 200 ")
    for _ in range(3):
        open_sockets.append(connect(sp))
        assert tcp_options(sp, open_sockets[-1]) == b""
    other = connect(sp, "127.0.0.2")  # another client is served
    open_sockets.append(other)
    assert tcp_options(sp, other).startswith(b"SIP/2.0 200 ")
    assert sp.log().count("tcp from 127.0.0.1: more than tcp_max_connections_per_source (5)") == 1
    open_sockets.pop(0).close()  # a slot comes free

    def served_again() -> bool:
        open_sockets.append(connect(sp))
        return tcp_options(sp, open_sockets[-1]).startswith(b"SIP/2.0 200 ")

    assert wait_for(served_again)


def test_total_limit(ser_factory: StartSer, open_sockets: list[socket.socket]) -> None:
    sp = ser_factory(CFG, total=4, per_source=100)
    for i in range(4):
        open_sockets.append(connect(sp, f"127.0.0.{i + 2}"))
        assert tcp_options(sp, open_sockets[-1]).startswith(b"SIP/2.0 200 ")
    for _ in range(2):
        open_sockets.append(connect(sp, "127.0.0.9"))
        assert tcp_options(sp, open_sockets[-1]) == b""
    assert sp.log().count("tcp from 127.0.0.9: tcp_max_connections (4) reached") == 1
    assert udp_still_served(sp)


def udp_still_served(sp: SerProcess) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as u:
        u.settimeout(2)
        u.sendto(options_request(sp.host, sp.port, rport=True), (sp.host, sp.port))
        return u.recv(65535).startswith(b"SIP/2.0 200 ")


def test_slowloris_is_closed_after_tcp_msg_read_timeout(
    ser_factory: StartSer, open_sockets: list[socket.socket]
) -> None:
    sp = ser_factory(CFG, total=100, per_source=100)
    slow = connect(sp)
    open_sockets.append(slow)
    request = options_request(sp.host, sp.port).replace(b"SIP/2.0/UDP", b"SIP/2.0/TCP")
    t0 = time.monotonic()
    slow.settimeout(0.2)
    closed = False
    for byte in request[:-4]:  # a byte every 0.2 s, never the end of the header block
        try:
            slow.send(bytes([byte]))
            if slow.recv(1) == b"":
                closed = True
                break
        except TimeoutError:
            continue
        except (ConnectionResetError, BrokenPipeError):
            closed = True
            break
    assert closed and time.monotonic() - t0 < 3.5
    assert wait_for(lambda: "message not complete within tcp_msg_read_timeout (1 s)" in sp.log())
    # a client that completes its message in time is served
    fast = connect(sp)
    open_sockets.append(fast)
    assert tcp_options(sp, fast).startswith(b"SIP/2.0 200 ")
