"""Stateless forwarding paths end to end with hand-made peers: UDP -> TCP
(one reused outbound connection), replies routed back by Via, received/rport,
Max-Forwards, forwarding by request URI."""

from __future__ import annotations

import socket
import threading
import uuid
from collections.abc import Callable

import pytest

from tests.support import SerProcess, free_port

pytestmark = pytest.mark.interop

ROUTES = """\
from sipexpress.script.pyroute import forward, forward_tcp, sl_send_reply

OPTIONS = {{"listen": "udp:{host}:{port} tcp:{host}:{port}", "sip_warning": 0}}
MODULES = ["sl"]


async def request_route(ctx):
    u = ctx.parsed_ruri
    if ctx.core.is_myself(u.host, u.port):
        if ctx.msg.method == "OPTIONS":
            return sl_send_reply(ctx, 200, "OK")
        return await forward_tcp(ctx, "{host}", {hop})
    return await forward(ctx)  # by the request URI
"""


class TcpHop(threading.Thread):
    """A next hop: accepts TCP connections, answers each request with 200
    on the same connection, remembers what it got."""

    def __init__(self, port: int) -> None:
        super().__init__(daemon=True)
        self.srv = socket.create_server(("127.0.0.1", port))
        self.srv.settimeout(10)
        self.connections = 0
        self.requests: list[bytes] = []

    def run(self) -> None:
        try:
            conn, _ = self.srv.accept()
        except OSError:
            return
        self.connections += 1
        threading.Thread(target=self.more, daemon=True).start()
        buf = b""
        with conn:
            while True:
                try:
                    chunk = conn.recv(65535)
                except OSError:
                    return
                if not chunk:
                    return
                buf += chunk
                while b"\r\n\r\n" in buf:
                    head, _, buf = buf.partition(b"\r\n\r\n")
                    self.requests.append(head)
                    lines = head.split(b"\r\n")
                    keep = [
                        ln
                        for ln in lines[1:]
                        if ln.split(b":")[0].lower() in (b"via", b"from", b"to", b"call-id", b"cseq")
                    ]
                    conn.sendall(
                        b"SIP/2.0 200 OK\r\n" + b"\r\n".join(keep) + b"\r\nContent-Length: 0\r\n\r\n"
                    )

    def more(self) -> None:
        try:
            conn, _ = self.srv.accept()  # a second connection would be a failure
        except OSError:
            return
        self.connections += 1
        conn.close()


def request(
    method: str, ruri: str, via_host: str, port: int, max_forwards: int = 70, rport: bool = True
) -> bytes:
    rp = ";rport" if rport else ""
    return (
        f"{method} {ruri} SIP/2.0\r\n"
        f"Via: SIP/2.0/UDP {via_host}:{port}{rp};branch=z9hG4bK{uuid.uuid4().hex[:12]}\r\n"
        f"Max-Forwards: {max_forwards}\r\n"
        f"From: <sip:a@example.com>;tag={uuid.uuid4().hex[:6]}\r\n"
        "To: <sip:b@example.com>\r\n"
        f"Call-ID: {uuid.uuid4().hex}\r\n"
        f"CSeq: 1 {method}\r\n"
        "Content-Length: 0\r\n\r\n"
    ).encode()


def test_udp_to_tcp_reuse_and_reply_routing(ser_factory: Callable[..., SerProcess]) -> None:
    hop_port = free_port()
    hop = TcpHop(hop_port)
    hop.start()
    ser = ser_factory(ROUTES, suffix=".py", hop=hop_port)
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as uac:
        uac.bind(("127.0.0.1", 0))
        uac.settimeout(5)
        my_port = uac.getsockname()[1]
        for _ in range(3):
            # a Via host that is not our address: the proxy must add received=
            # and fill rport, and route the reply to them
            uac.sendto(
                request("MESSAGE", f"sip:b@127.0.0.1:{ser.port}", "uac.invalid", 9), (ser.host, ser.port)
            )
            reply = uac.recvfrom(65535)[0]
            assert reply.startswith(b"SIP/2.0 200 OK\r\n")
            vias = [ln for ln in reply.split(b"\r\n") if ln.startswith(b"Via:")]
            assert len(vias) == 1  # ours was removed
            assert b"received=127.0.0.1" in vias[0] and f"rport={my_port}".encode() in vias[0]
    assert hop.connections == 1  # one outbound TCP connection, reused
    assert len(hop.requests) == 3
    fwd = hop.requests[0].split(b"\r\n")
    assert fwd[1].startswith(f"Via: SIP/2.0/TCP 127.0.0.1:{ser.port};branch=z9hG4bK".encode())
    assert b"Max-Forwards: 69" in fwd


def test_forward_by_ruri_and_max_forwards(ser_factory: Callable[..., SerProcess]) -> None:
    ser = ser_factory(ROUTES, suffix=".py", hop=1)
    with (
        socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as uac,
        socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as uas,
    ):
        uac.bind(("127.0.0.1", 0))
        uas.bind(("127.0.0.1", 0))
        uac.settimeout(5)
        uas.settimeout(5)
        uac_port = uac.getsockname()[1]
        uas_port = uas.getsockname()[1]
        req = request("INFO", f"sip:bob@127.0.0.1:{uas_port}", "127.0.0.1", uac_port, rport=False)
        uac.sendto(req, (ser.host, ser.port))
        got = uas.recvfrom(65535)[0]
        assert got.startswith(f"INFO sip:bob@127.0.0.1:{uas_port} SIP/2.0\r\n".encode())
        first_via = got.split(b"\r\n")[1]
        assert first_via.startswith(f"Via: SIP/2.0/UDP 127.0.0.1:{ser.port};branch=z9hG4bK".encode())
        # a retransmission is forwarded with the same branch (RFC 3261 §16.11)
        uac.sendto(req, (ser.host, ser.port))
        assert uas.recvfrom(65535)[0].split(b"\r\n")[1] == first_via
        # Max-Forwards 0: 483 from the proxy, nothing forwarded
        uac.sendto(
            request("INFO", f"sip:bob@127.0.0.1:{uas_port}", "127.0.0.1", uac_port, 0, rport=False),
            (ser.host, ser.port),
        )
        assert uac.recvfrom(65535)[0].startswith(b"SIP/2.0 483 Too Many Hops\r\n")
        uas.settimeout(0.5)
        with pytest.raises(TimeoutError):
            uas.recvfrom(65535)


def test_tcp_connect_failure_is_survived(ser_factory: Callable[..., SerProcess]) -> None:
    dead = free_port()  # nobody listens there
    ser = ser_factory(ROUTES, suffix=".py", hop=dead)
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as uac:
        uac.bind(("127.0.0.1", 0))
        uac.settimeout(0.5)
        uac.sendto(request("MESSAGE", f"sip:b@127.0.0.1:{ser.port}", "127.0.0.1", 9), (ser.host, ser.port))
        with pytest.raises(TimeoutError):
            uac.recvfrom(65535)
    assert ser.alive()
    assert f"tcp connect to 127.0.0.1:{dead} failed" in ser.log()
    opts = request("OPTIONS", f"sip:127.0.0.1:{ser.port}", "127.0.0.1", 9)
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.settimeout(3)
        s.sendto(opts, (ser.host, ser.port))
        assert s.recvfrom(65535)[0].startswith(b"SIP/2.0 200 OK")
