"""exec module benchmark: calls/s of ``exec_msg("true")`` and the latency
an exec call adds.

Three measurements, all with ``true`` as the command:

1. **in-process** (uvloop, the seed INVITE in a real RequestContext):
   * ``asyncio``: bare ``asyncio.create_subprocess_exec("/bin/sh", "-c",
     "true")`` with the request written to stdin (what the module would
     cost on asyncio's subprocess transport);
   * ``spawn``: the module's spawner (``process.spawn`` + ``communicate``,
     Popen + pidfd) with the server's plain environment -- the floor;
   * ``exec_msg``: the module's full call (SIP_* environment, concurrency
     slot, bookkeeping, status);
   * ``env``: building the SIP_* environment alone;
   the difference ``exec_msg - spawn`` is the module's own overhead.
2. **throughput**: ``--concurrency`` calls in flight at once -> calls/s.
3. **through ser** (skip with ``--no-ser``): a real ``ser`` answers
   OPTIONS directly and MESSAGE after ``exec_msg("true")``; sequential
   request/reply round trips over UDP give the latency one exec call adds
   to a request.

    python bench/exec_bench.py                # ~10 s
    python bench/exec_bench.py -n 1000 --concurrency 16
"""

from __future__ import annotations

import argparse
import asyncio
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

import uvloop

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from tests.unit.exec.seed import SEED_REQUEST  # noqa: E402

from sipexpress.core.context import Proto, ReceiveInfo, RequestContext  # noqa: E402
from sipexpress.modules.exec import ExecModule, process, sip_environment  # noqa: E402
from sipexpress.sip.message import SipMessage  # noqa: E402

CFG = """
loadmodule "sl"
loadmodule "exec"
route {
    if (method=="MESSAGE") {
        if (exec_msg("true")) { sl_send_reply("200", "exec ok"); }
        else { sl_send_reply("500", "exec failed"); };
        break;
    };
    sl_send_reply("200", "ok");
}
"""


class _NoCore:
    def __getattr__(self, name: str) -> object:
        raise AttributeError(name)


def _ctx() -> RequestContext:
    msg = SipMessage.parse(SEED_REQUEST)
    rcv = ReceiveInfo(Proto.UDP, "195.37.77.100", 5040, "127.0.0.1", 5060)
    return RequestContext(_NoCore(), msg, rcv)  # type: ignore[arg-type]


async def _spawner_true() -> int:
    child = await process.spawn("true", dict(os.environb), True, False)
    try:
        return await child.communicate(SEED_REQUEST, None)
    finally:
        child.close()


async def _asyncio_true() -> int:
    p = await asyncio.create_subprocess_exec(
        "/bin/sh", "-c", "true", stdin=asyncio.subprocess.PIPE, start_new_session=True
    )
    assert p.stdin is not None
    try:
        p.stdin.write(SEED_REQUEST)
        await p.stdin.drain()
    except (BrokenPipeError, ConnectionResetError, RuntimeError):
        pass
    p.stdin.close()
    return await p.wait()


async def in_process(n: int, concurrency: int) -> dict[str, float]:
    mod = ExecModule(_NoCore())  # type: ignore[arg-type]
    mod.set_param("max_concurrent", max(concurrency, 1))
    await mod.start()
    ctx = _ctx()
    out: dict[str, float] = {}

    t = time.perf_counter()
    for _ in range(n):
        sip_environment(ctx)
    out["env_us"] = (time.perf_counter() - t) / n * 1e6

    for _ in range(20):  # warm up
        await _asyncio_true()
        await _spawner_true()
        await mod.exec_msg(ctx, "true")

    lat_asyncio: list[float] = []
    lat_spawn: list[float] = []
    lat_exec: list[float] = []
    for _ in range(n):  # interleaved, so all see the same machine load
        t = time.perf_counter()
        await _asyncio_true()
        lat_asyncio.append(time.perf_counter() - t)
        t = time.perf_counter()
        await _spawner_true()
        lat_spawn.append(time.perf_counter() - t)
        t = time.perf_counter()
        r = await mod.exec_msg(ctx, "true")
        lat_exec.append(time.perf_counter() - t)
        assert r == 1
    out["asyncio_ms"] = statistics.median(lat_asyncio) * 1e3
    out["spawn_ms"] = statistics.median(lat_spawn) * 1e3
    out["exec_ms"] = statistics.median(lat_exec) * 1e3
    out["exec_p90_ms"] = statistics.quantiles(lat_exec, n=10)[-1] * 1e3
    out["seq_calls_s"] = 1 / statistics.mean(lat_exec)

    sem = asyncio.Semaphore(concurrency)

    async def one() -> int:
        async with sem:
            return await mod.exec_msg(ctx, "true")

    t = time.perf_counter()
    results = await asyncio.gather(*(one() for _ in range(n)))
    out["par_calls_s"] = n / (time.perf_counter() - t)
    assert results == [1] * n
    await mod.stop()
    return out


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _request(method: str, port: int, lport: int, i: int) -> bytes:
    return (
        f"{method} sip:bench@127.0.0.1:{port} SIP/2.0\r\n"
        f"Via: SIP/2.0/UDP 127.0.0.1:{lport};branch=z9hG4bK{uuid.uuid4().hex[:12]}\r\n"
        "Max-Forwards: 70\r\n"
        f"From: <sip:b@127.0.0.1>;tag={i}\r\nTo: <sip:bench@127.0.0.1>\r\n"
        f"Call-ID: {uuid.uuid4().hex}\r\nCSeq: 1 {method}\r\nContent-Length: 0\r\n\r\n"
    ).encode()


