"""TLS benchmark: the server's CPU per 1000 REGISTER and OPTIONS over
persistent TLS connections against the same over UDP, and TLS handshakes
per second.

The load is written with Python's ssl and asyncio (SIPp here is built
without TLS): ``--connections`` persistent connections, each keeping
``--window`` requests in flight, send ``-n`` requests in all; the UDP run
sends the same requests from as many UDP sockets.  The server is ``ser``
(uvloop) with sl, usrloc (memory) and registrar: OPTIONS to itself answered
with 200, REGISTER saved (distinct users).  Its CPU (utime + stime from
/proc/<pid>/stat) is read before and after each run; the client's CPU is
not counted.  The handshake run opens a connection, does a full handshake
(ECDSA P-256 certificate, TLS 1.3 unless ``--method``), sends one OPTIONS,
reads the 200 and closes, ``--handshake-clients`` at a time, for
``--seconds``.  Certificates are made in a temporary directory.

    python bench/tls_bench.py                      # all of it, defaults
    python bench/tls_bench.py -n 20000 --connections 20 --window 10
    python bench/tls_bench.py --method TLSv1.2     # TLS 1.2 handshakes

Results on this machine: bench/README.md.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import ssl
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "src"))

from tests.support import free_port, tcp_listening, udp_bound, wait_for  # noqa: E402
from tests.tls_support import TestCA  # noqa: E402

CLK_TCK = os.sysconf("SC_CLK_TCK")

CFG = """\
debug=1
fork=no
listen=udp:127.0.0.1:{port}
listen=tls:127.0.0.1:{tls}
tls_certificate="{cert}"
tls_private_key="{key}"
tls_method="{method}"
tcp_connection_lifetime=3600
tcp_max_connections_per_source=100000
tcp_max_connections=100000
loadmodule "sl"
loadmodule "usrloc"
loadmodule "registrar"
modparam("usrloc", "db_mode", 0)
route {{
    if (method == "OPTIONS") {{ sl_send_reply("200", "OK"); break; }}
    if (method == "REGISTER") {{ save("location"); break; }}
    sl_send_reply("404", "Not Found");
}}
"""


def request(method: str, i: int, transport: str, via_port: int, server_port: int) -> bytes:
    user = f"u{i}"
    ruri = f"sip:127.0.0.1:{server_port}"
    contact = f"Contact: <sip:{user}@127.0.0.1:{via_port};transport={transport.lower()}>\r\nExpires: 3600\r\n"
    return (
        f"{method} {ruri} SIP/2.0\r\n"
        f"Via: SIP/2.0/{transport} 127.0.0.1:{via_port};rport;branch=z9hG4bK{uuid.uuid4().hex[:16]}\r\n"
        "Max-Forwards: 70\r\n"
        f"From: <sip:{user}@127.0.0.1>;tag={i}\r\n"
        f"To: <sip:{user}@127.0.0.1>\r\n"
        f"Call-ID: {uuid.uuid4().hex}@bench\r\n"
        f"CSeq: 1 {method}\r\n"
        f"{contact if method == 'REGISTER' else ''}"
        "Content-Length: 0\r\n\r\n"
    ).encode()


def cpu_of(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLK_TCK


async def read_reply(reader: asyncio.StreamReader) -> bytes:
    head = await reader.readuntil(b"\r\n\r\n")
    return head  # every reply here has Content-Length: 0


async def tls_run(
    method: str, n: int, conns: int, window: int, port: int, tls_port: int, ctx: ssl.SSLContext
) -> int:
    """Send ``n`` requests over ``conns`` persistent connections; the 200s."""
    opened = [
        await asyncio.open_connection("127.0.0.1", tls_port, ssl=ctx, server_hostname="localhost")
        for _ in range(conns)
    ]
    per = n // conns
    ok = 0

    async def one(k: int, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        nonlocal ok
        via_port = writer.get_extra_info("sockname")[1]
        sent = 0
        while sent < per:
            batch = min(window, per - sent)
            writer.write(
                b"".join(request(method, k * per + sent + j, "TLS", via_port, tls_port) for j in range(batch))
            )
            for _ in range(batch):
                if (await read_reply(reader)).startswith(b"SIP/2.0 200 "):
                    ok += 1
            sent += batch

    await asyncio.gather(*(one(k, r, w) for k, (r, w) in enumerate(opened)))
    for _, w in opened:
        w.close()
    return ok


class _Udp(asyncio.DatagramProtocol):
    def __init__(self) -> None:
        self.got: asyncio.Queue[bytes] = asyncio.Queue()

    def datagram_received(self, data: bytes, addr: object) -> None:
        self.got.put_nowait(data)


async def udp_run(method: str, n: int, socks: int, window: int, port: int) -> int:
    loop = asyncio.get_running_loop()
    ends = [
        await loop.create_datagram_endpoint(
            _Udp, local_addr=("127.0.0.1", 0), remote_addr=("127.0.0.1", port)
        )
        for _ in range(socks)
    ]
    per = n // socks
    ok = 0

    async def one(k: int, transport: asyncio.DatagramTransport, proto: _Udp) -> None:
        nonlocal ok
        via_port = transport.get_extra_info("sockname")[1]
        sent = 0
        while sent < per:
            batch = min(window, per - sent)
            for j in range(batch):
                transport.sendto(request(method, k * per + sent + j, "UDP", via_port, port))
            for _ in range(batch):
                try:
                    data = await asyncio.wait_for(proto.got.get(), 5)
                except TimeoutError:
                    break
                ok += data.startswith(b"SIP/2.0 200 ")
            sent += batch

    await asyncio.gather(*(one(k, t, p) for k, (t, p) in enumerate(ends)))
    for t, _ in ends:
        t.close()
    return ok


async def handshakes(seconds: float, clients: int, tls_port: int, ctx: ssl.SSLContext) -> int:
    deadline = time.monotonic() + seconds
    done = 0

    async def client() -> None:
        nonlocal done
        while time.monotonic() < deadline:
            reader, writer = await asyncio.open_connection(
                "127.0.0.1", tls_port, ssl=ctx, server_hostname="localhost"
            )
            writer.write(request("OPTIONS", done, "TLS", writer.get_extra_info("sockname")[1], tls_port))
            if (await read_reply(reader)).startswith(b"SIP/2.0 200 "):
                done += 1
            writer.close()

    await asyncio.gather(*(client() for _ in range(clients)))
    return done


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("-n", type=int, default=20000, help="requests per method and transport")
    ap.add_argument("--connections", type=int, default=10)
    ap.add_argument("--window", type=int, default=10, help="requests in flight per connection")
    ap.add_argument("--seconds", type=float, default=5.0, help="length of the handshake run")
    ap.add_argument("--handshake-clients", type=int, default=8)
    ap.add_argument("--method", default="TLSv1.2+", help="the server's tls_method")
    args = ap.parse_args()

    work = Path(tempfile.mkdtemp(prefix="tls_bench_"))
    ca = TestCA(work / "ca")
    cert = ca.issue("ser")
    port, tls_port = free_port(), free_port()
    cfg = work / "ser.cfg"
    cfg.write_text(CFG.format(port=port, tls=tls_port, cert=cert.cert, key=cert.key, method=args.method))
    env = dict(os.environ, PYTHONPATH=str(ROOT / "src"))
    log = open(work / "ser.log", "wb")  # noqa: SIM115
    proc = subprocess.Popen(
        [sys.executable, "-m", "sipexpress.cli.ser", "-f", str(cfg), "-D", "-E"],
        env=env,
        stdout=log,
        stderr=log,
    )
    try:
        if not wait_for(lambda: tcp_listening(tls_port) and udp_bound(port), 20):
            sys.exit(f"ser did not start:\n{(work / 'ser.log').read_text()}")
        ctx = ssl.create_default_context(cafile=str(ca.cert_path))
        print(
            f"ser pid {proc.pid}; {args.n} requests per run; {args.connections} connections/sockets, window {args.window}"
        )
        print(f"{'run':<20}{'ok':>8}{'wall s':>9}{'req/s':>9}{'CPU s/1000':>12}")
        for method in ("OPTIONS", "REGISTER"):
            for transport in ("UDP", "TLS"):
                before, t0 = cpu_of(proc.pid), time.monotonic()
                if transport == "UDP":
                    ok = asyncio.run(udp_run(method, args.n, args.connections, args.window, port))
                else:
                    ok = asyncio.run(
                        tls_run(method, args.n, args.connections, args.window, port, tls_port, ctx)
                    )
                cpu, wall = cpu_of(proc.pid) - before, time.monotonic() - t0
                print(
                    f"{method + ' ' + transport:<20}{ok:>8}{wall:>9.2f}{ok / wall:>9.0f}{1000 * cpu / max(ok, 1):>12.4f}"
                )
        before, t0 = cpu_of(proc.pid), time.monotonic()
        done = asyncio.run(handshakes(args.seconds, args.handshake_clients, tls_port, ctx))
        cpu, wall = cpu_of(proc.pid) - before, time.monotonic() - t0
        print(
            f"handshakes ({args.method}): {done} in {wall:.2f} s = {done / wall:.0f}/s; "
            f"server CPU {1000 * cpu / max(done, 1):.3f} s per 1000 (one OPTIONS each)"
        )
    finally:
        proc.terminate()
        proc.wait(10)
        log.close()


if __name__ == "__main__":
    main()
