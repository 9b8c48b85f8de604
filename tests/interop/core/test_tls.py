"""SIP over TLS with a real ``ser``: Python ssl clients and servers as the
peers (the certificate checks are what these tests are about; sipsak and
Kamailio are in tests/interop/core/test_tls_peers.py).

A test CA and its certificates are made in the test (tests/tls_support.py).
"""

from __future__ import annotations

import contextlib
import socket
import ssl
import threading
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tests.support import SerProcess, free_port, udp_exchange, wait_for
from tests.tls_support import (
    Issued,
    TestCA,
    client_context,
    read_message,
    relay_via_udp,
    sip_request,
    start_tls_ser,
    tls_client,
)

pytestmark = pytest.mark.interop

StartSer = Callable[..., SerProcess]


class TlsUas:
    """A TLS server playing a SIP UAS in a thread: answers every request
    with 200 on the connection it came on and records the SNI name, the
    requests, and the connections accepted."""

    def __init__(self, cert: Issued, ca: TestCA | None = None, *, port: int | None = None) -> None:
        self.port = port or free_port()
        self.ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        self.ctx.load_cert_chain(str(cert.cert), str(cert.key))
        self.sni: list[str | None] = []
        self.ctx.sni_callback = lambda s, name, c: self.sni.append(name)  # type: ignore[assignment,misc]
        self.requests: list[bytes] = []
        self.accepted = 0
        self.conns: list[ssl.SSLSocket] = []
        self.lsock = socket.create_server(("127.0.0.1", self.port))
        self.lsock.settimeout(0.2)
        self.stopping = False
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self) -> None:
        while not self.stopping:
            try:
                raw, _ = self.lsock.accept()
            except (TimeoutError, OSError):
                continue
            self.accepted += 1
            threading.Thread(target=self._serve, args=(raw,), daemon=True).start()

    def _serve(self, raw: socket.socket) -> None:
        try:
            sock = self.ctx.wrap_socket(raw, server_side=True)
        except (ssl.SSLError, OSError):
            raw.close()
            return
        self.conns.append(sock)
        with contextlib.suppress(OSError, ValueError):
            while not self.stopping:
                msg = read_message(sock, timeout=30)
                if not msg:
                    return
                self.requests.append(msg)
                if msg.startswith(b"SIP/2.0 ") or msg.startswith(b"ACK "):
                    continue
                head = msg.split(b"\r\n\r\n")[0].split(b"\r\n")
                keep = [
                    h
                    for h in head[1:]
                    if h.split(b":")[0].lower() in (b"via", b"from", b"to", b"call-id", b"cseq")
                ]
                sock.sendall(b"SIP/2.0 200 OK\r\n" + b"\r\n".join(keep) + b"\r\nContent-Length: 0\r\n\r\n")

    def close(self) -> None:
        self.stopping = True
        self.lsock.close()
        for c in self.conns:
            with contextlib.suppress(OSError):
                c.close()


@pytest.fixture
def uas_factory() -> Iterator[Callable[..., TlsUas]]:
    made: list[TlsUas] = []

    def make(cert: Issued, **kw: object) -> TlsUas:
        u = TlsUas(cert, **kw)  # type: ignore[arg-type]
        made.append(u)
        return u

    yield make
    for u in made:
        u.close()


