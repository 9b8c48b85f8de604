"""A real NAT for tests: Linux network namespaces joined by veth pairs, with
a router namespace that masquerades (nftables) between a private "home"
network and the "public" network where the proxy runs.

::

    home (phone)            router                     public (proxy, outside UAs)
    192.168.77.2 ---- 192.168.77.1 | 198.51.100.1 ---- 198.51.100.10 (PROXY_IP)
                       masquerade out of "wan"         198.51.100.20 (OUTSIDE_IP)

The router's conntrack UDP timeouts are set short (``udp_timeout``), so a
NAT binding that carries no packets is forgotten within seconds, as a home
router's would be within minutes.  Every run gets its own namespace names;
each namespace has its own ports, so tests inside may use fixed ones
(5060) without colliding with other runs.  Everything is removed on exit,
also when the test fails.

Making namespaces needs root and ``ip``/``nft``: without them the test is
skipped on a developer machine and FAILS in CI (``CI`` set), saying why, so
a CI machine that cannot make them does not pass silently.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import shutil
import socket
import subprocess
import threading
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.support import IN_CI, SerProcess, options_request, wait_for

HOME_IP = "192.168.77.2"
ROUTER_LAN_IP = "192.168.77.1"
ROUTER_WAN_IP = "198.51.100.1"
PROXY_IP = "198.51.100.10"
OUTSIDE_IP = "198.51.100.20"

_CLONE_NEWNET = 0x40000000


def _ip(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["ip", *args], capture_output=True, text=True, timeout=30, check=check)


def _unavailable(why: str) -> None:
    """Skip, or fail in CI: a CI run must show it did not test the NAT."""
    msg = f"network namespaces for the NAT tests cannot be made here: {why}"
    if IN_CI:
        pytest.fail(msg + " (CI is set: these tests must run in CI)")
    pytest.skip(msg)


class NatLab:
    """The three namespaces of one test run and what runs inside them."""

    def __init__(self, udp_timeout: int = 3) -> None:
        tag = f"sx{os.getpid() % 100000}{uuid.uuid4().hex[:6]}"
        self.home = f"{tag}-home"
        self.router = f"{tag}-rtr"
        self.public = f"{tag}-pub"
        self.udp_timeout = udp_timeout
        self._procs: list[subprocess.Popen[Any]] = []
        self._made: list[str] = []

    # -- set up / tear down -------------------------------------------------

    def setup(self) -> None:
        for tool in ("ip", "nft"):
            if shutil.which(tool) is None:
                _unavailable(f"{tool} is not installed")
        if os.geteuid() != 0:
            _unavailable("not running as root")
        for ns in (self.home, self.router, self.public):
            r = _ip("netns", "add", ns, check=False)
            if r.returncode != 0:
                _unavailable(f"ip netns add {ns}: {r.stderr.strip()}")
            self._made.append(ns)
        try:
            self._wire()
        except subprocess.CalledProcessError as exc:
            self.teardown()
            _unavailable(f"{' '.join(exc.cmd)}: {exc.stderr.strip()}")

    def _wire(self) -> None:
        h, r, p = self.home, self.router, self.public
        # veth ends are made inside the router: names need only be unique there
        _ip("-n", r, "link", "add", "lan", "type", "veth", "peer", "name", "eth0", "netns", h)
        _ip("-n", r, "link", "add", "wan", "type", "veth", "peer", "name", "eth0", "netns", p)
        for ns, dev, addr in (
            (r, "lan", f"{ROUTER_LAN_IP}/24"),
            (r, "wan", f"{ROUTER_WAN_IP}/24"),
            (h, "eth0", f"{HOME_IP}/24"),
            (p, "eth0", f"{PROXY_IP}/24"),
            (p, "eth0", f"{OUTSIDE_IP}/24"),
        ):
            _ip("-n", ns, "addr", "add", addr, "dev", dev)
        for ns, dev in ((r, "lan"), (r, "wan"), (h, "eth0"), (p, "eth0"), (h, "lo"), (r, "lo"), (p, "lo")):
            _ip("-n", ns, "link", "set", dev, "up")
        _ip("-n", h, "route", "add", "default", "via", ROUTER_LAN_IP)
        # the public side has no route to 192.168.77.0/24: only the NAT gets in
        self.exec(
            r,
            [
                "sysctl",
                "-q",
                "-w",
                "net.ipv4.ip_forward=1",
                f"net.netfilter.nf_conntrack_udp_timeout={self.udp_timeout}",
                f"net.netfilter.nf_conntrack_udp_timeout_stream={self.udp_timeout}",
            ],
        )
        ruleset = (
            "table ip nat {\n"
            "  chain post {\n"
            "    type nat hook postrouting priority 100;\n"
            '    oifname "wan" masquerade\n'
            "  }\n"
            "}\n"
            "table ip filter {\n"
            "  chain through {\n"
            "    type filter hook forward priority 0; policy drop;\n"
            '    iifname "lan" oifname "wan" accept\n'
            "    ct state established,related accept\n"
            "  }\n"
            "}\n"
        )
        self.exec(r, ["nft", "-f", "-"], input=ruleset)

    def teardown(self) -> None:
        for proc in self._procs:
            if proc.poll() is None:
                proc.kill()
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(5)
        for ns in reversed(self._made):
            _ip("netns", "del", ns, check=False)
        self._made.clear()

    # -- running things inside ----------------------------------------------

    @staticmethod
    def wrap(ns: str, cmd: list[str]) -> list[str]:
        return ["ip", "netns", "exec", ns, *cmd]

    def exec(self, ns: str, cmd: list[str], input: str | None = None) -> str:
        r = subprocess.run(
            self.wrap(ns, cmd), input=input, capture_output=True, text=True, timeout=30, check=True
        )
        return r.stdout

    def popen(self, ns: str, cmd: list[str], **kw: Any) -> subprocess.Popen[Any]:
        """Start cmd inside ns; killed at teardown if still running."""
        proc: subprocess.Popen[Any] = subprocess.Popen(self.wrap(ns, cmd), **kw)
        self._procs.append(proc)
        return proc

    def socket(self, ns: str, kind: int = socket.SOCK_DGRAM) -> socket.socket:
        """A socket living in ns (setns(2) in a helper thread: the namespace
        is per thread, the socket keeps it wherever it is used)."""
        out: list[socket.socket | BaseException] = []

        def make() -> None:
            try:
                libc = ctypes.CDLL(None, use_errno=True)
                fd = os.open(f"/run/netns/{ns}", os.O_RDONLY)
                try:
                    if libc.setns(fd, _CLONE_NEWNET) != 0:
                        raise OSError(ctypes.get_errno(), f"setns {ns}")
                finally:
                    os.close(fd)
                out.append(socket.socket(socket.AF_INET, kind))
            except BaseException as exc:  # handed to the caller's thread
                out.append(exc)

        t = threading.Thread(target=make)
        t.start()
        t.join()
        got = out[0]
        if isinstance(got, BaseException):
            raise got
        return got

    def udp_exchange(
        self, ns: str, data: bytes, host: str, port: int, timeout: float = 2.0, bind: str = ""
    ) -> bytes | None:
        with self.socket(ns) as s:
            s.bind((bind, 0))
            s.settimeout(timeout)
            s.sendto(data, (host, port))
            try:
                return s.recv(65536)
            except TimeoutError:
                return None

    def conntrack(self) -> str:
        """The router's connection tracking table (for failure messages)."""
        try:
            return self.exec(self.router, ["cat", "/proc/net/nf_conntrack"])
        except (subprocess.CalledProcessError, OSError):
            return "(no /proc/net/nf_conntrack)"

    def ser(self, cfg_text: str, workdir: Path, port: int = 5060) -> SerProcess:
        """A ``ser`` started in the public namespace on PROXY_IP:port."""
        workdir.mkdir(parents=True, exist_ok=True)
        cfg = workdir / "ser.cfg"
        cfg.write_text(cfg_text)

        def answers() -> bool:
            probe = options_request(PROXY_IP, port)
            return self.udp_exchange(self.public, probe, PROXY_IP, port, 0.3) is not None

        sp = SerProcess(cfg, PROXY_IP, port, workdir, prefix=self.wrap(self.public, []), probe=answers)
        sp.start()
        assert sp.proc is not None
        self._procs.append(sp.proc)
        return sp

    def sipp(
        self, ns: str, ip: str, args: list[str], workdir: Path, port: int = 5060
    ) -> subprocess.Popen[bytes]:
        """SIPp inside ns bound to ip:port (trace in workdir); waits until the
        port is bound (or SIPp already ended)."""
        sipp = shutil.which("sipp")
        if sipp is None:
            _unavailable("sipp is not installed")
        assert sipp is not None
        workdir.mkdir(parents=True, exist_ok=True)
        cmd = [sipp, "-i", ip, "-p", str(port), "-nostdin", "-trace_msg", "-trace_err", *args]
        proc = self.popen(ns, cmd, cwd=workdir, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        assert wait_for(lambda: proc.poll() is not None or self.bound(ns, ip, port), 10.0), cmd
        return proc

    def bound(self, ns: str, ip: str, port: int) -> bool:
        """Is a UDP socket bound to ip:port in ns?  (binding it ourselves fails)"""
        with self.socket(ns) as s:
            try:
                s.bind((ip, port))
            except OSError:
                return True
        return False


@contextlib.contextmanager
def nat_lab(udp_timeout: int = 3) -> Iterator[NatLab]:
    """A NatLab set up for the block and removed after it, whatever happens."""
    lab = NatLab(udp_timeout)
    try:
        lab.setup()
        yield lab
    finally:
        lab.teardown()


def sipp_trace(workdir: Path) -> str:
    """Everything SIPp wrote to its message and error logs in workdir."""
    return "".join(p.read_text(errors="replace") for p in sorted(workdir.glob("*.log")))


__all__ = [
    "HOME_IP",
    "OUTSIDE_IP",
    "PROXY_IP",
    "ROUTER_LAN_IP",
    "ROUTER_WAN_IP",
    "NatLab",
    "nat_lab",
    "sipp_trace",
]

if __name__ == "__main__":  # a quick manual check: python -m tests.netns
    with nat_lab() as lab:
        print(lab.exec(lab.home, ["ip", "-br", "addr"]))
        print(lab.exec(lab.router, ["nft", "list", "ruleset"]))