def through_ser(n: int) -> dict[str, float]:
    port = _free_port()
    with tempfile.TemporaryDirectory() as d:
        cfg = Path(d) / "ser.cfg"
        cfg.write_text(CFG)
        log = open(Path(d) / "ser.log", "wb")  # noqa: SIM115
        proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "sipexpress.cli.ser",
                "-f",
                str(cfg),
                "-D",
                "-E",
                "-l",
                f"127.0.0.1:{port}",
            ],
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        try:
            s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            s.bind(("127.0.0.1", 0))
            lport = s.getsockname()[1]
            s.settimeout(0.3)
            deadline = time.monotonic() + 20
            while True:  # wait until it answers
                s.sendto(_request("OPTIONS", port, lport, 0), ("127.0.0.1", port))
                try:
                    s.recv(65535)
                    break
                except TimeoutError:
                    if time.monotonic() > deadline or proc.poll() is not None:
                        raise RuntimeError("ser did not start") from None
            s.settimeout(5)
            res: dict[str, list[float]] = {"OPTIONS": [], "MESSAGE": []}
            for i in range(n):
                for method in ("OPTIONS", "MESSAGE"):
                    t = time.perf_counter()
                    s.sendto(_request(method, port, lport, i), ("127.0.0.1", port))
                    reply = s.recv(65535)
                    res[method].append(time.perf_counter() - t)
                    assert reply.startswith(b"SIP/2.0 200"), reply[:40]
            s.close()
        finally:
            proc.terminate()
            proc.wait(10)
            log.close()
    opt = statistics.median(res["OPTIONS"]) * 1e3
    msg = statistics.median(res["MESSAGE"]) * 1e3
    return {"options_ms": opt, "message_exec_ms": msg, "added_ms": msg - opt}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("-n", type=int, default=300, help="calls per measurement (default 300)")
    ap.add_argument("--concurrency", type=int, default=8)
    ap.add_argument("--no-ser", action="store_true", help="skip the measurement through ser")
    args = ap.parse_args()
    print(f"exec bench: n={args.n}, concurrency={args.concurrency}, {os.cpu_count()} CPUs (shared)")
    r = uvloop.run(in_process(args.n, args.concurrency))
    print(f"  SIP_* environment build      {r['env_us']:8.1f} us/call")
    print(f"  asyncio subprocess, sh -c true {r['asyncio_ms']:6.2f} ms (median; for comparison)")
    print(f"  module's spawner, sh -c true {r['spawn_ms']:8.2f} ms (median)")
    print(f"  exec_msg('true')             {r['exec_ms']:8.2f} ms (median), p90 {r['exec_p90_ms']:.2f} ms")
    print(f"  module overhead over spawn   {r['exec_ms'] - r['spawn_ms']:8.2f} ms/call")
    print(f"  sequential                   {r['seq_calls_s']:8.0f} calls/s")
    print(f"  {args.concurrency:2d} in flight                 {r['par_calls_s']:8.0f} calls/s")
    if not args.no_ser:
        s = through_ser(max(args.n // 2, 50))
        print(f"  ser: OPTIONS round trip      {s['options_ms']:8.2f} ms (median)")
        print(f"  ser: MESSAGE + exec_msg      {s['message_exec_ms']:8.2f} ms (median)")
        print(f"  latency added by one exec    {s['added_ms']:8.2f} ms/request")


if __name__ == "__main__":
    main()
