"""serctl and JSON-RPC against a real ``ser`` process (the seed's examples)."""

from __future__ import annotations

import contextlib
import json
import os
import re
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.support import SerProcess, free_port

pytestmark = pytest.mark.interop

CFG = """
debug=3
fork=no
listen=127.0.0.1
port={port}
fifo="{fifo}"
fifo_dir="{workdir}/"
jsonrpc_http="127.0.0.1:{rpc_port}"
jsonrpc_socket="{workdir}/rpc.sock"
jsonrpc_secret_file="{workdir}/jsonrpc.secret"
loadmodule "sl"
loadmodule "tm"
loadmodule "usrloc"
loadmodule "registrar"
route {{
    if (method=="REGISTER") {{ save("location"); break; }};
    lookup("aliases");
    if (!lookup("location")) {{ sl_send_reply("404", "Not Found"); break; }};
    t_relay();
}}
"""


def serctl(
    sp: SerProcess, *args: str, env: dict[str, str] | None = None, **kw: Any
) -> subprocess.CompletedProcess[str]:
    e = dict(os.environ)
    e.update({"SER_FIFO": sp.fifo, "SER_FIFO_DIR": f"{sp.workdir}/", "SIP_DOMAIN": "iptel.org"})
    e["SER_RPC_SECRET_FILE"] = f"{sp.workdir}/jsonrpc.secret"
    e.update(env or {})
    return subprocess.run(
        [sys.executable, "-m", "sipexpress.cli.serctl", *args],
        capture_output=True,
        text=True,
        env=e,
        timeout=30,
        **kw,
    )


@pytest.fixture(scope="module")
def ser(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SerProcess]:
    """One server for this module's tests (they use distinct users)."""
    workdir = tmp_path_factory.mktemp("ser_mgmt")
    port = free_port()
    cfg = workdir / "ser.cfg"
    fifo = workdir / "ser_fifo"
    cfg.write_text(CFG.format(port=port, fifo=fifo, workdir=workdir, rpc_port=free_port()))
    sp = SerProcess(cfg, "127.0.0.1", port, workdir)
    sp.start()
    yield sp
    sp.stop()


def rpc_port(sp: SerProcess) -> int:
    m = re.search(r'jsonrpc_http="127.0.0.1:(\d+)"', sp.cfg_path.read_text())
    assert m
    return int(m.group(1))


def test_serctl_fifo_uptime(ser: SerProcess) -> None:
    r = serctl(ser, "fifo", "uptime")
    assert r.returncode == 0, r.stderr
    assert re.fullmatch(
        r"Now: \w{3} \w{3} [ \d]\d \d\d:\d\d:\d\d \d{4}\n"
        r"Up Since: \w{3} \w{3} [ \d]\d \d\d:\d\d:\d\d \d{4}\nUp time: \d+ \[sec\]\n",
        r.stdout,
    ), r.stdout


def test_serctl_fifo_which(ser: SerProcess) -> None:
    r = serctl(ser, "fifo", "which")
    names = r.stdout.split("\n")
    assert names[-9:] == ["log_tail", "ps", "which", "arg", "pwd", "version", "uptime", "print", ""]
    for module_cmd in ("t_stats", "sl_stats", "ul_show_contact", "ul_add", "ul_rm", "ul_dump"):
        assert module_cmd in names


def test_serctl_fifo_foobar(ser: SerProcess) -> None:
    r = serctl(ser, "fifo", "foobar")
    assert r.stdout == "500 command 'foobar' not available\n"
    assert r.returncode == 1


