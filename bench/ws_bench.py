"""CPU of ``ser`` per 1000 REGISTER and OPTIONS over persistent WebSocket
(WS) and secure WebSocket (WSS) connections, against the same over UDP
(issue 20).

One ``ser`` listens on UDP, WS and WSS (a throw-away CA and certificate
made here); its ser.cfg answers OPTIONS with ``sl_send_reply`` and saves
REGISTERs in usrloc (memory only).  The load comes from this process:
``--connections`` persistent WebSocket connections (or as many UDP
sockets), each keeping ``--window`` requests outstanding, ``--requests``
in all per step; REGISTERs go to ``--users`` different AORs.  The CPU is
the server's utime+stime from /proc, before and after each step (the
client's own CPU is not counted).  Steps alternate between transports for
``--rounds`` rounds; the table gives the median per transport and method.

    python bench/ws_bench.py                          # 3 rounds x 5000 requests
    python bench/ws_bench.py --rounds 1 --requests 2000

The machine is shared: run it briefly, read the numbers as ratios.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import socket
import ssl
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "src"))

from bench.calls_bench import cpu_seconds  # noqa: E402
from tests.support import free_port, options_request, udp_exchange  # noqa: E402
from tests.tls_support import TestCA  # noqa: E402
from wsproto import WSConnection  # noqa: E402
from wsproto.connection import ConnectionType  # noqa: E402
from wsproto.events import AcceptConnection, Request, TextMessage  # noqa: E402

CFG = """\
debug=2
fork=no
listen=udp:127.0.0.1:{port}
listen=ws:127.0.0.1:{ws_port}
listen=wss:127.0.0.1:{wss_port}
tls_certificate="{cert}"
tls_private_key="{key}"
tcp_max_connections_per_source=1024
loadmodule "sl"
loadmodule "usrloc"
loadmodule "registrar"
modparam("usrloc", "db_mode", 0)
route {{
    if (method == "REGISTER") {{ save("location"); break; }};
    sl_send_reply("200", "OK");
}}
"""


def request(method: str, transport: str, n: int, users: int, port: int) -> bytes:
    via = "df7jal23ls0d.invalid" if transport != "UDP" else "127.0.0.1:9;rport"
    user = f"u{n % users}"
    contact = (
        f"<sip:{user}@df7jal23ls0d.invalid;transport=ws>"
        if transport != "UDP"
        else f"<sip:{user}@127.0.0.1:9>"
    )
    lines = [
        f"{method} sip:127.0.0.1:{port} SIP/2.0",
        f"Via: SIP/2.0/{transport} {via};branch=z9hG4bK{uuid.uuid4().hex[:16]}",
        "Max-Forwards: 70",
        f"From: <sip:{user}@127.0.0.1>;tag={n:x}",
        f"To: <sip:{user}@127.0.0.1>",
        f"Call-ID: {user}-{transport}@bench",
        f"CSeq: {n + 1} {method}",
    ]
    if method == "REGISTER":
        lines += [f"Contact: {contact};expires=3600"]
    lines += ["Content-Length: 0", "", ""]
    return "\r\n".join(lines).encode()


async def ws_worker(
    host: str,
    port: int,
    tls: ssl.SSLContext | None,
    method: str,
    count: int,
    window: int,
    users: int,
    sip_port: int,
    first: int,
) -> int:
    """One persistent connection; ``count`` requests, ``window`` outstanding."""
    reader, writer = await asyncio.open_connection(host, port, ssl=tls)
    ws = WSConnection(ConnectionType.CLIENT)
    writer.write(ws.send(Request(host=f"{host}:{port}", target="/", subprotocols=["sip"])))
    accepted = False
    while not accepted:
        ws.receive_data(await reader.read(65536))
        accepted = any(isinstance(e, AcceptConnection) for e in ws.events())
    transport = "WSS" if tls else "WS"
    sent = done = 0
    while sent < min(window, count):
        writer.write(ws.send(TextMessage(request(method, transport, first + sent, users, sip_port).decode())))
        sent += 1
    while done < count:
        data = await reader.read(65536)
        if not data:
            break
        ws.receive_data(data)
        for ev in ws.events():
            if isinstance(ev, TextMessage) and ev.data.startswith("SIP/2.0 "):
                done += 1
                if sent < count:
                    writer.write(
                        ws.send(
                            TextMessage(request(method, transport, first + sent, users, sip_port).decode())
                        )
                    )
                    sent += 1
    writer.close()
    return done


class _Udp(asyncio.DatagramProtocol):
    def __init__(self, method: str, count: int, window: int, users: int, port: int, first: int) -> None:
        self.args = (method, users, port)
        self.count, self.window, self.first = count, window, first
        self.sent = self.done = 0
        self.finished: asyncio.Future[int] = asyncio.get_running_loop().create_future()
        self.transport: asyncio.DatagramTransport | None = None

    def _send(self) -> None:
        method, users, port = self.args
        assert self.transport is not None
        self.transport.sendto(request(method, "UDP", self.first + self.sent, users, port))
        self.sent += 1

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        while self.sent < min(self.window, self.count):
            self._send()

    def datagram_received(self, data: bytes, addr: object) -> None:
        if not data.startswith(b"SIP/2.0 "):
            return
        self.done += 1
        if self.sent < self.count:
            self._send()
        elif self.done >= self.count and not self.finished.done():
            self.finished.set_result(self.done)


async def udp_worker(port: int, method: str, count: int, window: int, users: int, first: int) -> int:
    loop = asyncio.get_running_loop()
    transport, proto = await loop.create_datagram_endpoint(
        lambda: _Udp(method, count, window, users, port, first), remote_addr=("127.0.0.1", port)
    )
    try:
        return await asyncio.wait_for(proto.finished, 60)
    except TimeoutError:  # a lost datagram: count what came back
        return proto.done
    finally:
        transport.close()


async def step(
    kind: str, method: str, ports: dict[str, int], tls: ssl.SSLContext, args: argparse.Namespace, pid: int
) -> dict[str, float]:
    per = args.requests // args.connections
    cpu0, t0 = cpu_seconds(pid), time.monotonic()
    if kind == "UDP":
        jobs = [
            udp_worker(ports["UDP"], method, per, args.window, args.users, i * per)
            for i in range(args.connections)
        ]
    else:
        jobs = [
            ws_worker(
                "127.0.0.1",
                ports[kind],
                tls if kind == "WSS" else None,
                method,
                per,
                args.window,
                args.users,
                ports["UDP"],
                i * per,
            )
            for i in range(args.connections)
        ]
    done = sum(await asyncio.gather(*jobs))
    cpu, secs = cpu_seconds(pid) - cpu0, time.monotonic() - t0
    return {"done": done, "cpu": cpu, "secs": secs, "per1000": 1000 * cpu / max(done, 1)}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--requests", type=int, default=5000, help="requests per step")
    ap.add_argument("--connections", type=int, default=10)
    ap.add_argument("--window", type=int, default=8, help="outstanding requests per connection")
    ap.add_argument("--users", type=int, default=1000)
    ap.add_argument("--rounds", type=int, default=3)
    args = ap.parse_args()
    work = Path(tempfile.mkdtemp(prefix="ws_bench_"))
    ca = TestCA(work / "ca")
    cert = ca.issue("ser")
    ports = {"UDP": free_port(), "WS": free_port(socket.SOCK_STREAM), "WSS": free_port(socket.SOCK_STREAM)}
    cfg = work / "ser.cfg"
    cfg.write_text(
        CFG.format(
            port=ports["UDP"], ws_port=ports["WS"], wss_port=ports["WSS"], cert=cert.cert, key=cert.key
        )
    )
    env = dict(os.environ, PYTHONPATH=str(ROOT / "src"))
    log = (work / "ser.log").open("wb")
    proc = subprocess.Popen(
        [sys.executable, "-m", "sipexpress.cli.ser", "-f", str(cfg), "-D", "-E"],
        stdout=log,
        stderr=subprocess.STDOUT,
        env=env,
    )
    tls = ssl.create_default_context(cafile=str(ca.cert_path))
    results: dict[tuple[str, str], list[dict[str, float]]] = {}
    try:
        deadline = time.monotonic() + 20
        while not udp_exchange(options_request("127.0.0.1", ports["UDP"]), "127.0.0.1", ports["UDP"], 0.3):
            if time.monotonic() > deadline or proc.poll() is not None:
                print((work / "ser.log").read_text(), file=sys.stderr)
                return 1
        print(
            f"ser pid {proc.pid}; {args.requests} requests per step, {args.connections} connections "
            f"x {args.window} outstanding, {args.rounds} round(s)"
        )
        print(f"{'transport':>9} {'method':>8} {'done':>6} {'secs':>6} {'cpu-s':>6} {'cpu-s/1000':>10}")
        for r in range(args.rounds):
            kinds = ["UDP", "WS", "WSS"] if r % 2 == 0 else ["WSS", "WS", "UDP"]
            for method in ("OPTIONS", "REGISTER"):
                for kind in kinds:
                    res = asyncio.run(step(kind, method, ports, tls, args, proc.pid))
                    results.setdefault((kind, method), []).append(res)
                    print(
                        f"{kind:>9} {method:>8} {res['done']:>6.0f} {res['secs']:>6.2f} {res['cpu']:>6.2f} "
                        f"{res['per1000']:>10.3f}"
                    )
        print("\nmedian CPU-s per 1000 (ratio to UDP)")
        for method in ("OPTIONS", "REGISTER"):
            udp = statistics.median(x["per1000"] for x in results[("UDP", method)])
            row = [f"{method:>8}"]
            for kind in ("UDP", "WS", "WSS"):
                med = statistics.median(x["per1000"] for x in results[(kind, method)])
                row.append(f"{kind} {med:.3f} ({med / udp:.2f}x)")
            print("  ".join(row))
    finally:
        proc.terminate()
        proc.wait(10)
    return 0


if __name__ == "__main__":
    sys.exit(main())
