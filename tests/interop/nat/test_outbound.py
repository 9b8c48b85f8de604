"""Registration through an edge proxy (RFC 3327 Path) with SIP Outbound
(RFC 5626): two ``ser``s on loopback, the edge (path module) and the
registrar (``use_path``, ``outbound_mode``).  The phone's Contact names an
address where nothing answers (TEST-NET 192.0.2.1): a call reaches it only
because the registrar routes through the stored Path and the edge sends the
request down the flow its flow token names.  Also: a forged flow token is
refused, CRLF keep-alives on TCP get their pong, and natping pings a TCP
binding with CRLFCRLF on its connection."""

from __future__ import annotations

import socket
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tests.support import SerProcess, SippPhone, free_port, udp_exchange, wait_for

pytestmark = pytest.mark.interop

# the registrar also takes phones over TCP directly, saving their source
# (fix_nated_register) and keeping their connections alive (natping)
REGISTRAR = """
listen=udp:{host}:{port}
listen=tcp:{host}:{port}
fifo="{fifo}"
loadmodule "sl"
loadmodule "tm"
loadmodule "rr"
loadmodule "usrloc"
loadmodule "registrar"
loadmodule "nathelper"
modparam("registrar", "use_path", 1)
modparam("registrar", "outbound_mode", 1)
modparam("tm", "fr_timer", 3)
modparam("nathelper", "natping_interval", 1)
route {{
    if (loose_route()) {{ t_relay(); break; }};
    if (method == "REGISTER") {{
        if (proto == TCP) {{ fix_nated_register(); }};
        save("location");
        break;
    }};
    if (!lookup("location")) {{ sl_send_reply("404", "Not Found"); break; }};
    if (method == "INVITE") {{ record_route(); }};
    t_relay();
}}
"""

EDGE = """
listen=udp:{host}:{port}
fifo="{fifo}"
loadmodule "sl"
loadmodule "tm"
loadmodule "rr"
loadmodule "path"
modparam("tm", "fr_timer", 3)
route {{
    if (loose_route()) {{
        if (method == "INVITE") {{ record_route(); }};
        t_relay();
        break;
    }};
    if (method == "REGISTER") {{ add_path(); t_relay_to_udp("127.0.0.1", "{registrar}"); break; }};
    sl_send_reply("403", "Only registrations and routed requests here");
}}
"""


def _start(cfg: str, workdir: Path, **fmt: object) -> SerProcess:
    port = free_port()
    workdir.mkdir(parents=True)
    path = workdir / "ser.cfg"
    path.write_text(cfg.format(host="127.0.0.1", port=port, fifo=workdir / "ser_fifo", **fmt))
    sp = SerProcess(path, "127.0.0.1", port, workdir)
    sp.start()
    return sp


@pytest.fixture(scope="module")
def pair(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[SerProcess, SerProcess]]:
    """The registrar and the edge proxy in front of it (shared: starting
    a ser is the slow part)."""
    base = tmp_path_factory.mktemp("outbound")
    started: list[SerProcess] = []
    try:
        started.append(_start(REGISTRAR, base / "registrar"))
        started.append(_start(EDGE, base / "edge", registrar=started[0].port))
        yield started[0], started[1]
    finally:
        for sp in started:
            sp.stop()


def test_call_reaches_an_outbound_phone_through_path_and_flow_token(
    pair: tuple[SerProcess, SerProcess], tmp_path: Path
) -> None:
    registrar, edge = pair
    phone = SippPhone(
        "register_outbound.xml",
        tmp_path / "phone",
        extra=["-s", "phone", "-oocsf", str(Path(__file__).parents[2] / "data" / "sipp" / "uas_answer.xml")],
        remote=f"127.0.0.1:{edge.port}",
    )
    try:
        # the registrar answered 200 with Require: outbound and the edge's Path (;ob, a flow token)
        assert wait_for(lambda: "Require: outbound" in phone.received(), 10), (
            phone.received() + registrar.log()
        )
        trace = phone.received()
        assert ";ob>" in trace and "Path: <sip:" in trace
        caller = SippPhone(
            "uac_rr.xml",
            tmp_path / "caller",
            extra=["-s", "phone", "-timeout", "10"],
            remote=f"127.0.0.1:{registrar.port}",
        )
        assert caller.wait(20) == 0, caller.received() + registrar.log() + edge.log()
        got = phone.received()
        # the INVITE came to the phone's flow although its Contact names
        # 192.0.2.1, and so did the ACK and the BYE: the edge Record-Routed
        # with the flow token (RFC 5626 §5.3)
        assert "INVITE sip:phone@192.0.2.1:5099;ob SIP/2.0" in got
        assert "ACK sip:callee@192.0.2.1:5099;ob SIP/2.0" in got
        assert "BYE sip:callee@192.0.2.1:5099;ob SIP/2.0" in got
    finally:
        phone.stop()