def test_seed_ul_show_contact_and_ul_add_routes(ser: SerProcess) -> None:
    # a UA that only listens: the proxy must relay to the contact given by ul_add
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as ua:
        ua.bind(("127.0.0.1", 0))
        ua.settimeout(5)
        ua_port = ua.getsockname()[1]
        r = serctl(ser, "fifo", "ul_add", "location", "jiri", f"sip:jiri@127.0.0.1:{ua_port}", "1012", "1.00")
        assert r.stdout.startswith("200 Added to table\n"), r.stdout + r.stderr
        r = serctl(ser, "fifo", "ul_show_contact", "location", "jiri")
        assert re.fullmatch(
            rf"<sip:jiri@127\.0\.0\.1:{ua_port}>;q=[\d.]*;expires=10(1[0-2]|0\d)\n", r.stdout
        ), r.stdout
        callid = uuid.uuid4().hex
        msg = (
            f"MESSAGE sip:jiri@127.0.0.1:{ser.port} SIP/2.0\r\n"
            "Via: SIP/2.0/UDP 127.0.0.1:9;branch=z9hG4bK" + uuid.uuid4().hex[:12] + "\r\n"
            "Max-Forwards: 70\r\nFrom: <sip:alice@iptel.org>;tag=1\r\nTo: <sip:jiri@iptel.org>\r\n"
            f"Call-ID: {callid}\r\nCSeq: 1 MESSAGE\r\nContent-Length: 0\r\n\r\n"
        ).encode()
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as caller:
            caller.sendto(msg, ("127.0.0.1", ser.port))
            data = ua.recv(65535)
        assert data.startswith(f"MESSAGE sip:jiri@127.0.0.1:{ua_port} SIP/2.0\r\n".encode())
        assert callid.encode() in data
    # serctl ul show / rm / online
    r = serctl(ser, "online")
    assert r.stdout == "'jiri'\n"
    r = serctl(ser, "ul", "rm", "jiri")
    assert r.stdout == "200 user (location, jiri@iptel.org) deleted\n"  # sc prints all but "200 ok"
    r = serctl(ser, "ul", "show", "jiri")
    assert r.stdout.startswith("404 ") and r.returncode == 1
    # and a call to jiri now gets the script's 404
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as caller:
        caller.bind(("127.0.0.1", 0))
        caller.settimeout(5)
        me = caller.getsockname()[1]
        again = msg.replace(b"127.0.0.1:9;", f"127.0.0.1:{me};".encode()).replace(
            callid.encode(), b"x" + callid.encode()
        )
        caller.sendto(again, ("127.0.0.1", ser.port))
        assert caller.recv(65535).startswith(b"SIP/2.0 404 Not Found\r\n")


def test_serctl_ul_and_alias_add(ser: SerProcess) -> None:
    r = serctl(ser, "ul", "add", "bob", "sip:bob@10.0.0.1")
    assert r.returncode == 0, r.stdout + r.stderr
    assert "Added to table" in r.stdout
    r = serctl(ser, "ul", "show", "bob@iptel.org")
    assert r.stdout.startswith("<sip:bob@10.0.0.1>;q=")
    r = serctl(ser, "ul", "add", "bob", "not-a-uri")
    assert r.returncode == 1 and "error: invalid URI: not-a-uri" in r.stderr
    db = {"SER_DB_URL": f"sqlite:///{ser.workdir}/db.sqlite"}
    r = serctl(ser, "alias", "add", "bobby", "sip:bob@iptel.org", env=db)
    assert r.returncode == 2 and "no database at" in r.stderr  # said clearly, and not created empty
    assert not (ser.workdir / "db.sqlite").exists()
    assert serctl(ser, "db", "create", env=db).returncode == 0
    r = serctl(ser, "alias", "add", "bobby", "sip:bob@iptel.org", env=db)
    assert r.returncode == 0 and r.stdout.startswith("200 Added to table\n"), r.stdout + r.stderr
    r = serctl(ser, "alias", "show", "bobby")
    assert r.stdout.startswith("<sip:bob@iptel.org>;q=")
    r = serctl(ser, "ul", "add", "bobby", "sip:bob@10.0.0.2")
    assert r.returncode == 1 and "error: Overlap with an existing alias" in r.stderr
    r = serctl(ser, "alias", "rm", "bobby")
    assert r.stdout == "200 user (aliases, bobby@iptel.org) deleted\n"
    assert serctl(ser, "add", "carol", "carol-pw1", "carol@iptel.org", env=db).returncode == 0
    r = serctl(ser, "alias", "add", "carol", "sip:bob@iptel.org", env=db)
    assert r.returncode == 1 and "overlap of alias with an existing subscriber name" in r.stderr
    r = serctl(ser, "ul", "add", "x", "sip:x@a.b", env={"SIP_DOMAIN": ""})
    assert r.returncode == 1 and "domain unknown" in r.stderr


def test_serctl_ps_and_monitor(ser: SerProcess) -> None:
    r = serctl(ser, "ps")
    rows = [ln.split("\t") for ln in r.stdout.splitlines()]
    assert rows[0][0] == "0" and rows[0][2] == "attendant"
    assert any(row[2] == "fifo server" for row in rows)
    assert all(row[1] == str(ser.proc.pid) for row in rows)  # type: ignore[union-attr]
    r = serctl(ser, "monitor", "1")
    assert r.returncode == 0
    for piece in (
        "[cycle #: 1;",
        "Server: Sip EXpress router",
        "Up time:",
        "Transaction Statistics",
        "Replied localy:",
        "Stateless Server Statistics",
        "failures:",
        "UsrLoc Stats",
        "Domain Registered Expired",
    ):
        assert piece in r.stdout


