"""SIP over WebSocket (RFC 7118) against a real ``ser``: ``listen=ws:``,
registration over a WebSocket and requests to the client on the same
connection, ``proto==ws``, contacts of a closed connection, ping/pong and
keep-alives, the Origin check, and bad input (no ``sip`` subprotocol,
oversized messages, broken frames, no HTTP at all) closing only that
connection."""

from __future__ import annotations

import socket
import ssl
import time
import uuid
from collections.abc import Callable, Iterator

import pytest
from wsproto.events import Ping, Pong

from tests.support import SerProcess, WsClient, free_port, options_request, udp_exchange, wait_for
from tests.tls_support import Issued, TestCA

pytestmark = pytest.mark.interop

StartSer = Callable[..., SerProcess]

CFG = """\
debug=3
fork=no
listen=udp:{host}:{port}
listen=ws:{host}:{ws_port}
ws_keepalive_interval={keepalive}
{extra}
loadmodule "sl"
loadmodule "tm"
loadmodule "usrloc"
loadmodule "registrar"
loadmodule "textops"
modparam("usrloc", "db_mode", 0)
modparam("tm", "fr_timer", 3)
route {{
    if (method == "REGISTER") {{
        if (proto == ws) {{ append_to_reply("X-Proto: ws\\r\\n"); }};
        save("location");
        break;
    }};
    if (uri =~ "\\.invalid;transport=ws") {{ t_relay(); break; }};
    if (uri == myself && !(method == "OPTIONS" && uri =~ "^sip:[^@]*$")) {{
        if (!lookup("location")) {{ sl_send_reply("404", "Not Found"); break; }};
        t_relay();
        break;
    }};
    sl_send_reply("200", "OK");
}}
"""


@pytest.fixture
def clients() -> Iterator[list[WsClient]]:
    made: list[WsClient] = []
    yield made
    for c in made:
        c.close()


def logged(sp: SerProcess, text: str) -> bool:
    """``text`` appears in the server's log (it is written after the reply)."""
    return wait_for(lambda: text in sp.log(), 5.0)


def start(ser_factory: StartSer, keepalive: int = 60, extra: str = "") -> SerProcess:
    ws_port = free_port(socket.SOCK_STREAM)
    sp = ser_factory(CFG, ws_port=ws_port, keepalive=keepalive, extra=extra)
    sp.ws_port = ws_port  # type: ignore[attr-defined]
    return sp


def connect(sp: SerProcess, clients: list[WsClient], **kw: object) -> WsClient:
    c = WsClient(sp.host, sp.ws_port, **kw)  # type: ignore[attr-defined, arg-type]
    clients.append(c)
    return c


def register(sp: SerProcess, c: WsClient, user: str = "alice", expires: int = 600) -> bytes:
    tag = uuid.uuid4().hex[:8]
    req = (
        f"REGISTER sip:{sp.host}:{sp.port} SIP/2.0\r\n"
        f"Via: SIP/2.0/WS df7jal23ls0d.invalid;branch=z9hG4bK{uuid.uuid4().hex[:12]}\r\n"
        "Max-Forwards: 70\r\n"
        f"From: <sip:{user}@{sp.host}>;tag={tag}\r\n"
        f"To: <sip:{user}@{sp.host}>\r\n"
        f"Call-ID: {uuid.uuid4().hex}\r\n"
        "CSeq: 1 REGISTER\r\n"
        f"Contact: <sip:{user}x@df7jal23ls0d.invalid;transport=ws>;expires={expires}\r\n"
        "Content-Length: 0\r\n\r\n"
    )
    c.send(req)
    reply = c.recv()
    assert reply is not None
    return reply


def message_to(sp: SerProcess, user: str) -> bytes:
    return options_request(sp.host, sp.port, ruri=f"sip:{user}@{sp.host}:{sp.port}", rport=True).replace(
        b"OPTIONS", b"MESSAGE"
    )


