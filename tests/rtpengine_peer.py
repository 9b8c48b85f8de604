"""A real rtpengine (Debian's ``rtpengine-daemon``) for tests: userspace
only (``--table=-1``), its ng control port and RTP ports on free ports, its
log in the test's directory, calls deleted at once (``--delete-delay=0``)
so that a ``query`` right after ``delete`` finds nothing.

``RtpengineProcess.ng(command)`` talks the ng protocol to it with the
module's own codec (``query``, ``list``: what a test checks rtpengine by).
"""

from __future__ import annotations

import os
import random
import signal
import socket
import subprocess
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sipexpress.modules.rtpengine.bencode import Value, decode, encode
from tests.support import free_port, need_tool, wait_for


def ng_exchange(
    port: int,
    command: dict[str, Any],
    host: str = "127.0.0.1",
    timeout: float = 3.0,
    make_socket: Callable[[], socket.socket] | None = None,
) -> dict[bytes, Value]:
    """One ng command to rtpengine at host:port and its reply dictionary
    (``make_socket``: a UDP socket elsewhere, e.g. in a namespace)."""
    cookie = f"t{random.randrange(1 << 30)}".encode()
    with make_socket() if make_socket else socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.settimeout(timeout)
        s.sendto(cookie + b" " + encode(command), (host, port))
        while True:
            data = s.recv(65535)
            got_cookie, _, body = data.partition(b" ")
            if got_cookie == cookie:
                reply = decode(body)
                assert isinstance(reply, dict)
                return reply


@dataclass
class RtpengineProcess:
    workdir: Path
    interface: str = "127.0.0.1"
    ng_host: str = "127.0.0.1"
    ng_port: int = field(default_factory=free_port)
    #: run inside this network namespace (``ip netns exec``); ``make_socket``
    #: then gives a socket in it for the ng commands of the test
    netns: str | None = None
    make_socket: Callable[[], socket.socket] | None = None
    proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"udp:{self.ng_host}:{self.ng_port}"

    @property
    def log_path(self) -> Path:
        return self.workdir / f"rtpengine-{self.ng_port}.log"

    def start(self) -> None:
        exe = need_tool("rtpengine")
        # RTP ports: a random stretch of 200 (rtpengine skips ports in use)
        low = random.randrange(20000, 29000, 2)
        cmd = [
            exe,
            "--config-file=none",
            "--foreground",
            "--log-stderr",
            "--table=-1",
            f"--interface={self.interface}",
            f"--listen-ng={self.ng_host}:{self.ng_port}",
            f"--port-min={low}",
            f"--port-max={low + 200}",
            "--delete-delay=0",
            "--log-level=6",
            f"--pidfile={self.workdir / f'rtpengine-{self.ng_port}.pid'}",
        ]
        if self.netns:
            cmd = ["ip", "netns", "exec", self.netns, *cmd]
        with open(self.log_path, "ab") as log:
            self.proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        ok = wait_for(
            lambda: self.proc is not None and (self.proc.poll() is not None or self._pong()), 15.0, 0.05
        )
        if not ok or self.proc.poll() is not None:
            raise RuntimeError(f"rtpengine did not start:\n{self.log()}")

    def _pong(self) -> bool:
        try:
            return self.ng({"command": "ping"}, timeout=0.3).get(b"result") == b"pong"
        except OSError:
            return False

    def ng(self, command: dict[str, Any], timeout: float = 3.0) -> dict[bytes, Value]:
        return ng_exchange(self.ng_port, command, self.ng_host, timeout, self.make_socket)

    def calls(self) -> list[bytes]:
        got = self.ng({"command": "list"}).get(b"calls", [])
        assert isinstance(got, list)
        return [c for c in got if isinstance(c, bytes)]

    def log(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")
        except FileNotFoundError:
            return ""

    def stop(self) -> None:
        if self.proc is None or self.proc.poll() is not None:
            return
        os.killpg(self.proc.pid, signal.SIGTERM)
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(5)