def test_outgoing_tls_checks_certificate_and_sends_sni(
    ser_factory: StartSer, ca: TestCA, server_cert: Issued, uas_factory: Callable[..., TlsUas]
) -> None:
    good = uas_factory(ca.issue("uas-good"))
    sp = start_tls_ser(ser_factory, ca, server_cert, relay=good.port)
    # t_relay_to_tls("localhost", port): certificate checked against "localhost", SNI sent
    reply = relay_via_udp(sp, "sip:bob@example.invalid", "INFO")
    assert reply is not None and reply.startswith(b"SIP/2.0 200 "), (reply, sp.log())
    assert [r.split(b" ", 1)[0] for r in good.requests] == [b"INFO"]
    # sips: URI by name: certificate checked against "localhost", SNI sent
    reply = relay_via_udp(sp, f"sips:bob@localhost:{good.port}")
    assert reply is not None and reply.startswith(b"SIP/2.0 200 "), (reply, sp.log())
    assert good.sni == ["localhost"]
    (req,) = [r for r in good.requests if r.startswith(b"MESSAGE ")]  # on the same connection
    top_via = next(h for h in req.split(b"\r\n") if h.lower().startswith(b"via:"))
    assert top_via.startswith(b"Via: SIP/2.0/TLS 127.0.0.1:") and b";alias;" in top_via  # RFC 5923
    # ;transport=tls by IP: checked against the certificate's IP address; reused connection
    reply = relay_via_udp(sp, f"sip:bob@127.0.0.1:{good.port};transport=tls")
    assert reply is not None and reply.startswith(b"SIP/2.0 200 ")
    assert good.accepted == 1  # the same connection (same ip:port) carried both

    expired = uas_factory(ca.issue("uas-expired", expired=True))
    reply = relay_via_udp(sp, f"sips:bob@localhost:{expired.port}")
    assert reply is not None and reply.startswith(b"SIP/2.0 503 "), reply
    assert wait_for(
        lambda: (
            f"tls connect to 127.0.0.1:{expired.port} (localhost) failed: certificate refused: certificate has expired"
            in sp.log()
        )
    ), sp.log()

    other = uas_factory(ca.issue("uas-other", names=("other.example",), ips=("10.1.2.3",)))
    reply = relay_via_udp(sp, f"sips:bob@localhost:{other.port}")
    assert reply is not None and reply.startswith(b"SIP/2.0 503 ")
    assert wait_for(lambda: "Hostname mismatch, certificate is not valid for 'localhost'" in sp.log()), (
        sp.log()
    )

    stranger = uas_factory(TestCA(Path(str(ca.dir) + "-other")).issue("uas-unknown-ca"))
    reply = relay_via_udp(sp, f"sip:bob@127.0.0.1:{stranger.port};transport=tls")
    assert reply is not None and reply.startswith(b"SIP/2.0 503 ")
    assert wait_for(lambda: "certificate refused: unable to get local issuer certificate" in sp.log()), (
        sp.log()
    )
    assert not expired.requests and not other.requests and not stranger.requests
    # the server goes on serving
    assert relay_via_udp(sp, f"sips:bob@localhost:{good.port}", "OPTIONS") is not None


def test_tls_listener_and_inbound_connection_reuse(
    ser_factory: StartSer, ca: TestCA, server_cert: Issued
) -> None:
    """The TLS listener answers (``proto==TLS`` in the script), and a
    client that connected to us (and listens nowhere) gets requests for its
    Via address on that connection (RFC 5923 alias)."""
    sp = start_tls_ser(ser_factory, ca, server_cert)
    with tls_client(sp, ca) as sock:
        assert sock.version() in ("TLSv1.2", "TLSv1.3")
        client_port = free_port()  # what the client's Via says; nothing listens there
        for _ in range(3):  # a persistent connection carries several requests
            sock.sendall(
                sip_request("OPTIONS", f"sip:127.0.0.1:{sp.tls_port};transport=tls", client_port, alias=True)  # type: ignore[attr-defined]
            )
            reply = read_message(sock)
            assert reply.startswith(b"SIP/2.0 200 ") and b"X-Proto: tls" in reply, reply
            assert b"Via: SIP/2.0/TLS 127.0.0.1:" in reply
        # the same script over UDP says "other"
        reply = udp_exchange(
            sip_request("OPTIONS", f"sip:127.0.0.1:{sp.port}", 9, transport="UDP"), sp.host, sp.port
        )
        assert reply is not None and b"X-Proto: other" in reply
        # a request for the client's address comes in over UDP and is relayed on the connection
        done: list[bytes | None] = []
        t = threading.Thread(
            target=lambda: done.append(relay_via_udp(sp, f"sip:alice@127.0.0.1:{client_port};transport=tls"))
        )
        t.start()
        req = read_message(sock)
        assert req.startswith(b"MESSAGE sip:alice@127.0.0.1:"), req
        head = req.split(b"\r\n\r\n")[0].split(b"\r\n")
        keep = [
            h for h in head[1:] if h.split(b":")[0].lower() in (b"via", b"from", b"to", b"call-id", b"cseq")
        ]
        sock.sendall(b"SIP/2.0 200 OK\r\n" + b"\r\n".join(keep) + b"\r\nContent-Length: 0\r\n\r\n")
        t.join(15)
        assert done and done[0] is not None and done[0].startswith(b"SIP/2.0 200 ")


