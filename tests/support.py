"""Test support: free ports, a real ``ser`` subprocess, SIPp runs, raw SIP helpers."""

from __future__ import annotations

import array
import asyncio
import contextlib
import fcntl
import os
import re
import shutil
import signal
import socket
import ssl
import subprocess
import sys
import termios
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

if TYPE_CHECKING:
    from sipexpress.sip.message import SipMessage

ROOT = Path(__file__).resolve().parent.parent
IN_CI = bool(os.environ.get("CI"))


def free_port(kind: int = socket.SOCK_DGRAM, host: str = "127.0.0.1") -> int:
    """A port free for both UDP and TCP on host (SIP listens on both)."""
    for _ in range(50):
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as u:
            u.bind((host, 0))
            port: int = u.getsockname()[1]
            try:
                with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as t:
                    t.bind((host, port))
            except OSError:
                continue
            return port
    raise RuntimeError("no free port")


def options_request(
    host: str, port: int, ruri: str | None = None, branch: str | None = None, rport: bool = False
) -> bytes:
    """An OPTIONS whose Via names port 9; ``rport`` asks for the reply on
    the source port instead (RFC 3581), for peers that answer to the Via."""
    branch = branch or "z9hG4bK" + uuid.uuid4().hex[:16]
    ruri = ruri or f"sip:{host}:{port}"
    sent_by = "127.0.0.1:9;rport" if rport else "127.0.0.1:9"
    return (
        f"OPTIONS {ruri} SIP/2.0\r\n"
        f"Via: SIP/2.0/UDP {sent_by};branch={branch}\r\n"
        "Max-Forwards: 70\r\n"
        f"From: <sip:probe@{host}>;tag={uuid.uuid4().hex[:8]}\r\n"
        f"To: <sip:{host}>\r\n"
        f"Call-ID: {uuid.uuid4().hex}@probe\r\n"
        "CSeq: 1 OPTIONS\r\n"
        "Content-Length: 0\r\n\r\n"
    ).encode()


def _in_proc_net(table: str, port: int, host: str, state: str | None = None) -> bool:
    """Is a socket bound to host:port in /proc/net/TABLE (in ``state``)?
    Read from there, so that asking never takes the port from the process
    about to bind it."""
    want = f"{int.from_bytes(socket.inet_aton(host), 'little'):08X}:{port:04X}"
    try:
        with open(f"/proc/net/{table}") as f:
            rows = [line.split() for line in f.readlines()[1:]]
    except OSError:
        return False
    return any(r[1] == want and (state is None or r[3] == state) for r in rows)


def udp_bound(port: int, host: str = "127.0.0.1") -> bool:
    return _in_proc_net("udp", port, host)


def tcp_listening(port: int, host: str = "127.0.0.1") -> bool:
    return _in_proc_net("tcp", port, host, "0A")


def _udp_port_taken(host: str, port: int) -> bool:
    with socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET, socket.SOCK_DGRAM) as s:
        try:
            s.bind((host, port))
        except OSError:
            return True
    return False


def udp_exchange(data: bytes, host: str, port: int, timeout: float = 2.0) -> bytes | None:
    """Send one datagram and return the first datagram that comes back."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.settimeout(timeout)
        s.sendto(data, (host, port))
        try:
            return s.recvfrom(65535)[0]
        except TimeoutError:
            return None


def udp_request(sp: SerProcess, method: str, user: str, extra: str = "") -> SipMessage | None:
    """One request to ``user`` at ``sp`` over UDP (a REGISTER: for the AOR
    ``user``), from ``sip:alice@…``, ``extra`` header lines added: the parsed
    reply, or None after 5 s."""
    from sipexpress.sip.message import SipMessage

    ruri = f"sip:{sp.host}:{sp.port}" if method == "REGISTER" else f"sip:{user}@{sp.host}:{sp.port}"
    caller = user if method == "REGISTER" else "alice"
    data = (
        f"{method} {ruri} SIP/2.0\r\n"
        f"Via: SIP/2.0/UDP 127.0.0.1:9;branch=z9hG4bK{uuid.uuid4().hex[:16]};rport\r\n"
        f"From: <sip:{caller}@{sp.host}>;tag=1\r\nTo: <sip:{user}@{sp.host}>\r\n"
        f"Call-ID: {uuid.uuid4().hex}\r\nCSeq: 1 {method}\r\nMax-Forwards: 70\r\n"
        f"{extra}Content-Length: 0\r\n\r\n"
    ).encode()
    raw = udp_exchange(data, sp.host, sp.port, timeout=5)
    return None if raw is None else SipMessage.parse(raw)


def udp_register(sp: SerProcess, user: str, contact: str = "", expires: int = 600) -> SipMessage | None:
    """:func:`udp_request` REGISTER with one contact (``sip:user@127.0.0.1:5999``
    unless given)."""
    contact = contact or f"sip:{user}@127.0.0.1:5999"
    return udp_request(sp, "REGISTER", user, f"Contact: <{contact}>\r\nExpires: {expires}\r\n")


def wait_for(cond: Callable[[], object], timeout: float = 5.0, interval: float = 0.02) -> bool:
    """Poll ``cond`` until it is true or ``timeout`` s have passed; whether it became true."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if cond():
            return True
        time.sleep(interval)
    return bool(cond())


