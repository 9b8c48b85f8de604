"""The ``ser`` process: sipsak, command line, signals, TCP and IPv6 listeners."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.support import ROOT, SerProcess, free_port, need_tool, options_request, udp_exchange, wait_for

pytestmark = pytest.mark.interop

ROUTES = """\
from sipexpress.script.pyroute import sl_send_reply

OPTIONS = {{"listen": "udp:{host}:{port} tcp:{host}:{port}", "fifo": "{fifo}"}}
MODULES = ["sl"]


async def request_route(ctx):
    if ctx.msg.method == "OPTIONS":
        return sl_send_reply(ctx, 200, "OK")
    if ctx.msg.method != "ACK":
        return sl_send_reply(ctx, 404, "Not Here")
    return 0
"""

SerFactory = Callable[..., SerProcess]


def ser_cmd(*args: str) -> list[str]:
    return [sys.executable, "-m", "sipexpress.cli.ser", *args]


def tcp_exchange(data: bytes, host: str, port: int, timeout: float = 3.0) -> bytes:
    fam = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(fam, socket.SOCK_STREAM) as s:
        s.settimeout(timeout)
        s.connect((host, port))
        s.sendall(data)
        buf = b""
        while b"\r\n\r\n" not in buf:
            chunk = s.recv(65535)
            if not chunk:
                break
            buf += chunk
        return buf


def test_sipsak_gets_reply(ser_factory: SerFactory) -> None:
    sipsak = need_tool("sipsak")
    ser = ser_factory(ROUTES, suffix=".py")
    p = subprocess.run(
        [sipsak, "-vv", "-s", f"sip:{ser.host}:{ser.port}"], capture_output=True, text=True, timeout=30
    )
    assert p.returncode == 0, p.stdout + p.stderr
    assert "SIP/2.0 200 OK" in p.stdout
    assert "Server: Sip EXpress router" in p.stdout
    # sipsak asks for rport: the reply's Via carries it with the source port
    assert ";rport=" in p.stdout


def test_reply_over_tcp_and_negative_reply(ser_factory: SerFactory) -> None:
    ser = ser_factory(ROUTES, suffix=".py")
    req = (
        options_request(ser.host, ser.port)
        .replace(b"OPTIONS", b"MESSAGE")
        .replace(b"1 MESSAGE", b"1 MESSAGE")
    )
    req = req.replace(b"CSeq: 1 OPTIONS", b"CSeq: 1 MESSAGE").replace(b"SIP/2.0/UDP", b"SIP/2.0/TCP")
    reply = tcp_exchange(req, ser.host, ser.port)
    assert reply.startswith(b"SIP/2.0 404 Not Here\r\n")
    assert b";tag=" in reply.split(b"\r\nTo:")[1].split(b"\r\n")[0]
    # the Via host (127.0.0.1:9) differs in port only: no received, no rport
    assert b"received=" not in reply


def test_ipv6_listener(ser_factory: SerFactory, tmp_path: Path) -> None:
    if not socket.has_ipv6:
        pytest.skip("no IPv6")
    try:
        with socket.socket(socket.AF_INET6, socket.SOCK_DGRAM) as s:
            s.bind(("::1", 0))
    except OSError:
        pytest.skip("no ::1")
    port = free_port()
    cfg = ROUTES.replace(
        '"listen": "udp:{host}:{port} tcp:{host}:{port}"', '"listen": "{host}:{port} [::1]:{port}"'
    )
    ser = ser_factory(cfg, port=port, suffix=".py")
    with socket.socket(socket.AF_INET6, socket.SOCK_DGRAM) as s:
        s.settimeout(3)
        s.sendto(options_request("[::1]", port).replace(b"127.0.0.1:9", b"[::1]:9"), ("::1", port))
        data = s.recvfrom(65535)[0]
    assert data.startswith(b"SIP/2.0 200 OK")
    # the Via said [::1]:9 but the datagram came from another port: no
    # received (same address), no rport (not asked for)
    assert b"Via: SIP/2.0/UDP [::1]:9;branch=" in data
    assert tcp_exchange(options_request("[::1]", port), "::1", port).startswith(b"SIP/2.0 200 OK")
    assert ser.alive()


def test_sigterm_and_sigint_stop_cleanly(ser_factory: SerFactory) -> None:
    for sig in (signal.SIGTERM, signal.SIGINT):
        ser = ser_factory(ROUTES, suffix=".py", extra_args=["-P", "ser.pid"])
        pidfile = ser.workdir / "ser.pid"
        assert pidfile.read_text().strip() == str(ser.proc.pid if ser.proc else -1)
        assert Path(ser.fifo).exists()  # management layer started by the core
        assert ser.stop(sig) == 0, ser.log()
        assert "shutting down" in ser.log()
        # stop() ran: the FIFO is removed by the management layer, the pid file by ser
        assert not Path(ser.fifo).exists()
        assert not pidfile.exists()


def fifo_call(fifo: str, command: str, timeout: float = 5.0) -> str:
    """One FIFO request, SER style: create a reply FIFO, write, read to EOF."""
    name = f"ser_reply_{uuid.uuid4().hex[:8]}"
    reply_path = Path("/tmp") / name
    os.mkfifo(reply_path, 0o666)
    out = b""
    try:
        fd = os.open(reply_path, os.O_RDONLY | os.O_NONBLOCK)
        with open(fifo, "w") as f:
            f.write(f":{command}:{name}\n\n")
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                chunk = os.read(fd, 65536)
            except BlockingIOError:
                time.sleep(0.05)
                continue
            if not chunk and out:
                break
            out += chunk
            if not chunk:
                time.sleep(0.05)
        os.close(fd)
    finally:
        reply_path.unlink()
    return out.decode()


def test_sl_stats_and_ps_over_fifo(ser_factory: SerFactory) -> None:
    ser = ser_factory(ROUTES, suffix=".py")
    info = options_request(ser.host, ser.port, ruri=f"sip:x@{ser.host}").replace(b"OPTIONS", b"INFO")
    assert udp_exchange(info, ser.host, ser.port) is not None
    assert udp_exchange(options_request(ser.host, ser.port), ser.host, ser.port) is not None
    text = fifo_call(ser.fifo, "sl_stats")
    assert text.startswith("200 ok\n200: ")
    # our OPTIONS (and maybe start-up probes) got 200 OK; the INFO got a 404
    lines = text.splitlines()
    assert len(lines) == 8, text
    assert lines[1].startswith("200: ") and not lines[1].startswith("200: 0 "), text
    assert " 404: 1 " in lines[3] and lines[-1].startswith("failures: 0")
    ps = fifo_call(ser.fifo, "ps")
    assert ps.startswith("200 ok\n")
    assert f"receiver child=0 sock= {ser.host}:{ser.port}" in ps
    assert "fifo server" in ps


def test_check_config_and_errors(tmp_path: Path) -> None:
    good = tmp_path / "good.py"
    good.write_text(ROUTES.format(host="127.0.0.1", port=free_port(), fifo=""))
    p = subprocess.run(ser_cmd("-c", "-f", str(good)), capture_output=True, text=True, cwd=ROOT, timeout=30)
    assert p.returncode == 0, p.stderr
    assert "config file ok" in p.stderr
    bad = tmp_path / "bad.py"
    bad.write_text("from sipexpress.script.pyroute import sl_send_reply\nasync def request_route(ctx)\n")
    p = subprocess.run(ser_cmd("-c", "-f", str(bad)), capture_output=True, text=True, cwd=ROOT, timeout=30)
    assert p.returncode != 0 and "bad.py:2" in p.stderr
    p = subprocess.run(
        ser_cmd("-c", "-f", str(tmp_path / "missing.py")), capture_output=True, text=True, timeout=30
    )
    assert p.returncode != 0 and "no such file" in p.stderr
    p = subprocess.run(ser_cmd("-x"), capture_output=True, text=True, timeout=30)
    assert p.returncode != 0 and "Usage" in p.stderr


def test_version_and_help() -> None:
    p = subprocess.run(ser_cmd("-V"), capture_output=True, text=True, timeout=30)
    assert p.returncode == 0 and "Sip EXpress router" in p.stdout
    p = subprocess.run(ser_cmd("-h"), capture_output=True, text=True, timeout=30)
    assert p.returncode == 0 and "-f file" in p.stdout


def test_command_line_listen_and_workers(ser_factory: SerFactory) -> None:
    """-l replaces listen= of the script; -n 4 starts four worker processes."""
    port = free_port()
    ser = ser_factory(
        ROUTES.replace("{port}", "1"),  # the script's own listen port is not used
        port=port,
        suffix=".py",
        extra_args=["-l", f"udp:127.0.0.1:{port}", "-n", "4", "-dd"],
    )
    assert ser.alive()
    assert "starting 4 worker processes (children)" in ser.log()
    assert wait_for(lambda: ser.log().count(f"listening on udp:127.0.0.1:{port}") == 4)
    assert "listening on tcp:" not in ser.log()


def test_bind_failure_is_reported(tmp_path: Path) -> None:
    port = free_port()
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as blocker:
        blocker.bind(("127.0.0.1", port))
        cfg = tmp_path / "r.py"
        cfg.write_text(ROUTES.format(host="127.0.0.1", port=port, fifo=""))
        p = subprocess.run(
            ser_cmd("-f", str(cfg), "-D", "-E"), capture_output=True, text=True, timeout=30, cwd=ROOT
        )
    assert p.returncode != 0
    assert f"cannot bind udp:127.0.0.1:{port}" in p.stderr


LIMITS = """\
from sipexpress.script.pyroute import sl_send_reply

