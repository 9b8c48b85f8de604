"""Management interfaces: requests per second over the FIFO and JSON-RPC.

    python bench/mgmt_bench.py                 # 3 s per measurement
    python bench/mgmt_bench.py --seconds 1 --clients 10

Starts the stand-alone management server (``python -m sipexpress.mgmt``,
uvloop, the same FIFO and JSON-RPC code ``ser`` runs) and measures, for
``uptime``:

* FIFO, one client, sequential (sc's procedure: mkfifo, open the reply FIFO,
  write the request, read to EOF, unlink: the cost per request includes
  the client's file-system work);
* FIFO, N concurrent client processes;
* JSON-RPC over HTTP (keep-alive), one client and N concurrent connections;
* JSON-RPC over the Unix socket, one client.

It also reads the server's CPU time (``/proc/<pid>/stat``) to give the
server's CPU cost per 1000 requests, which is what matters on a loaded
machine where the clients share the two cores.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import multiprocessing as mp
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "src"))

from sipexpress.mgmt.client import fifo_request

CLK = os.sysconf("SC_CLK_TCK")


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLK


def fifo_worker(fifo: str, reply_dir: str, seconds: float, q: mp.Queue) -> None:  # type: ignore[type-arg]
    n = 0
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        r = fifo_request(fifo, "uptime", reply_dir=reply_dir)
        if not r.startswith("200 ok\nNow: "):
            raise SystemExit(f"bad reply {r!r}")
        n += 1
    q.put(n)


def run_fifo(fifo: str, reply_dir: str, clients: int, seconds: float) -> int:
    q: mp.Queue = mp.Queue()  # type: ignore[type-arg]
    procs = [mp.Process(target=fifo_worker, args=(fifo, reply_dir, seconds, q)) for _ in range(clients)]
    for p in procs:
        p.start()
    total = sum(q.get() for _ in procs)
    for p in procs:
        p.join()
    return total


BODY = json.dumps({"jsonrpc": "2.0", "method": "uptime", "id": 1}).encode()
TOKEN = "bench-token"
HTTP_REQ = (
    b"POST / HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
    + f"Authorization: Bearer {TOKEN}\r\n".encode()
    + f"Content-Length: {len(BODY)}\r\n\r\n".encode()
    + BODY
)


async def http_conn(port: int, end: float) -> int:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    n = 0
    while time.monotonic() < end:
        writer.write(HTTP_REQ)
        head = await reader.readuntil(b"\r\n\r\n")
        length = int(head.lower().split(b"content-length: ")[1].split(b"\r\n")[0])
        body = await reader.readexactly(length)
        if b'"result"' not in body:
            raise SystemExit(f"bad reply {body!r}")
        n += 1
    writer.close()
    return n


async def unix_conn(path: str, end: float) -> int:
    reader, writer = await asyncio.open_unix_connection(path)
    n = 0
    while time.monotonic() < end:
        writer.write(BODY + b"\n")
        line = await reader.readline()
        if b'"result"' not in line:
            raise SystemExit(f"bad reply {line!r}")
        n += 1
    writer.close()
    return n


def http_worker(port: int, conns: int, seconds: float, q: mp.Queue) -> None:  # type: ignore[type-arg]
    async def go() -> int:
        end = time.monotonic() + seconds
        return sum(await asyncio.gather(*(http_conn(port, end) for _ in range(conns))))

    q.put(asyncio.run(go()))


def run_http(port: int, clients: int, seconds: float) -> int:
    """``clients`` connections spread over up to 2 client processes."""
    nproc = min(2, clients)
    q: mp.Queue = mp.Queue()  # type: ignore[type-arg]
    per = [clients // nproc + (1 if i < clients % nproc else 0) for i in range(nproc)]
    procs = [mp.Process(target=http_worker, args=(port, c, seconds, q)) for c in per]
    for p in procs:
        p.start()
    total = sum(q.get() for _ in procs)
    for p in procs:
        p.join()
    return total


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--seconds", type=float, default=3.0)
    ap.add_argument("--clients", type=int, default=10)
    args = ap.parse_args()

    tmp = Path(tempfile.mkdtemp(prefix="mgmt_bench_"))
    fifo, reply_dir, sock = str(tmp / "ser_fifo"), f"{tmp}/", str(tmp / "rpc.sock")
    srv = subprocess.Popen(
        [sys.executable, "-m", "sipexpress.mgmt", f"fifo={fifo}", f"fifo_dir={reply_dir}",
         "jsonrpc_http=127.0.0.1:0", f"jsonrpc_secret={TOKEN}", f"jsonrpc_socket={sock}"],
        stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True,
    )  # fmt: skip
    assert srv.stdout is not None
    port = int(srv.stdout.readline().split("http=")[1])
    rows: list[tuple[str, int, float, float]] = []

    def measure(name: str, fn: object) -> None:
        c0, t0 = cpu_seconds(srv.pid), time.monotonic()
        n = fn()  # type: ignore[operator]
        dt, dc = time.monotonic() - t0, cpu_seconds(srv.pid) - c0
        rows.append((name, n, n / dt, 1000 * dc / max(n, 1)))

    try:
        s = args.seconds
        measure("FIFO uptime, 1 client", lambda: run_fifo(fifo, reply_dir, 1, s))
        measure(f"FIFO uptime, {args.clients} clients", lambda: run_fifo(fifo, reply_dir, args.clients, s))
        measure("JSON-RPC HTTP uptime, 1 conn", lambda: run_http(port, 1, s))
        measure(f"JSON-RPC HTTP uptime, {args.clients} conns", lambda: run_http(port, args.clients, s))
        measure("JSON-RPC unix uptime, 1 conn", lambda: asyncio.run(unix_conn(sock, time.monotonic() + s)))
    finally:
        srv.terminate()
        srv.wait(5)
    print(f"{'measurement':38} {'requests':>9} {'req/s':>9} {'server CPU-s/1000':>18}")
    for name, n, rate, cpu in rows:
        print(f"{name:38} {n:9d} {rate:9.0f} {cpu:18.3f}")
    print(f"(load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores: clients share them)")


if __name__ == "__main__":
    main()
