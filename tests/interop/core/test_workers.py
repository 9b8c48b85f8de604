"""Worker processes (``children``): SIPp calls, CANCEL and failure_route
spread over 2 and 4 workers, registrations seen by every worker at once, a
TCP phone held by one worker called through the others, t_uac_dlg, the
management commands answering for the whole server, and the supervisor.

Every SIPp client runs with ``-t un`` (one socket per call): the kernel
spreads the calls over the workers' SO_REUSEPORT sockets by source port.
"""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import sys
import urllib.request
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from sipexpress.mgmt.client import fifo_request
from sipexpress.sip.message import SipMessage
from tests.interop.tm.phone import reply_to
from tests.support import free_port, need_tool, udp_bound, wait_for

pytestmark = pytest.mark.interop

DATA = Path(__file__).resolve().parents[2] / "data" / "sipp"
TM_SCEN = Path(__file__).resolve().parents[1] / "tm" / "scenarios"

CFG = """
debug=3
children={children}
listen=udp:{host}:{port}
listen=tcp:{host}:{port}
fifo="{fifo}"
jsonrpc_http="127.0.0.1:{rpc}"
jsonrpc_secret="t0ken"
loadmodule "sl"
loadmodule "tm"
loadmodule "rr"
loadmodule "usrloc"
loadmodule "registrar"
loadmodule "uri"
loadmodule "exec"
modparam("tm", "wt_timer", 1)
modparam("tm", "fr_timer", 10)  # a loaded machine: SIPp may answer late

route{{
    if (method=="OPTIONS" && uri==myself) {{ sl_send_reply("200", "ok"); break; }};
    if (has_totag()) {{
        if (loose_route()) {{ t_relay(); break; }};
        if (method=="ACK") {{ t_relay(); break; }};
        sl_send_reply("404", "Not here");
        break;
    }};
    if (method=="INVITE") {{ record_route(); }};
    if (method=="REGISTER") {{ save("location"); break; }};
    if (uri=~"^sip:exec@") {{ exec_msg("cat > {workdir}/exec.$$"); sl_send_reply("200", "ran"); break; }};
    if (uri=~"^sip:busy@") {{ t_on_failure("1"); }};
    if (!lookup("location")) {{ sl_send_reply("404", "Not Found"); break; }};
    t_relay();
}}

failure_route[1] {{
    if (t_check_status("486")) {{
        seturi("sip:uas@{host}:{port}");
        lookup("location");
        append_branch();
        t_relay();
    }};
}}
"""


def start_ser(ser_factory: Callable[..., Any], children: int) -> Any:
    return ser_factory(CFG, children=children, rpc=free_port(socket.SOCK_STREAM))


def register(ser: Any, user: str, contact_port: int, transport: str = "") -> None:
    """REGISTER ``user`` -> 127.0.0.1:contact_port from a fresh UDP socket."""
    tp = f";transport={transport}" if transport else ""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("127.0.0.1", 0))
        s.settimeout(5)
        s.sendto(
            request(
                "REGISTER",
                f"sip:{ser.host}:{ser.port}",
                user,
                s,
                f"<sip:{user}@127.0.0.1:{contact_port}{tp}>",
            ),
            (ser.host, ser.port),
        )
        rep = SipMessage.parse(s.recv(65535))
    assert rep.status == 200, rep.first_line


def request(
    method: str, ruri: str, user: str, s: socket.socket, contact: str = "", proto: str = "UDP"
) -> bytes:
    host, port = s.getsockname()[:2]
    lines = [
        f"{method} {ruri} SIP/2.0",
        f"Via: SIP/2.0/{proto} {host}:{port};branch=z9hG4bK{uuid.uuid4().hex}",
        "Max-Forwards: 70",
        f"From: <sip:caller@{host}>;tag={uuid.uuid4().hex[:8]}",
        f"To: <sip:{user}@{host}>",
        f"Call-ID: {uuid.uuid4().hex}",
        f"CSeq: 1 {method}",
    ]
    if contact:
        lines += [f"Contact: {contact}", "Expires: 600"]
    lines += ["Content-Length: 0", "", ""]
    return "\r\n".join(lines).encode()


