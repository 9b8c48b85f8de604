"""Helpers for the exec interop tests: a real ``ser`` running an example
config with the stub ``mail`` on PATH, raw SIP over UDP, the stub's log,
subscriber databases, process inspection."""

from __future__ import annotations

import json
import os
import re
import socket
import subprocess
import sys
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path

from tests.support import ROOT, SerProcess, need_tool, one_process_unless_asked, udp_bound, wait_for

BIN = ROOT / "tests" / "data" / "bin"
EXAMPLES = ROOT / "examples" / "exec"
SCENARIOS = EXAMPLES / "sipp"
PY_BIN = Path(sys.executable).parent


@dataclass
class ExecSer(SerProcess):
    """``ser -f <cfg> -l 127.0.0.1:<port>`` with a chosen environment.

    Readiness is "the UDP port is bound", not an OPTIONS answer: the
    seed's scripts answer nothing."""

    env: dict[str, str] = field(default_factory=dict)

    def start(self, extra_args: list[str] | None = None, wait: float = 20.0) -> None:
        self._log = open(self.log_path, "ab")  # noqa: SIM115 -- closed by stop()
        cmd = [sys.executable, "-m", "sipexpress.cli.ser", "-f", str(self.cfg_path), "-D", "-E"]
        cmd += ["-l", f"{self.host}:{self.port}", *(extra_args or [])]
        cmd += one_process_unless_asked(cmd, self.cfg_path)
        self.proc = subprocess.Popen(
            cmd,
            stdout=self._log,
            stderr=subprocess.STDOUT,
            cwd=self.workdir,
            env=self.env,
            start_new_session=True,
        )
        deadline = time.monotonic() + wait
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"ser exited with {self.proc.returncode}:\n{self.log()}")
            if udp_bound(self.port, self.host):
                return
            time.sleep(0.05)
        raise RuntimeError(f"ser did not bind {self.host}:{self.port}:\n{self.log()}")


def ser_env(workdir: Path, **extra: str) -> dict[str, str]:
    """The environment ser (and so every exec'd command) runs with: the
    stub mail first on PATH, its log in workdir."""
    env = dict(os.environ)
    env["PATH"] = f"{BIN}:{PY_BIN}:{env.get('PATH', '/usr/bin:/bin')}"
    env["MAIL_STUB_LOG"] = str(workdir / "mail.log")
    env.update(extra)
    return env


def example_cfg(relpath: str, workdir: Path, subst: dict[str, str] | None = None) -> Path:
    """Copy an example config into workdir, with regex substitutions."""
    text = (EXAMPLES / relpath).read_text()
    for pattern, repl in (subst or {}).items():
        text, n = re.subn(pattern, repl, text)
        assert n, f"{pattern!r} not found in {relpath}"
    dst = workdir / Path(relpath).name
    dst.write_text(text)
    return dst


def mails(workdir: Path) -> list[dict[str, object]]:
    log = workdir / "mail.log"
    if not log.exists():
        return []
    return [json.loads(line) for line in log.read_text().splitlines() if line]


def wait_mails(workdir: Path, n: int, timeout: float = 5.0) -> list[dict[str, object]]:
    wait_for(lambda: len(mails(workdir)) >= n, timeout)
    return mails(workdir)


# -- raw SIP over UDP ---------------------------------------------------------
SDP = (
    b"v=0\r\no=caller 1 1 IN IP4 127.0.0.1\r\ns=call\r\nc=IN IP4 127.0.0.1\r\n"
    b"t=0 0\r\nm=audio 9 RTP/AVP 0\r\na=rtpmap:0 PCMU/8000\r\n"
)


class Phone:
    """A bare UDP user agent for the test's side of a call."""

    def __init__(self, server_port: int, user: str = "alice") -> None:
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind(("127.0.0.1", 0))
        self.port = self.sock.getsockname()[1]
        self.server = ("127.0.0.1", server_port)
        self.user = user
        self.tag = uuid.uuid4().hex[:10]

    def close(self) -> None:
        self.sock.close()

    def request(
        self,
        method: str,
        ruri: str,
        *,
        call_id: str | None = None,
        cseq: int = 1,
        branch: str | None = None,
        to: str | None = None,
        body: bytes = b"",
        extra: list[str] | None = None,
    ) -> bytes:
        branch = branch or "z9hG4bK" + uuid.uuid4().hex[:16]
        call_id = call_id or uuid.uuid4().hex + "@127.0.0.1"
        to = to or f"<{ruri.split(';')[0]}>"
        hs = [
            f"{method} {ruri} SIP/2.0",
            f"Via: SIP/2.0/UDP 127.0.0.1:{self.port};branch={branch}",
            "Max-Forwards: 70",
            f'From: "{self.user}" <sip:{self.user}@127.0.0.1>;tag={self.tag}',
            f"To: {to}",
            f"Call-ID: {call_id}",
            f"CSeq: {cseq} {method}",
            f"Contact: <sip:{self.user}@127.0.0.1:{self.port}>",
            *(extra or []),
        ]
        if body:
            hs.append("Content-Type: application/sdp")
        hs.append(f"Content-Length: {len(body)}")
        return ("\r\n".join(hs) + "\r\n\r\n").encode() + body

    def send(self, data: bytes) -> None:
        self.sock.sendto(data, self.server)

    def recv(self, timeout: float = 3.0) -> bytes | None:
        self.sock.settimeout(timeout)
        try:
            return self.sock.recvfrom(65535)[0]
        except TimeoutError:
            return None

    def recv_final(self, timeout: float = 5.0) -> bytes | None:
        """Skip provisional replies; the first final reply or None."""
        deadline = time.monotonic() + timeout
        while (left := deadline - time.monotonic()) > 0:
            r = self.recv(left)
            if r is None:
                return None
            if status(r) >= 200:
                return r
        return None

    def recv_all(self, duration: float) -> list[bytes]:
        out = []
        deadline = time.monotonic() + duration
        while (left := deadline - time.monotonic()) > 0:
            r = self.recv(left)
            if r is None:
                break
            out.append(r)
        return out