def test_bad_input_on_tls_and_tcp_ports(ser_factory: StartSer, ca: TestCA, server_cert: Issued) -> None:
    sp = start_tls_ser(ser_factory, ca, server_cert, "tls_handshake_timeout=1\n")
    tls_port = sp.tls_port  # type: ignore[attr-defined]
    silent = socket.create_connection((sp.host, tls_port))  # connects and says nothing

    def closed_by_server(sock: socket.socket) -> bool:
        sock.settimeout(5)
        try:
            while sock.recv(4096):
                pass
        except ConnectionResetError:
            pass
        return True

    # plain SIP to the TLS port
    with socket.create_connection((sp.host, tls_port)) as s:
        s.sendall(sip_request("OPTIONS", f"sip:127.0.0.1:{tls_port}", 9, transport="TCP"))
        assert closed_by_server(s)
    assert wait_for(
        lambda: (
            "tls from 127.0.0.1: no TLS handshake (plain SIP: 'OPTIONS sip:') on a TLS port; closing connection"
            in sp.log()
        )
    )
    # handshake garbage: a handshake record header and nonsense
    with socket.create_connection((sp.host, tls_port)) as s:
        s.sendall(b"\x16\x03\x01\x00\x20" + bytes(range(32)) + b"\x16\x03\x01\xff\xff" + b"x" * 64)
        assert closed_by_server(s)
    assert wait_for(lambda: "tls from 127.0.0.1: TLS error: " in sp.log()), sp.log()
    # a TLS hello to the plain TCP port
    raw = socket.create_connection((sp.host, sp.port))
    ctx = ssl.create_default_context()
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    with pytest.raises((ssl.SSLError, OSError)):
        ctx.wrap_socket(raw, server_hostname="localhost", do_handshake_on_connect=True)
    raw.close()
    assert wait_for(lambda: "a TLS handshake on a plain stream" in sp.log()), sp.log()
    # a client whose certificate check refuses ours: logged on our side too
    other_ca = TestCA(Path(str(ca.dir) + "-client"))
    raw = socket.create_connection((sp.host, tls_port))
    with pytest.raises(ssl.SSLCertVerificationError):
        client_context(other_ca).wrap_socket(raw, server_hostname="localhost")
    raw.close()
    assert wait_for(
        lambda: "tls from 127.0.0.1: TLS handshake refused by the peer: tlsv1 alert unknown ca" in sp.log()
    ), sp.log()
    assert wait_for(
        lambda: (
            "tls from 127.0.0.1: handshake not done within tls_handshake_timeout (1 s); closing connection"
            in sp.log()
        )
    )
    silent.settimeout(5)
    assert silent.recv(100) == b""  # closed by the server
    silent.close()
    # the server is unaffected: another client is served
    with tls_client(sp, ca) as sock:
        sock.sendall(sip_request("OPTIONS", f"sip:127.0.0.1:{tls_port}", sock.getsockname()[1]))
        assert read_message(sock).startswith(b"SIP/2.0 200 ")
    assert sp.alive()