def test_monitor_ctrl_c(ser: SerProcess) -> None:
    e = dict(os.environ, SER_FIFO=ser.fifo, SER_FIFO_DIR=f"{ser.workdir}/", WATCH_PERIOD="0.2")
    p = subprocess.Popen(
        [sys.executable, "-m", "sipexpress.cli.serctl", "monitor"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=e,
    )
    assert p.stdout is not None
    seen = ""
    while "[cycle #: 2;" not in seen:  # a second screen (pytest's timeout bounds the wait)
        line = p.stdout.readline()
        assert line, p.stderr.read() if p.stderr else ""
        seen += line
    p.send_signal(2)
    out, err = p.communicate(timeout=10)
    out = seen + out
    assert p.returncode == 0, err
    assert "[cycle #: 2;" in out and out.endswith("serctl monitor ^C-ed\n")


def test_jsonrpc_http_and_socket_against_ser(ser: SerProcess) -> None:
    port = rpc_port(ser)
    r = serctl(ser, "--rpc-url", f"http://127.0.0.1:{port}/", "--json", "rpc", "uptime")
    assert r.returncode == 0, r.stderr
    assert set(json.loads(r.stdout)) == {"now", "up_since", "uptime"}
    r = serctl(ser, "--rpc-socket", f"{ser.workdir}/rpc.sock", "rpc", "ul_show_contact", "location", "nobody")
    assert r.returncode == 1 and r.stderr.startswith("404 ")
    r = serctl(ser, "--rpc-url", f"http://127.0.0.1:{port}/", "rpc", "foobar")
    assert r.returncode == 1 and "command 'foobar' not available" in r.stderr


def test_serctl_when_server_not_running(tmp_path: Path) -> None:
    e = dict(os.environ, SER_FIFO=str(tmp_path / "ser_fifo"))
    r = subprocess.run(
        [sys.executable, "-m", "sipexpress.cli.serctl", "fifo", "uptime"],
        capture_output=True,
        text=True,
        env=e,
    )
    assert r.returncode == 2
    assert f"Error opening ser's FIFO {tmp_path}/ser_fifo" in r.stderr
    assert "Make sure you have line fifo=" in r.stderr
    r = subprocess.run(
        [
            sys.executable,
            "-m",
            "sipexpress.cli.serctl",
            "--rpc-url",
            f"http://127.0.0.1:{free_port()}/",
            "rpc",
            "uptime",
        ],
        capture_output=True,
        text=True,
    )
    assert r.returncode == 2 and "cannot reach" in r.stderr


def test_help_on_every_command() -> None:
    from click.testing import CliRunner

    from sipexpress.cli.serctl import cli

    cmds = [
        "fifo",
        "rpc",
        "ps",
        "version",
        "online",
        "monitor",
        "ul",
        "ul show",
        "ul rm",
        "ul add",
        "alias",
        "alias show",
        "alias add",
        "alias rm",
        "add",
        "passwd",
        "rm",
        "mail",
        "showdb",
        "userdb",
        "acl",
        "acl show",
        "acl grant",
        "acl revoke",
        "db",
        "db create",
        "db migrate",
        "start",
        "stop",
        "restart",
    ]
    for c in ["", *cmds]:
        r = CliRunner().invoke(cli, [*c.split(), "--help"])
        assert r.exit_code == 0 and "Usage:" in r.output, c
    r = CliRunner().invoke(cli, ["nonsense"])
    assert r.exit_code == 2 and "No such command" in r.output


def test_start_stop_restart_with_pid_file(tmp_path: Path) -> None:
    port = free_port()
    cfg = tmp_path / "ser.cfg"
    fifo = tmp_path / "ser_fifo"
    cfg.write_text(
        f'listen=127.0.0.1\nport={port}\nfifo="{fifo}"\nfifo_dir="{tmp_path}/"\nloadmodule "sl"\n'
        'route { sl_send_reply("200", "ok"); }\n'
    )
    pid_file = tmp_path / "ser.pid"
    base = [
        sys.executable,
        "-m",
        "sipexpress.cli.serctl",
        "--pid-file",
        str(pid_file),
        "-c",
        str(cfg),
    ]
    pid = None
    try:
        r = subprocess.run([*base, "start"], capture_output=True, text=True, timeout=30)
        m = re.fullmatch(r"Starting SER : started pid\((\d+)\)\n", r.stdout)
        assert m, r.stdout + r.stderr
        pid = int(m.group(1))
        assert int(pid_file.read_text()) == pid
        deadline = time.monotonic() + 10
        while not fifo.exists() and time.monotonic() < deadline:
            time.sleep(0.1)
        r = subprocess.run([*base, "fifo", "uptime"], capture_output=True, text=True, timeout=10)
        assert "Up time:" in r.stdout
        r = subprocess.run([*base, "start"], capture_output=True, text=True, timeout=30)
        assert r.returncode == 1 and f"PID file exists! ({pid_file}) already running?" in r.stderr
        r = subprocess.run([*base, "restart"], capture_output=True, text=True, timeout=60)
        assert r.stdout.startswith("Stopping SER : stopped\nStarting SER : started pid("), r.stdout + r.stderr
        pid = int(pid_file.read_text())
        r = subprocess.run([*base, "stop"], capture_output=True, text=True, timeout=30)
        assert r.stdout == "Stopping SER : stopped\n", r.stderr
        pid = None
        assert not pid_file.exists()
        r = subprocess.run([*base, "stop"], capture_output=True, text=True, timeout=30)
        assert r.returncode == 1 and "No PID file found! SER probably not running" in r.stderr
    finally:
        if pid is not None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, 15)


