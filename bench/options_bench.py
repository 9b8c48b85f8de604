"""OPTIONS load benchmark: CPU cost of the stateless reply path.

Starts ``ser`` (uvloop) with a Python route that answers OPTIONS with
``sl_send_reply(200, "OK")``, drives it with SIPp (``scenarios/options_uac.xml``,
no retransmissions, so a lost request or reply is a failed call) at rising
rates, ``--step`` seconds per rate, and reports for each step the calls
answered, failures and the server's CPU seconds per 1000 requests (utime +
stime from ``/proc/<pid>/stat`` before and after the step).  The search stops
at the first rate with failures (or one the server cannot keep up with);
the result is the highest rate answered without failures.

    python bench/options_bench.py                 # default rates
    python bench/options_bench.py --rates 2000 4000 --step 5
    python bench/options_bench.py --profile prof.out --rates 3000   # cProfile the server

Target (bench/README.md): <= 0.04 CPU-s per 1000 requests.
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

from calls_bench import sipp_retrans_unexpected

ROOT = Path(__file__).resolve().parent.parent
SCENARIO = ROOT / "bench" / "scenarios" / "options_uac.xml"
CLK_TCK = os.sysconf("SC_CLK_TCK")

ROUTE = """\
from sipexpress.script.pyroute import sl_send_reply

OPTIONS = {{"listen": "udp:127.0.0.1:{port}", "debug": 1, "sip_warning": {warning}}}
MODULES = ["sl"]


async def request_route(ctx):
    if ctx.msg.method == "OPTIONS":
        return sl_send_reply(ctx, 200, "OK")
    return sl_send_reply(ctx, 404, "Not Found")
"""

PROFILE_WRAPPER = """\
import cProfile, signal, sys
from sipexpress.cli import ser
prof = cProfile.Profile()
def _stop(*_):
    raise KeyboardInterrupt
prof.enable()
try:
    ser.main(sys.argv[1:])
finally:
    prof.disable()
    prof.dump_stats({out!r})