def status(reply: bytes) -> int:
    return int(reply.split(b" ", 2)[1])


def header(msg: bytes, name: str) -> str | None:
    for line in msg.split(b"\r\n\r\n", 1)[0].split(b"\r\n")[1:]:
        n, _, v = line.partition(b":")
        if n.strip().lower() == name.lower().encode():
            return v.strip().decode()
    return None


def ack_for(invite: bytes, reply: bytes) -> bytes:
    """The hop-by-hop ACK for a non-2xx final reply (RFC 3261 §17.1.1.3)."""
    head = invite.split(b"\r\n\r\n", 1)[0].split(b"\r\n")
    ruri = head[0].split(b" ")[1]
    keep = [h for h in head[1:] if h.split(b":")[0].lower() in (b"via", b"from", b"call-id", b"max-forwards")]
    cseq = header(invite, "CSeq")
    assert cseq is not None
    to = header(reply, "To")
    lines = [b"ACK " + ruri + b" SIP/2.0", *keep, b"To: " + (to or "").encode()]
    lines += [f"CSeq: {cseq.split()[0]} ACK".encode(), b"Content-Length: 0"]
    return b"\r\n".join(lines) + b"\r\n\r\n"


def cancel_for(invite: bytes) -> bytes:
    head = invite.split(b"\r\n\r\n", 1)[0].split(b"\r\n")
    ruri = head[0].split(b" ")[1]
    keep = [
        h
        for h in head[1:]
        if h.split(b":")[0].lower() in (b"via", b"from", b"to", b"call-id", b"max-forwards")
    ]
    cseq = header(invite, "CSeq")
    assert cseq is not None
    lines = [b"CANCEL " + ruri + b" SIP/2.0", *keep, f"CSeq: {cseq.split()[0]} CANCEL".encode()]
    return b"\r\n".join([*lines, b"Content-Length: 0"]) + b"\r\n\r\n"


# -- subscriber databases -------------------------------------------------------
def sqlite_subscribers(path: Path, users: dict[str, str], domain: str = "127.0.0.1") -> str:
    """Create the SER schema in a SQLite file with ``serctl db create`` and
    add subscribers ``{username: email_address}``; returns the db URL."""
    url = f"sqlite:///{path}"
    r = subprocess.run(
        [str(PY_BIN / "serctl"), "--db-url", url, "db", "create"], capture_output=True, text=True, timeout=60
    )
    assert r.returncode == 0, r.stdout + r.stderr
    sqlite3 = need("sqlite3")
    for i, (user, email) in enumerate(users.items()):
        sql = (
            "insert into subscriber (phplib_id, username, domain, email_address) "
            f"values ('id{i}', '{user}', '{domain}', '{email}')"
        )
        subprocess.run([sqlite3, str(path), sql], check=True, timeout=10)
    return url


need = need_tool


# -- processes ------------------------------------------------------------------
def proc_stat(pid: int) -> tuple[str, int, int] | None:
    """(state, ppid, pgid) of pid, None if it does not exist."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
    except (FileNotFoundError, ProcessLookupError):
        return None
    return fields[0], int(fields[1]), int(fields[2])


def children_of(ppid: int) -> list[tuple[int, str]]:
    out = []
    for d in os.listdir("/proc"):
        if d.isdigit():
            st = proc_stat(int(d))
            if st is not None and st[1] == ppid:
                out.append((int(d), st[0]))
    return out


def group_members(pgid: int) -> list[tuple[int, str, int]]:
    """(pid, state, ppid) of every process in process group pgid."""
    out = []
    for d in os.listdir("/proc"):
        if d.isdigit():
            st = proc_stat(int(d))
            if st is not None and st[2] == pgid:
                out.append((int(d), st[0], st[1]))
    return out


def group_dead(pgid: int, parent: int) -> bool:
    """No process of the group alive and no zombie of it left to
    ``parent`` (a killed grandchild re-parented to init may stay a zombie
    until init reaps it: not parent's, not an orphan)."""
    return all(state == "Z" and ppid != parent for _, state, ppid in group_members(pgid))