async def wait_for_async(cond: Callable[[], object], timeout: float = 5.0, interval: float = 0.01) -> bool:
    """:func:`wait_for` inside an event loop (the loop keeps running)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if cond():
            return True
        await asyncio.sleep(interval)
    return bool(cond())


def fifo_pending(path: str | Path) -> int:
    """Bytes written into a FIFO that its reader has not read yet."""
    fd = os.open(path, os.O_WRONLY | os.O_NONBLOCK)
    try:
        buf = array.array("i", [0])
        fcntl.ioctl(fd, termios.FIONREAD, buf)
        return buf[0]
    finally:
        os.close(fd)


def read_when_there(fd: int, size: int = 65536, timeout: float = 5.0) -> bytes:
    """What a non-blocking reader gets once something has been written (b"" after ``timeout``)."""
    got = b""

    def ready() -> bool:
        nonlocal got
        try:
            got = os.read(fd, size)
        except BlockingIOError:
            return False
        return bool(got)

    wait_for(ready, timeout, 0.01)
    return got


def one_process_unless_asked(cmd: list[str], cfg_path: Path) -> list[str]:
    """``["-n", "1"]`` unless ``cmd`` or the configuration asks for worker
    processes (``-n``, ``children``): ser's default is one worker per core,
    and the tests that do not ask for workers run one process, as before."""
    if "-n" in cmd or re.search(r"^\s*children\s*=|\bchildren\b\W*:", cfg_path.read_text(), re.M):
        return []
    return ["-n", "1"]


@dataclass
class SerProcess:
    """A running ``ser`` subprocess with its own config, ports and FIFO."""

    cfg_path: Path
    host: str
    port: int
    workdir: Path
    proc: subprocess.Popen[bytes] | None = None
    # a command prefix (``ip netns exec NS``) and a readiness check for a ser
    # the test cannot reach from where it runs (tests/netns.py)
    prefix: list[str] = field(default_factory=list)
    probe: Callable[[], bool] | None = None
    log_path: Path = field(init=False)

    def __post_init__(self) -> None:
        self.log_path = self.workdir / "ser.log"

    @property
    def fifo(self) -> str:
        return str(self.workdir / "ser_fifo")

    def start(self, extra_args: list[str] | None = None, wait: float = 15.0) -> None:
        cmd = [*self.prefix, sys.executable, "-m", "sipexpress.cli.ser", "-f", str(self.cfg_path), "-D", "-E"]
        cmd += extra_args or []
        cmd += one_process_unless_asked(cmd, self.cfg_path)
        # the child keeps its own copy of the log descriptor
        with open(self.log_path, "ab") as log:
            self.proc = subprocess.Popen(
                cmd, stdout=log, stderr=subprocess.STDOUT, cwd=self.workdir, start_new_session=True
            )
        deadline = time.monotonic() + wait
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"ser exited with {self.proc.returncode}:\n{self.log()}")
            if self.probe is not None:
                if self.probe():
                    return
                continue
            if udp_exchange(options_request(self.host, self.port), self.host, self.port, 0.3):
                return
            # a script that answers no OPTIONS: the log says the server runs
            if " started (pid " in self.log() and _udp_port_taken(self.host, self.port):
                return
        raise RuntimeError(f"ser did not answer on {self.host}:{self.port}:\n{self.log()}")

    def log(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")
        except FileNotFoundError:
            return ""

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 10.0) -> int | None:
        if self.proc is None:
            return None
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(5)
        return self.proc.returncode


def need_tool(name: str) -> str:
    path = shutil.which(name)
    if path is None:
        if IN_CI:
            pytest.fail(f"{name} is required in CI but not installed")
        pytest.skip(f"{name} not installed")
    return path


@dataclass
class SippResult:
    returncode: int
    stdout: str
    stderr: str
    stats: dict[str, str]

    @property
    def ok(self) -> bool:
        return self.returncode == 0


def run_sipp(args: list[str], timeout: float = 120.0, cwd: Path | None = None) -> SippResult:
    """Run SIPp to completion in the background mode SIPp calls ``-bg``-less
    batch: ``-m`` must bound the run.  Returns exit code and the final
    statistics (``-trace_stat`` is not needed: SIPp prints a summary)."""
    sipp = need_tool("sipp")
    cmd = [sipp, *args, "-nostdin"] if "-nostdin" not in args else [sipp, *args]
    p = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, cwd=cwd)
    stats: dict[str, str] = {}
    for line in p.stdout.splitlines():
        # "  Successful call   |   <periodic>   |   <cumulative>   ": keep the cumulative value
        parts = [x.strip() for x in line.split("|")]
        if len(parts) >= 3 and parts[0] and not parts[0].startswith("-"):
            stats[parts[0]] = parts[-1] or parts[-2]
    return SippResult(p.returncode, p.stdout, p.stderr, stats)


def shipped_config(port: int | str, fifo: str, *, jsonrpc: str | None = None, web: str | None = None) -> str:
    """etc/ser.cfg as shipped, moved to a free port and a private FIFO, with
    JSON-RPC and the web interface off unless addresses are given (tests
    must not compete for the default 5080/8080)."""
    import re

    text = (ROOT / "etc" / "ser.cfg").read_text()
    subs = [
        (r"(?m)^port=5060.*$", f"listen=udp:127.0.0.1:{port}"),
        (r'(?m)^fifo="/tmp/ser_fifo"', f'fifo="{fifo}"'),
        (r'(?m)^jsonrpc_http=".*"', f'jsonrpc_http="{jsonrpc}"' if jsonrpc else "# jsonrpc off in this test"),
        (r'(?m)^web_listen=".*"', f'web_listen="{web}"' if web else "# web off in this test"),
        (r'(?m)^jsonrpc_secret_file=".*"', f'jsonrpc_secret_file="{fifo}.jsonrpc.secret"'),
    ]
    for pattern, repl in subs:
        text, n = re.subn(pattern, repl.replace("\\", "\\\\"), text)
        assert n == 1, f"etc/ser.cfg changed: {pattern!r} not found"
    return text


def shipped_template(edit: Callable[[str], str] = lambda text: text) -> str:
    """etc/ser.cfg as shipped, edited by ``edit``, as ``ser_factory`` text
    (its ``{port}`` and ``{fifo}``)."""
    text = edit(shipped_config("@PORT@", "@FIFO@"))
    return text.replace("{", "{{").replace("}", "}}").replace("@PORT@", "{port}").replace("@FIFO@", "{fifo}")


# RFC 4475's torture messages, byte-exact (a copy of ../shared/rfc4475)
RFC4475 = ROOT / "tests" / "data" / "rfc4475"

SIPP_SCENARIOS = ROOT / "tests" / "data" / "sipp"


class SippPhone:
    """A SIPp process playing a phone: a scenario file of tests/data/sipp
    (or a built-in one, ``-sn uas``) on a free port, with its message trace
    in ``workdir``.  Every SIPp gets its own media port: two SIPps on the
    default 6000 make the second one exit at once."""

    def __init__(
        self,
        scenario: str,
        workdir: Path,
        *,
        port: int | None = None,
        calls: int = 1,
        extra: list[str] | None = None,
        remote: str | None = None,
    ) -> None:
        sipp = need_tool("sipp")
        self.port = port or free_port()
        self.workdir = workdir
        workdir.mkdir(parents=True, exist_ok=True)
        how = ["-sf", str(SIPP_SCENARIOS / scenario)] if scenario.endswith(".xml") else ["-sn", scenario]
        cmd = [sipp, "-i", "127.0.0.1", "-p", str(self.port), "-mp", str(free_port()), "-m", str(calls)]
        cmd += ["-nostdin", "-timeout", "30", "-trace_msg", *how, *(extra or [])]
        if remote:
            cmd.append(remote)
        self.proc = subprocess.Popen(cmd, cwd=workdir, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        # ready when SIPp has bound its port (or has already run and exited)
        assert wait_for(lambda: self.proc.poll() is not None or udp_bound(self.port), 10.0), cmd

    def wait(self, timeout: float = 15) -> int:
        return self.proc.wait(timeout)

    def received(self) -> str:
        """The message trace (every message SIPp sent or received)."""
        return "".join(p.read_text(errors="replace") for p in sorted(self.workdir.glob("*_messages.log")))

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait(5)


def cfg_head(*modules: str) -> str:
    """The start of a test ser.cfg reached over the FIFO and JSON-RPC: for
    ``ser_factory`` with ``rpc=PORT``; routes follow (braces doubled).  The
    JSON-RPC token is in ``rpc_secret_file(workdir)``."""
    head = (
        'listen=udp:{host}:{port}\nfifo="{fifo}"\njsonrpc_http="127.0.0.1:{rpc}"\n'
        'jsonrpc_secret_file="{workdir}/jsonrpc.secret"\n'
    )
    return head + "".join(f'loadmodule "{m}"\n' for m in modules)


def rpc_secret_file(workdir: Path) -> str:
    """Where a ser started from :func:`cfg_head` keeps its JSON-RPC token."""
    return str(workdir / "jsonrpc.secret")


class WsClient:
    """A blocking SIP-over-WebSocket client (RFC 7118) on a real socket,
    wsproto doing the protocol: the upgrade with ``Sec-WebSocket-Protocol``
    ``protocols`` (default ``sip``), then one SIP message per text frame.
    ``ssl_context`` makes it a WSS client.  ``status`` is the upgrade's
    HTTP status (101 when accepted)."""

    def __init__(
        self,
        host: str,
        port: int,
        *,
        protocols: tuple[str, ...] = ("sip",),
        origin: str | None = None,
        ssl_context: ssl.SSLContext | None = None,
        timeout: float = 5.0,
    ) -> None:
        from wsproto import WSConnection
        from wsproto.connection import ConnectionType
        from wsproto.events import AcceptConnection, RejectConnection, Request

        sock: socket.socket = socket.create_connection((host, port), timeout=timeout)
        if ssl_context is not None:
            sock = ssl_context.wrap_socket(sock, server_hostname=host)
        self.sock = sock
        self.ws = WSConnection(ConnectionType.CLIENT)
        self.events: list[object] = []
        headers = [(b"Origin", origin.encode())] if origin else []
        sock.sendall(
            self.ws.send(
                Request(
                    host=f"{host}:{port}", target="/", subprotocols=list(protocols), extra_headers=headers
                )
            )
        )
        self.status = 0
        deadline = time.monotonic() + timeout
        while not self.status and time.monotonic() < deadline:
            if not self._read():
                break
            for ev in list(self.events):
                if isinstance(ev, AcceptConnection):
                    self.status = 101
                elif isinstance(ev, RejectConnection):
                    self.status = ev.status_code
                else:
                    continue
                self.events.remove(ev)

    def _read(self) -> bool:
        """Read once from the socket into ``events``; False on EOF/timeout."""
        from wsproto.utilities import RemoteProtocolError

        try:
            data = self.sock.recv(65536)
            self.ws.receive_data(data or None)
        except (TimeoutError, OSError, RemoteProtocolError):  # RemoteProtocolError: no HTTP came back
            return False
        self.events.extend(self.ws.events())
        return bool(data)

    def send_raw(self, data: bytes) -> None:
        self.sock.sendall(data)

    def send(self, sip: bytes | str, text: bool = True) -> None:
        from wsproto.events import BytesMessage, TextMessage

        if text:
            msg: object = TextMessage(sip.decode() if isinstance(sip, bytes) else sip)
        else:
            msg = BytesMessage(sip.encode() if isinstance(sip, str) else sip)
        self.sock.sendall(self.ws.send(msg))  # type: ignore[arg-type]

    def next_event(self, kind: type, timeout: float = 5.0) -> object | None:
        """The next event of type ``kind`` (others are kept), None on timeout or EOF."""
        deadline = time.monotonic() + timeout
        while True:
            for ev in self.events:
                if isinstance(ev, kind):
                    self.events.remove(ev)
                    return ev
            left = deadline - time.monotonic()
            if left <= 0:
                return None
            self.sock.settimeout(left)
            if not self._read():
                for ev in self.events:
                    if isinstance(ev, kind):
                        self.events.remove(ev)
                        return ev
                return None

    def recv(self, timeout: float = 5.0) -> bytes | None:
        """The next SIP message received (a whole WebSocket message)."""
        from wsproto.events import BytesMessage, Message, TextMessage

        parts: list[bytes] = []
        while True:
            ev = self.next_event(Message, timeout)
            if ev is None:
                return None
            if isinstance(ev, TextMessage):
                parts.append(ev.data.encode())
            elif isinstance(ev, BytesMessage):
                parts.append(bytes(ev.data))
            if getattr(ev, "message_finished", True):
                return b"".join(parts)

    def closed_by_server(self, timeout: float = 5.0) -> int | None:
        """The close code the server sent (1006: the connection just ended),
        None when it stayed open for ``timeout``."""
        from wsproto.events import CloseConnection

        ev = self.next_event(CloseConnection, timeout)
        return None if ev is None else int(ev.code)  # type: ignore[attr-defined]

    def close(self) -> None:
        with contextlib.suppress(OSError):
            self.sock.close()