OPTIONS = {{"listen": "udp:{host}:{port} tcp:{host}:{port}", "tcp_connection_lifetime": 1, "max_msg_size": 1200}}
MODULES = ["sl"]


def request_route(ctx):
    return sl_send_reply(ctx, 200, "OK")
"""


def test_idle_tcp_connection_closed_and_size_limit(ser_factory: SerFactory) -> None:
    ser = ser_factory(LIMITS, suffix=".py")
    with socket.create_connection((ser.host, ser.port), timeout=5) as s:
        s.sendall(options_request(ser.host, ser.port))
        assert s.recv(65535).startswith(b"SIP/2.0 200 OK")
        t0 = time.monotonic()
        assert s.recv(65535) == b""  # closed by the server when idle
        assert time.monotonic() - t0 < 4.5
    big = options_request(ser.host, ser.port).replace(
        b"Max-Forwards", b"X-Pad: " + b"x" * 1300 + b"\r\nMax-Forwards"
    )
    assert udp_exchange(big, ser.host, ser.port, 1.0) is None
    with socket.create_connection((ser.host, ser.port), timeout=5) as s:
        s.sendall(big)
        data = s.recv(65535)
    assert data.startswith(b"SIP/2.0 413 ")  # too large for a stream: answered, then closed
    assert udp_exchange(options_request(ser.host, ser.port), ser.host, ser.port) is not None


CFG = """\
listen=udp:{host}:{port}
listen=tcp:{host}:{port}
loadmodule "sl"
route {{
    if (method=="OPTIONS") {{ sl_send_reply("200", "OK from cfg"); break; }};
    sl_send_reply("404", "Not Here");
}}
"""


def test_cfg_file_and_default_config(ser_factory: SerFactory) -> None:
    ser = ser_factory(CFG)
    reply = udp_exchange(options_request(ser.host, ser.port), ser.host, ser.port)
    assert reply is not None and reply.startswith(b"SIP/2.0 200 OK from cfg\r\n")
    p = subprocess.run(ser_cmd("-c"), capture_output=True, text=True, cwd=ROOT, timeout=60)
    assert p.returncode == 0, p.stderr


def test_daemon_mode(tmp_path: Path) -> None:
    """Without -D ser double-forks: the command returns, the daemon serves
    and writes its pid file; SIGTERM stops it."""
    port = free_port()
    cfg = tmp_path / "r.py"
    cfg.write_text(ROUTES.format(host="127.0.0.1", port=port, fifo=""))
    pidfile = tmp_path / "ser.pid"
    p = subprocess.run(ser_cmd("-f", str(cfg), "-P", str(pidfile)), cwd=ROOT, timeout=30, capture_output=True)
    assert p.returncode == 0
    deadline = time.monotonic() + 15
    reply = None
    while time.monotonic() < deadline and reply is None:
        reply = udp_exchange(options_request("127.0.0.1", port), "127.0.0.1", port, 0.3)
    assert reply is not None and reply.startswith(b"SIP/2.0 200 OK")
    pid = int(pidfile.read_text())
    assert Path(f"/proc/{pid}").exists()
    os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and pidfile.exists():
        time.sleep(0.1)
    assert not pidfile.exists()
    while time.monotonic() < deadline and Path(f"/proc/{pid}").exists():
        time.sleep(0.1)
    assert not Path(f"/proc/{pid}").exists() or "Z" in Path(f"/proc/{pid}/stat").read_text().split()[2]


def test_port_option_applies_to_listen_without_port(ser_factory: SerFactory) -> None:
    port = free_port()
    script = ROUTES.replace('"listen": "udp:{host}:{port} tcp:{host}:{port}"', '"listen": "{host}"')
    ser = ser_factory(script, port=port, suffix=".py", extra_args=["-p", str(port)])
    reply = udp_exchange(options_request(ser.host, port), ser.host, port)
    assert reply is not None and reply.startswith(b"SIP/2.0 200 OK")
    assert tcp_exchange(options_request(ser.host, port), ser.host, port).startswith(b"SIP/2.0 200 OK")