"""


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def cpu_seconds(pid: int) -> float:
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    # fields[0] is state (field 3); utime is field 14, stime field 15
    return (int(fields[11]) + int(fields[12])) / CLK_TCK


def wait_ready(port: int, timeout: float = 15.0) -> None:
    """Probe until the server answers (``rport``: answer to the probe's
    port, which Kamailio in reference_responders.py needs as well)."""
    probe = (
        f"OPTIONS sip:127.0.0.1:{port} SIP/2.0\r\nVia: SIP/2.0/UDP 127.0.0.1:9;rport;branch=z9hG4bKready\r\n"
        "From: <sip:b@127.0.0.1>;tag=1\r\nTo: <sip:127.0.0.1>\r\nCall-ID: ready\r\nCSeq: 1 OPTIONS\r\n"
        "Content-Length: 0\r\n\r\n"
    ).encode()
    deadline = time.monotonic() + timeout
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.settimeout(0.3)
        while time.monotonic() < deadline:
            s.sendto(probe, ("127.0.0.1", port))
            try:
                s.recvfrom(65535)
                return
            except TimeoutError:
                continue
    raise RuntimeError("ser did not answer")


def run_step(
    sipp: str,
    port: int,
    rate: int,
    seconds: float,
    pid: int,
    scenario: Path = SCENARIO,
    extra: Sequence[str] = (),
    retransmit: bool = False,
) -> dict[str, float]:
    """One SIPp run of ``scenario`` against ``port``; ``extra`` SIPp
    arguments (``-key``...); without ``retransmit`` (``-nr``) a lost
    request or reply is a failed call, with it SIPp retransmits and the
    result counts the retransmissions (``retrans``)."""
    calls = int(rate * seconds)
    cmd = [
        sipp,
        "-sf",
        str(scenario),
        *extra,
        "-i",
        "127.0.0.1",
        "-p",
        str(free_port()),
        f"127.0.0.1:{port}",
        "-r",
        str(rate),
        "-m",
        str(calls),
        "-l",
        str(max(100, rate)),
        *([] if retransmit else ["-nr"]),
        "-nostdin",
        "-timeout",
        f"{int(seconds * 3 + 10)}s",
        "-timeout_error",
        "-buff_size",
        "4194304",
    ]
    before = cpu_seconds(pid)
    t0 = time.monotonic()
    p = subprocess.run(cmd, capture_output=True, text=True)
    elapsed = time.monotonic() - t0
    after = cpu_seconds(pid)
    ok = _stat(p.stdout, "Successful call")
    failed = _stat(p.stdout, "Failed call")
    retrans, unexpected = sipp_retrans_unexpected(p.stdout)
    return {
        "rate": rate,
        "calls": calls,
        "ok": ok,
        "failed": failed,
        "elapsed": elapsed,
        "cpu": after - before,
        "cpu_per_1000": (after - before) / max(1, ok + failed) * 1000,
        "rc": p.returncode,
        "retrans": retrans,
        "unexpected": unexpected,
    }


def _stat(out: str, name: str) -> int:
    found = re.findall(rf"{name}\s*\|\s*(\d+)\s*\|\s*(\d+)", out)
    return int(found[-1][1]) if found else 0


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rates", type=int, nargs="*", default=[1000, 2000, 3000, 4000, 5000, 6000, 8000])
    ap.add_argument("--step", type=float, default=5.0, help="seconds per rate")
    ap.add_argument("--warning", type=int, default=0, help="sip_warning option (SER default 1)")
    ap.add_argument("--profile", help="write a cProfile of the server to this file")
    ap.add_argument("--retries", type=int, default=1, help="repeat a failed step this often before stopping")
    args = ap.parse_args()
    sipp = shutil.which("sipp")
    if sipp is None:
        print("sipp not installed", file=sys.stderr)
        return 2
    port = free_port()
    work = Path(tempfile.mkdtemp(prefix="options_bench_"))
    route = work / "routes.py"
    route.write_text(ROUTE.format(port=port, warning=args.warning))
    env = dict(os.environ, PYTHONPATH=str(ROOT / "src"))
    if args.profile:
        wrapper = work / "prof.py"
        wrapper.write_text(PROFILE_WRAPPER.format(out=str(Path(args.profile).resolve())))
        cmd = [sys.executable, str(wrapper), "-f", str(route), "-D"]
    else:
        cmd = [sys.executable, "-m", "sipexpress.cli.ser", "-f", str(route), "-D"]
    log = (work / "ser.log").open("wb")
    proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=env)
    results: list[dict[str, float]] = []
    try:
        wait_ready(port)
        print(f"ser pid {proc.pid} on udp:127.0.0.1:{port}; {args.step:.0f} s per step")
        print(f"{'rate':>6} {'calls':>7} {'ok':>7} {'failed':>6} {'secs':>6} {'cpu-s':>6} {'cpu-s/1000':>10}")
        stop = False
        for rate in args.rates:
            for attempt in range(1 + args.retries):
                r = run_step(sipp, port, rate, args.step, proc.pid)
                results.append(r)
                print(
                    f"{r['rate']:>6} {r['calls']:>7} {r['ok']:>7} {r['failed']:>6} {r['elapsed']:>6.1f} "
                    f"{r['cpu']:>6.2f} {r['cpu_per_1000']:>10.4f}" + ("  (retry)" if attempt else ""),
                    flush=True,
                )
                # failures, or SIPp needed far longer than planned: saturated
                # (or starved by other load on a shared machine: retry)
                stop = bool(r["failed"] or r["ok"] < r["calls"] or r["elapsed"] > args.step * 1.5 + 2)
                if not stop:
                    break
            if stop:
                break
    finally:
        proc.send_signal(signal.SIGINT if args.profile else signal.SIGTERM)
        try:
            proc.wait(15)
        except subprocess.TimeoutExpired:
            proc.kill()
        log.close()
    clean = [r for r in results if not r["failed"] and r["ok"] == r["calls"]]
    if not clean:
        print("no clean step")
        return 1
    best = max(clean, key=lambda r: r["rate"])
    low = min(r["cpu_per_1000"] for r in clean)
    print(
        f"highest clean rate: {best['rate']:.0f}/s; CPU-s per 1000 requests there: "
        f"{best['cpu_per_1000']:.4f} (best step {low:.4f}; target <= 0.04)"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
