"""Call benchmark: INVITE-100-180-200-ACK-BYE-200 through tm (t_relay).

SIPp UAC -> ser (Python routing script, ``t_relay_to_udp`` to a fixed
next hop) -> SIPp UAS, over UDP.  Measures, briefly (the machine is shared):

1. calls/s sustained with no failed call at each rate of ``--rates``
   (every call is INVITE, 100 from tm, 180, 200, ACK, BYE, 200);
2. CPU seconds the ``ser`` process spends per 1000 calls
   (/proc/<pid>/stat, utime+stime) at each rate;
3. RSS of ``ser`` before, after the runs, and after the wait timer has
   reclaimed the transactions (memory should come back flat).

Usage: python bench/calls_bench.py [--calls 2000] [--rates 100,200] [--stateless]
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "src"))

from tests.support import free_port, options_request, udp_exchange  # noqa: E402

SCEN = ROOT / "bench" / "scenarios"

SCRIPT = """
from sipexpress.script.pyroute import forward, t_newtran, t_reply, t_relay_to_udp

OPTIONS = {{"listen": "udp:127.0.0.1:{port}", "sip_warning": 0}}
MODULES = ["tm"]
MODPARAMS = [("tm", "wt_timer", 2)]

async def request_route(ctx):
    if ctx.msg.method == "OPTIONS" and "@" not in ctx.ruri:
        ctx.reply_headers.append("X-Tm-Current: %d\\r\\n" % ctx.core.module("tm").layer.stats.current)
        t_newtran(ctx)
        return t_reply(ctx, 200, "OK")
    {relay}
"""
STATEFUL = 'return await t_relay_to_udp(ctx, "127.0.0.1", "{uas}")'
STATELESS = 'return await forward(ctx, "127.0.0.1", "{uas}")'


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


def counter(stdout: str, name: str) -> int:
    value = -1
    for line in stdout.splitlines():
        parts = [x.strip() for x in line.split("|")]
        if len(parts) >= 3 and parts[0] == name:
            value = int(parts[-1].split()[0])
    return value


def probe(port: int) -> str:
    r = udp_exchange(options_request("127.0.0.1", port), "127.0.0.1", port, 1.0)
    if r is None:
        return "?"
    for line in r.decode(errors="replace").split("\r\n"):
        if line.lower().startswith("x-tm-current:"):
            return line.split(":", 1)[1].strip()
    return "?"


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--calls", type=int, default=2000)
    ap.add_argument("--rates", default="100,200")
    ap.add_argument("--stateless", action="store_true", help="forward() instead of t_relay, for comparison")
    args = ap.parse_args()
    sipp = shutil.which("sipp")
    if sipp is None:
        print("sipp not installed")
        return 1
    port, uas_port = free_port(), free_port()
    work = Path(tempfile.mkdtemp(prefix="calls_bench"))
    script = work / "routes.py"
    relay = (STATELESS if args.stateless else STATEFUL).format(uas=uas_port)
    script.write_text(SCRIPT.format(port=port, relay=relay))
    log = open(work / "ser.log", "wb")  # noqa: SIM115 - closed in finally
    ser = subprocess.Popen(
        [sys.executable, "-m", "sipexpress.cli.ser", "-f", str(script), "-D", "-E"],
        stdout=log,
        stderr=subprocess.STDOUT,
        cwd=work,
    )
    try:
        for _ in range(50):
            if udp_exchange(options_request("127.0.0.1", port), "127.0.0.1", port, 0.3):
                break
        else:
            print("ser did not start:", (work / "ser.log").read_text())
            return 1
        rss0 = rss_kib(ser.pid)
        print(f"ser pid {ser.pid}, RSS at start {rss0} KiB")
        print(
            f"{'rate':>6} {'calls':>6} {'ok':>6} {'failed':>6} {'secs':>6} {'calls/s':>8} {'cpu s/1000':>10} {'RSS KiB':>8}"
        )
        for rate in [int(r) for r in args.rates.split(",")]:
            uas = subprocess.Popen(
                [
                    sipp,
                    "-sf",
                    str(SCEN / "tm_uas.xml"),
                    "-i",
                    "127.0.0.1",
                    "-p",
                    str(uas_port),
                    "-m",
                    str(args.calls),
                    "-nostdin",
                    "-timeout",
                    "120",
                ],
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
            )
            time.sleep(0.3)
            c0 = cpu_seconds(ser.pid)
            t0 = time.monotonic()
            res = subprocess.run(
                [
                    sipp,
                    "-sf",
                    str(SCEN / "tm_uac.xml"),
                    f"127.0.0.1:{port}",
                    "-i",
                    "127.0.0.1",
                    "-p",
                    str(free_port()),
                    "-m",
                    str(args.calls),
                    "-r",
                    str(rate),
                    "-l",
                    str(rate * 3),
                    "-d",
                    "0",
                    "-nostdin",
                    "-timeout",
                    "120",
                    "-timeout_error",
                ],
                capture_output=True,
                text=True,
            )
            secs = time.monotonic() - t0
            cpu = cpu_seconds(ser.pid) - c0
            try:
                uas.wait(10)
            except subprocess.TimeoutExpired:
                uas.kill()
                uas.wait()
            ok = counter(res.stdout, "Successful call")
            failed = counter(res.stdout, "Failed call")
            print(
                f"{rate:>6} {args.calls:>6} {ok:>6} {failed:>6} {secs:>6.1f} {ok / secs:>8.1f} "
                f"{cpu / max(ok, 1) * 1000:>10.3f} {rss_kib(ser.pid):>8}"
            )
        time.sleep(2.5)  # wt_timer: completed transactions are reclaimed
        print(f"after wait timer: {probe(port)} transactions, RSS {rss_kib(ser.pid)} KiB")
    finally:
        ser.terminate()
        ser.wait(10)
        log.close()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