def uas(scenario: Path, port: int, calls: int) -> subprocess.Popen[bytes]:
    sipp = need_tool("sipp")
    proc = subprocess.Popen(
        [
            sipp,
            "-sf",
            str(scenario),
            "-i",
            "127.0.0.1",
            "-p",
            str(port),
            "-m",
            str(calls),
            "-nostdin",
            "-timeout",
            "40",
            "-timeout_error",
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    assert wait_for(lambda: proc.poll() is not None or udp_bound(port), 10.0), "SIPp UAS did not start"
    return proc


def uac(ser: Any, scenario: Path, service: str, calls: int) -> subprocess.Popen[str]:
    sipp = need_tool("sipp")
    return subprocess.Popen(
        [
            sipp,
            "-sf",
            str(scenario),
            "-s",
            service,
            f"{ser.host}:{ser.port}",
            "-i",
            "127.0.0.1",
            "-t",
            "un",
            "-max_socket",
            "1000",
            "-m",
            str(calls),
            "-r",
            str(calls),
            "-nostdin",
            "-timeout",
            "40",
            "-timeout_error",
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )


def successful(stdout: str) -> int | None:
    value = None
    for line in stdout.splitlines():
        parts = [x.strip() for x in line.split("|")]
        if len(parts) >= 3 and parts[0] == "Successful call":
            value = int(parts[-1].split()[0])
    return value


def ps(ser: Any) -> list[tuple[int, str]]:
    rows = []
    for line in fifo_request(ser.fifo, "ps").splitlines()[1:]:
        _idx, pid, desc = line.split("\t", 2)
        rows.append((int(pid), desc))
    return rows


@pytest.mark.parametrize("children", [2, 4])
def test_calls_cancel_and_failure_route_over_workers(ser_factory: Callable[..., Any], children: int) -> None:
    """Replies, retransmissions, CANCEL and the ACK of the 487/486 reach
    the worker of the transaction: every call of every kind completes."""
    ser = start_ser(ser_factory, children)
    workers = {pid for pid, d in ps(ser) if d.startswith("receiver child=")}
    assert len(workers) == children
    n = 20
    ok_port, busy_port, ring_port = free_port(), free_port(), free_port()
    register(ser, "uas", ok_port)
    register(ser, "busy", busy_port)
    register(ser, "callee", ring_port)
    phones = [
        uas(DATA / "uas_rr.xml", ok_port, 2 * n),  # the plain calls and the ones failure_route sends on
        uas(TM_SCEN / "tm_uas_486.xml", busy_port, n),
        uas(TM_SCEN / "tm_uas_ring_cancel.xml", ring_port, n),
    ]
    callers = [
        uac(ser, DATA / "uac_rr.xml", "uas", n),
        uac(ser, DATA / "uac_rr.xml", "busy", n),
        uac(ser, TM_SCEN / "tm_uac_cancel.xml", "callee", n),
    ]
    outs = []
    for c in callers:
        out, _ = c.communicate(timeout=60)
        outs.append(out)
    for out in outs:
        assert successful(out) == n, out[-2500:] + ser.log()[-3000:]
    for p in phones:
        assert p.wait(30) == 0, ser.log()[-3000:]  # each UAS saw every ACK/BYE/CANCEL it expected
    # t_stats answers for the whole server: the transactions of all workers
    text = fifo_request(ser.fifo, "t_stats")
    total = int(re.search(r"Total: (\d+)", text).group(1))  # type: ignore[union-attr]
    assert total >= 2 * n + 2 * n + 2 * n, text
    twoxx = int(re.search(r",2xx: (\d+)", text).group(1))  # type: ignore[union-attr]
    assert twoxx >= 4 * n, text  # INVITE and BYE of the plain and the forwarded calls


@pytest.mark.parametrize("children", [4])
def test_registration_seen_by_every_worker_at_once(ser_factory: Callable[..., Any], children: int) -> None:
    """REGISTER from one socket, at once a MESSAGE from another (another
    worker, mostly): the look-up finds the binding; ul_rm through the FIFO
    removes it everywhere; ul_dump and ul_show_contact see every binding."""
    ser = start_ser(ser_factory, children)
    sink = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sink.bind(("127.0.0.1", 0))
    sink.settimeout(5)
    sink_port = sink.getsockname()[1]
    users = [f"u{i}" for i in range(16)]
    try:
        for user in users:
            register(ser, user, sink_port)
            message_reaches(ser, user, sink)
        # parallel forking: two contacts, each worker forks to both
        sink2 = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        sink2.bind(("127.0.0.1", 0))
        sink2.settimeout(5)
        register(ser, "fork", sink_port)
        register(ser, "fork", sink2.getsockname()[1])
        for _ in range(children):
            with message_from_fresh_socket(ser, "fork", 5) as s:
                for phone, code in ((sink, 486), (sink2, 200)):
                    msg = SipMessage.parse(phone.recv(65535))
                    phone.sendto(reply_to(msg, code, "x"), (ser.host, msg.via1.port or 5060))
                assert SipMessage.parse(s.recv(65535)).status == 200
        sink2.close()
        # exec in whichever worker: the command ran with the request on stdin
        for _ in range(children):
            with message_from_fresh_socket(ser, "exec", 10) as s:
                assert SipMessage.parse(s.recv(65535)).status == 200
        assert len(list(ser.workdir.glob("exec.*"))) == children
        dump = fifo_request(ser.fifo, "ul_dump")
        assert all(f"'{u}'" in dump for u in users), dump
        shown = fifo_request(ser.fifo, "ul_show_contact", ["location", "u7"])
        assert f"sip:u7@127.0.0.1:{sink_port}" in shown
        assert fifo_request(ser.fifo, "ul_rm", ["location", "u7"]).startswith("200")
        for _ in range(2 * children):  # whichever worker takes it: gone
            with message_from_fresh_socket(ser, "u7", 5) as s:
                assert SipMessage.parse(s.recv(65535)).status == 404
        # t_uac_dlg from the FIFO (worker 0): the reply comes back to it
        pending = subprocess.Popen(
            [sys.executable, "-c", _FIFO_CALL, ser.fifo, f"sip:u3@{ser.host}:{ser.port}"],
            stdout=subprocess.PIPE,
            text=True,
        )
        msg = SipMessage.parse(sink.recv(65535))
        assert msg.method == "MESSAGE"
        sink.sendto(reply_to(msg, 202, "Accepted"), (ser.host, msg.via1.port or 5060))
        out, _ = pending.communicate(timeout=20)
        assert out == "202 Accepted", out
        # counters summed over the workers; usrloc (replicated) counted once
        stats = fifo_request(ser.fifo, "stats.get_statistics", ["all"])
        assert "core:received_requests_register = 18\n" in stats, stats
        assert "usrloc:users_location = 16\n" in stats, stats
        for i in range(4):  # after the last command: /metrics asks the workers itself
            register(ser, f"late{i}", sink_port)
        rpc = re.search(r'jsonrpc_http="([^"]+)"', ser.cfg_path.read_text()).group(1)  # type: ignore[union-attr]
        with urllib.request.urlopen(f"http://{rpc}/metrics", timeout=10) as r:
            metrics = r.read().decode()
        assert 'sipexpress_core_received_requests_total{method="REGISTER"} 22.0' in metrics, metrics
    finally:
        sink.close()


def message_from_fresh_socket(ser: Any, user: str, timeout: float = 5) -> socket.socket:
    """A MESSAGE to ``user`` sent from a new socket (so, to whichever
    worker the kernel picks); the socket, to read the reply."""
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.bind(("127.0.0.1", 0))
    s.settimeout(timeout)
    s.sendto(request("MESSAGE", f"sip:{user}@{ser.host}:{ser.port}", user, s), (ser.host, ser.port))
    return s


def message_reaches(ser: Any, user: str, sink: socket.socket) -> None:
    """A MESSAGE to ``user`` from a fresh socket (so, whichever worker
    the kernel picks) reaches ``sink``, and sink's 200 the sender."""
    with message_from_fresh_socket(ser, user, 5) as s:
        msg = SipMessage.parse(sink.recv(65535))
        assert msg.method == "MESSAGE" and msg.ruri.startswith(
            f"sip:{user}@127.0.0.1:{sink.getsockname()[1]}"
        )
        sink.sendto(reply_to(msg, 200, "OK"), (ser.host, msg.via1.port or 5060))
        assert SipMessage.parse(s.recv(65535)).status == 200


_FIFO_CALL = (
    "import sys\n"
    "from sipexpress.mgmt.client import fifo_request\n"
    "from sipexpress.uac.flows import instant_message\n"
    "res = instant_message(lambda lines: fifo_request(sys.argv[1], 't_uac_dlg', lines, timeout=15),\n"
    "                      sys.argv[2], 'hi', '<sip:admin@example.com>')\n"
    "print(res.code, res.reason, end='')\n"
)


@pytest.mark.parametrize("children", [2])
def test_tcp_phone_held_by_another_worker(ser_factory: Callable[..., Any], children: int) -> None:
    """A phone registered over TCP (its contact reachable only through its
    connection) gets requests from every worker; its replies find the
    worker of the transaction."""
    ser = start_ser(ser_factory, children)
    unreachable = free_port(socket.SOCK_STREAM)  # nothing listens there: only the connection reaches it
    phone = socket.create_connection((ser.host, ser.port), timeout=5)
    try:
        reg = request("REGISTER", f"sip:{ser.host}:{ser.port}", "tcpphone", phone, proto="TCP")
        reg = reg.replace(
            f"{phone.getsockname()[0]}:{phone.getsockname()[1]};".encode(),
            f"127.0.0.1:{unreachable};".encode(),
        )
        reg = reg.replace(
            b"Content-Length: 0",
            f"Contact: <sip:tcpphone@127.0.0.1:{unreachable};transport=tcp>\r\nExpires: 600\r\nContent-Length: 0".encode(),
        )
        phone.sendall(reg)
        assert read_tcp(phone).status == 200
        for _ in range(4 * children):
            with message_from_fresh_socket(ser, "tcpphone", 8) as s:
                msg = read_tcp(phone)
                assert msg.method == "MESSAGE", msg.first_line
                phone.sendall(reply_to(msg, 200, "OK"))
                rep = SipMessage.parse(s.recv(65535))
                assert rep.status == 200, (rep.first_line, ser.log()[-2000:])
    finally:
        phone.close()


def read_tcp(conn: socket.socket) -> SipMessage:
    buf = b""
    while b"\r\n\r\n" not in buf:
        chunk = conn.recv(65535)
        assert chunk, "connection closed"
        buf += chunk
    return SipMessage.parse(buf)


def test_supervisor_ps_restart_and_stop(ser_factory: Callable[..., Any]) -> None:
    """ps lists the main process and each worker; FIFO served once; a
    killed worker is restarted, with the registrations of the others;
    SIGTERM stops everything with exit 0 and leaves no process behind.
    (A port in use: exit code 1, test_ser_process.test_bind_failure_is_reported
    with the default children.)"""
    ser = start_ser(ser_factory, 2)
    sink = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sink.bind(("127.0.0.1", 0))
    sink.settimeout(5)
    register(ser, "kept", sink.getsockname()[1])
    rows = ps(ser)
    main = ser.proc.pid
    assert rows[0] == (main, "main process: supervises 2 workers")
    workers = sorted({pid for pid, d in rows if d.startswith("receiver child=")})
    assert len(workers) == 2 and main not in workers
    assert [d for _, d in rows].count("fifo server") == 1
    for pid in workers:
        assert _ppid(pid) == main
    os.kill(workers[1], signal.SIGKILL)
    assert wait_for(lambda: "died (killed by signal 9): restarting it" in ser.log(), 10.0), ser.log()
    assert wait_for(
        lambda: len({p for p, d in ps(ser) if d.startswith("receiver child=")} - set(workers)) == 1, 10.0
    )
    for _ in range(6):  # whichever worker takes it, the new one too
        message_reaches(ser, "kept", sink)
    sink.close()
    everyone = {p for p, d in ps(ser) if d.startswith("receiver child=")}
    assert ser.stop() == 0
    assert all(not _alive(p) for p in everyone)


def _ppid(pid: int) -> int:
    return int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[1])


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def test_websocket_phone_held_by_another_worker(ser_factory: Callable[..., Any]) -> None:
    """A browser phone (WebSocket: it accepts no connection) registered
    through one worker is reached from every worker over its connection,
    and its replies complete the other workers' transactions."""
    from tests.interop.core import test_websocket as wst
    from tests.support import WsClient

    ser = wst.start(ser_factory, extra="children=2")
    client = WsClient(ser.host, ser.ws_port)
    try:
        assert wst.register(ser, client).startswith(b"SIP/2.0 200 ")
        for i in range(8):
            with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
                s.bind(("127.0.0.1", 0))
                s.settimeout(8)
                s.sendto(wst.message_to(ser, "alice"), (ser.host, ser.port))
                raw = client.recv()
                assert raw is not None and raw.startswith(b"MESSAGE sip:alicex@"), i
                client.send(reply_to(SipMessage.parse(raw), 200, "OK"))
                assert SipMessage.parse(s.recv(65535)).status == 200
    finally:
        client.close()