def udp_request(sp: SerProcess, data: bytes, timeout: float = 5.0) -> tuple[bytes | None, float]:
    """Send ``data`` from a UDP socket; the final reply and how long it took."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("127.0.0.1", 0))
        s.settimeout(timeout)
        started = time.monotonic()
        s.sendto(data, (sp.host, sp.port))
        while True:
            try:
                reply = s.recv(65535)
            except TimeoutError:
                return None, time.monotonic() - started
            if not reply.startswith(b"SIP/2.0 1"):
                return reply, time.monotonic() - started


def test_register_and_reached_over_the_same_connection(
    ser_factory: StartSer, clients: list[WsClient]
) -> None:
    sp = start(ser_factory)
    assert logged(sp, "listening on ws:127.0.0.1:")
    c = connect(sp, clients)
    assert c.status == 101
    reply = register(sp, c)
    assert reply.startswith(b"SIP/2.0 200 ")
    assert b"X-Proto: ws\r\n" in reply  # proto==ws in the script
    # a MESSAGE over UDP to alice: looked up, relayed on alice's WebSocket
    data = message_to(sp, "alice")
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("127.0.0.1", 0))
        s.sendto(data, (sp.host, sp.port))
        req = c.recv()
        assert req is not None and req.startswith(
            b"MESSAGE sip:alicex@df7jal23ls0d.invalid;transport=ws SIP/2.0"
        )
        top_via = req.split(b"\r\nVia: ", 1)[1].split(b"\r\n", 1)[0]
        assert top_via.startswith(f"SIP/2.0/WS {sp.host}:{sp.ws_port};branch=".encode())  # type: ignore[attr-defined]
        vias = [line for line in req.split(b"\r\n") if line.startswith(b"Via: ")]
        head = b"".join(
            line + b"\r\n"
            for line in req.split(b"\r\n")[1:]
            if line.split(b":")[0] in (b"From", b"To", b"Call-ID", b"CSeq")
        )
        c.send(
            b"SIP/2.0 200 OK\r\n" + b"".join(v + b"\r\n" for v in vias) + head + b"Content-Length: 0\r\n\r\n"
        )
        s.settimeout(5)
        final = s.recv(65535)
        assert final.startswith(b"SIP/2.0 200 OK")
        # a request to the client's Contact (as in-dialog ones are): the
        # .invalid host names the connection the client registered over
        contact = "sip:alicex@df7jal23ls0d.invalid;transport=ws"
        s.sendto(options_request(sp.host, sp.port, ruri=contact, rport=True), (sp.host, sp.port))
        req = c.recv()
    assert req is not None and req.startswith(f"OPTIONS {contact} SIP/2.0".encode())

    # the connection closes: alice's contact is still registered, but not
    # used any more (404 at once, not a timeout)
    c.close()

    def answered_404() -> bool:
        reply, took = udp_request(sp, message_to(sp, "alice"), 3.0)
        return reply is not None and reply.startswith(b"SIP/2.0 404 ") and took < 1.0

    assert wait_for(answered_404, 5.0)


def test_origin_check_ping_and_keepalive(ser_factory: StartSer, clients: list[WsClient]) -> None:
    sp = start(ser_factory, keepalive=1, extra='ws_origin="^https://phone\\.example\\.com$"')
    assert connect(sp, clients, origin="https://evil.example.org").status == 403
    assert connect(sp, clients).status == 403  # no Origin at all
    assert logged(sp, "WebSocket upgrade from Origin 'https://evil.example.org' refused (ws_origin)")
    c = connect(sp, clients, origin="https://phone.example.com")
    assert c.status == 101
    assert register(sp, c).startswith(b"SIP/2.0 200 ")
    c.sock.sendall(c.ws.send(Ping(b"are you there")))
    pong = c.next_event(Pong, 5.0)
    assert pong is not None and pong.payload == b"are you there"  # type: ignore[attr-defined]
    # idle for ws_keepalive_interval: the server pings; answered, it stays
    ping = c.next_event(Ping, 5.0)
    assert ping is not None
    c.sock.sendall(c.ws.send(ping.response()))  # type: ignore[attr-defined]
    # idle again: pinged again, not closed; this time no answer: closed
    assert c.next_event(Ping, 5.0) is not None
    assert c.closed_by_server(5.0) is not None


def served(sp: SerProcess, clients: list[WsClient]) -> bool:
    """The server still answers over UDP and over a new WebSocket."""
    if not (udp_exchange(options_request(sp.host, sp.port), sp.host, sp.port) or b"").startswith(
        b"SIP/2.0 200"
    ):
        return False
    c = connect(sp, clients)
    return register(sp, c, "carol").startswith(b"SIP/2.0 200 ")


def test_bad_input_closes_only_that_connection(ser_factory: StartSer, clients: list[WsClient]) -> None:
    """An upgrade without the sip subprotocol, an oversized message, broken
    frames, no HTTP at all: each a log line and that connection closed; the
    server goes on serving UDP and new WebSocket connections."""
    sp = start(ser_factory, extra="max_msg_size=4096")
    c = connect(sp, clients, protocols=("chat",))
    assert c.status == 400
    assert c.sock.recv(10) == b""  # closed
    assert logged(sp, "WebSocket upgrade without the 'sip' subprotocol (offered: chat); closing connection")
    assert served(sp, clients)

    c = connect(sp, clients)
    c.send(b"x" * 5000, text=False)
    assert c.closed_by_server() == 1009
    assert logged(sp, "WebSocket message longer than max_msg_size (4096 bytes); closing connection")

    c = connect(sp, clients)
    c.send_raw(b"\x8f\x85abcd12345")  # opcode 0xF does not exist
    assert c.closed_by_server() == 1002
    assert logged(sp, "bad WebSocket frame: Invalid opcode 0xf; closing connection")
    c = connect(sp, clients)
    c.send_raw(b"\x81\x05hello")  # a client frame must be masked (RFC 6455 §5.1)
    assert c.closed_by_server() == 1002
    with socket.create_connection((sp.host, sp.ws_port), timeout=5) as raw:  # type: ignore[attr-defined]
        raw.sendall(b"\x16\x03\x01\x00\xa5\x01\x00\x00\xa1\x03\x03" + bytes(range(32)) + b"\r\n\r\n")
        assert raw.recv(100).startswith(b"HTTP/1.1 400 ")
    assert logged(sp, "bad WebSocket handshake")
    assert served(sp, clients)


WSS_CFG = """\
debug=3
fork=no
listen=udp:{host}:{port}
listen=wss:{host}:{ws_port}
tls_certificate="{cert}"
tls_private_key="{key}"
loadmodule "sl"
loadmodule "tm"
loadmodule "usrloc"
loadmodule "registrar"
modparam("usrloc", "db_mode", 0)
route {{
    if (method == "REGISTER") {{
        if (proto == wss) {{ save("location"); }} else {{ sl_send_reply("500", "not wss"); }};
        break;
    }};
    if (!lookup("location")) {{ sl_send_reply("404", "Not Found"); break; }};
    t_relay();
}}
"""


def test_wss_register_and_reached(
    ser_factory: StartSer, clients: list[WsClient], ca: TestCA, server_cert: Issued
) -> None:
    server = server_cert
    ws_port = free_port(socket.SOCK_STREAM)
    sp = ser_factory(WSS_CFG, ws_port=ws_port, cert=server.cert, key=server.key)
    sp.ws_port = ws_port  # type: ignore[attr-defined]
    assert logged(sp, f"listening on wss:127.0.0.1:{ws_port}")
    ctx = ssl.create_default_context(cafile=str(ca.cert_path))
    c = connect(sp, clients, ssl_context=ctx)
    assert c.status == 101
    assert register(sp, c, "dora").startswith(b"SIP/2.0 200 ")
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("127.0.0.1", 0))
        s.sendto(message_to(sp, "dora"), (sp.host, sp.port))
        req = c.recv()
    assert req is not None and req.startswith(b"MESSAGE sip:dorax@df7jal23ls0d.invalid;transport=ws SIP/2.0")
    assert f"Via: SIP/2.0/WSS {sp.host}:{ws_port};branch=".encode() in req
    # plain WebSocket on the WSS port: refused by TLS, the server carries on
    plain = WsClient(sp.host, ws_port, timeout=2)
    clients.append(plain)
    assert plain.status != 101
    c2 = connect(sp, clients, ssl_context=ctx)
    assert register(sp, c2, "erin").startswith(b"SIP/2.0 200 ")