def test_seed_shell_im_via_fifo(ser: SerProcess) -> None:
    """The seed's "Sending IM From Shell Script": a dotted t_uac_dlg request
    written with a heredoc and no final empty line."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as ua:
        ua.bind(("127.0.0.1", 0))
        ua.settimeout(5)
        target = f"sip:receiver@127.0.0.1:{ua.getsockname()[1]}"
        script = (
            f"cat > {ser.fifo} <<EOF\n"
            ":t_uac_dlg:hh\n"
            "MESSAGE\n"
            "$1\n"
            ".\n"
            "From: sip:originator@foo.bar\n"
            "To: $1\n"
            "foo: bar_special_header\n"
            "x: y\n"
            "p_header: p_value\n"
            "Contact: <sip:devnull@foo.bar:5060;user=phone;transport=udp>\n"
            "Content-Type: text/plain; charset=UTF-8\n"
            ".\n"
            "Hello world!!!! $2\n"
            ".\n"
            "EOF\n"
        )
        shell = subprocess.run(["bash", "-c", script, "im", target, "from shell"], timeout=10)
        assert shell.returncode == 0
        data, addr = ua.recvfrom(65535)
        text = data.decode()
        assert text.startswith(f"MESSAGE {target} SIP/2.0\r\n")
        assert "foo: bar_special_header\r\n" in text and "p_header: p_value\r\n" in text
        assert text.endswith("\r\n\r\nHello world!!!! from shell\r\n")
        # answer it, so the transaction completes
        head = text.split("\r\n\r\n")[0].split("\r\n")
        keep = [h for h in head[1:] if h.split(":")[0].lower() in ("via", "from", "to", "call-id", "cseq")]
        ua.sendto(("SIP/2.0 200 OK\r\n" + "\r\n".join(keep) + "\r\nContent-Length: 0\r\n\r\n").encode(), addr)
    r = serctl(ser, "fifo", "uptime")
    assert "Up time:" in r.stdout


@pytest.mark.parametrize("status", ["200 OK", "486 Busy Here"])
def test_serctl_ping(ser: SerProcess, status: str) -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as ua:
        ua.bind(("127.0.0.1", 0))
        ua.settimeout(10)
        uri = f"sip:pinged@127.0.0.1:{ua.getsockname()[1]}"
        p = subprocess.Popen(
            [sys.executable, "-m", "sipexpress.cli.serctl", "ping", uri],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=dict(os.environ, SER_FIFO=ser.fifo, SER_FIFO_DIR=f"{ser.workdir}/"),
        )
        data, addr = ua.recvfrom(65535)
        text = data.decode()
        assert text.startswith(f"OPTIONS {uri} SIP/2.0\r\n")
        assert f"Contact: <sip:daemon@127.0.0.1:{ser.port}>\r\n" in text  # !! substituted
        head = text.split("\r\n\r\n")[0].split("\r\n")
        keep = [h for h in head[1:] if h.split(":")[0].lower() in ("via", "from", "to", "call-id", "cseq")]
        ua.sendto(
            (f"SIP/2.0 {status}\r\n" + "\r\n".join(keep) + "\r\nContent-Length: 0\r\n\r\n").encode(), addr
        )
        out, err = p.communicate(timeout=20)
    assert out == status + "\n", err
    assert p.returncode == (0 if status.startswith("2") else 1)