def test_forged_flow_token_is_refused(pair: tuple[SerProcess, SerProcess]) -> None:
    _, edge = pair
    invite = (
        f"INVITE sip:phone@192.0.2.1:5099 SIP/2.0\r\n"
        f"Via: SIP/2.0/UDP 127.0.0.1:9;branch=z9hG4bK{uuid.uuid4().hex}\r\n"
        f"Route: <sip:AAAAforgedAAAA@127.0.0.1:{edge.port};lr;ob>\r\n"
        "From: <sip:x@example.org>;tag=1\r\nTo: <sip:phone@example.org>\r\n"
        f"Call-ID: {uuid.uuid4().hex}\r\nCSeq: 1 INVITE\r\nMax-Forwards: 70\r\nContent-Length: 0\r\n\r\n"
    ).encode()
    reply = udp_exchange(invite, "127.0.0.1", edge.port, 5)
    assert reply is not None and reply.startswith(b"SIP/2.0 403 "), reply


def _read_until(s: socket.socket, want: Callable[[bytes], bool], timeout: float) -> bytes:
    buf = b""
    deadline = time.monotonic() + timeout
    while not want(buf) and time.monotonic() < deadline:
        s.settimeout(max(0.05, deadline - time.monotonic()))
        try:
            chunk = s.recv(4096)
        except TimeoutError:
            break
        if not chunk:
            break
        buf += chunk
    return buf


def test_tcp_crlf_ping_pong_and_natping_on_the_connection(pair: tuple[SerProcess, SerProcess]) -> None:
    ser, _ = pair
    with socket.create_connection(("127.0.0.1", ser.port), timeout=5) as s:
        # RFC 5626 §3.5.1: CRLFCRLF is answered by one CRLF (also split over two writes)
        s.sendall(b"\r\n\r\n")
        assert _read_until(s, lambda b: b == b"\r\n", 3) == b"\r\n"
        s.sendall(b"\r\n")
        time.sleep(0.05)
        s.sendall(b"\r\n")
        assert _read_until(s, lambda b: b == b"\r\n", 3) == b"\r\n"
        # a single CRLF (RFC 3261 §7.5 padding) is no ping
        s.sendall(b"\r\n")
        assert _read_until(s, lambda b: bool(b), 0.5) == b""
        lport = s.getsockname()[1]
        register = (
            f"REGISTER sip:127.0.0.1:{ser.port} SIP/2.0\r\n"
            f"Via: SIP/2.0/TCP 10.0.0.2:5060;branch=z9hG4bK{uuid.uuid4().hex}\r\n"
            "From: <sip:tcpphone@127.0.0.1>;tag=1\r\nTo: <sip:tcpphone@127.0.0.1>\r\n"
            f"Call-ID: {uuid.uuid4().hex}\r\nCSeq: 1 REGISTER\r\n"
            "Contact: <sip:tcpphone@10.0.0.2:5060;transport=tcp>\r\nExpires: 600\r\n"
            "Max-Forwards: 70\r\nContent-Length: 0\r\n\r\n"
        ).encode()
        s.sendall(register)
        got = _read_until(s, lambda b: b"\r\n\r\n" in b, 5)
        assert got.startswith(b"SIP/2.0 200 "), got
        assert f'received="sip:127.0.0.1:{lport};transport=tcp"'.encode() in got
        # natping: CRLFCRLF on the binding's own connection within the interval
        rest = got[got.index(b"\r\n\r\n") + 4 :]
        ping = rest + _read_until(s, lambda b: b"\r\n\r\n" in rest + b, 5)
        assert ping == b"\r\n\r\n", ping
