"""Call benchmark: INVITE-100-180-200-ACK-BYE-200 through tm.

SIPp UAC -> ser (Python routing script) -> SIPp UAS, over UDP.  Routes
(``--mode``):

* ``lookup`` (default, issue 4's target): the UAS is registered once as
  ``service`` (REGISTER -> ``save("location")``) and every request goes
  through ``lookup("location")`` + ``t_relay()``;
* ``relay``: ``t_relay_to_udp`` to the UAS (no location look-up);
* ``stateless``: ``forward()`` to the UAS, the core and parser floor.

Measures (the machine is shared; run it briefly unless asked otherwise):

1. calls/s with no failed call at each rate of ``--rates``; each step runs
   ``--calls`` calls or, with ``--duration S``, ``rate * S`` calls (the
   60 s sustained test: ``--rates 1000 --duration 60``);
2. CPU seconds the ``ser`` process spends per 1000 calls
   (/proc/<pid>/stat, utime+stime);
3. retransmissions SIPp saw or sent (both sides) and unexpected messages:
   a clean step has none;
4. RSS of ``ser`` at start, after ``--warmup`` calls, after every step and
   after the wait timer has reclaimed the transactions (the 100 000-call
   memory run: ``--warmup 5000 --rates 800 --calls 100000``).

Usage: python bench/calls_bench.py [--mode lookup|relay|stateless]
           [--calls 2000 | --duration 60] [--rates 200,500] [--warmup N]
           [--profile prof.out]
"""

from __future__ import annotations

import argparse
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "src"))

from tests.support import free_port, options_request, udp_exchange  # noqa: E402

SCEN = ROOT / "bench" / "scenarios"

SCRIPT = """
from sipexpress.script.pyroute import forward, lookup, save, sl_send_reply, t_newtran, t_relay
from sipexpress.script.pyroute import t_relay_to_udp, t_reply

OPTIONS = {{"listen": "udp:127.0.0.1:{port}", "sip_warning": 0{buffers}}}
MODULES = ["sl", "tm", "usrloc", "registrar"]
MODPARAMS = [("tm", "wt_timer", 2)]

async def request_route(ctx):
    method = ctx.msg.method
    if method == "OPTIONS" and "@" not in ctx.ruri:
        ctx.reply_headers.append("X-Tm-Current: %d\\r\\n" % ctx.core.module("tm").layer.stats.current)
        t_newtran(ctx)
        return t_reply(ctx, 200, "OK")
    if method == "REGISTER":
        await save(ctx, "location")
        return 0
    {relay}
"""
RELAY = {
    "lookup": """if await lookup(ctx, "location") < 0:
        return sl_send_reply(ctx, 404, "Not Found")
    return await t_relay(ctx)""",
    "relay": 'return await t_relay_to_udp(ctx, "127.0.0.1", "{uas}")',
    "stateless": 'return await forward(ctx, "127.0.0.1", "{uas}")',
}

# The reference of issue 4 ("Kamailio 5.6: 0.13-0.17 s per 1000 calls"),
# measured here under the same SIPp load: the same route in Kamailio's
# language, location in memory, one UDP worker (``--server kamailio``).
KAMAILIO_CFG = """\
listen=udp:127.0.0.1:{port}
children={children}{maxbuffer}
disable_tcp=yes
debug=0
log_stderror=yes
loadmodule "tm.so"
loadmodule "sl.so"
loadmodule "usrloc.so"
loadmodule "registrar.so"
modparam("usrloc", "db_mode", 0)
modparam("tm", "wt_timer", 2000)
request_route {{
    if (method=="OPTIONS" && $rU==$null) {{ sl_send_reply("200", "OK"); exit; }}
    if (method=="REGISTER") {{ save("location"); exit; }}
    if (!lookup("location")) {{ sl_send_reply("404", "Not Found"); exit; }}
    t_relay();
}}
"""

PROFILE_WRAPPER = """\
import cProfile, sys
from sipexpress.cli import ser
prof = cProfile.Profile()
prof.enable()
try:
    ser.main(sys.argv[1:])
finally:
    prof.disable()
    prof.dump_stats({out!r})
"""


def process_tree(pid: int) -> list[int]:
    """The process and its descendants (Kamailio forks its workers)."""
    found = [pid]
    for p in found:
        try:
            found.extend(int(c) for c in Path(f"/proc/{p}/task/{p}/children").read_text().split())
        except OSError:
            continue
    return found


def cpu_seconds(pid: int) -> float:
    total = 0
    for p in process_tree(pid):
        fields = Path(f"/proc/{p}/stat").read_text().rsplit(")", 1)[1].split()
        total += int(fields[11]) + int(fields[12])
    return total / os.sysconf("SC_CLK_TCK")


def rss_kib(pid: int) -> int:
    total = 0
    for p in process_tree(pid):
        for line in Path(f"/proc/{p}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                total += int(line.split()[1])
    return total


def counter(stdout: str, name: str) -> int:
    value = -1
    for line in stdout.splitlines():
        parts = [x.strip() for x in line.split("|")]
        if len(parts) >= 3 and parts[0] == name:
            value = int(parts[-1].split()[0])
    return value


def sipp_retrans_unexpected(stdout: str) -> tuple[int, int]:
    """Sums of the Retrans and Unexpected-Msg columns of SIPp's final
    message table (rows ``INVITE ---------->`` on the UAC side,
    ``----------> INVITE`` on the UAS side; columns Messages, Retrans,
    Timeout, Unexpected-Msg, the last ones blank where they do not apply)."""
    retrans = unexpected = 0
    for line in stdout.splitlines():
        tokens = line.split()
        arrows = [i for i, tok in enumerate(tokens) if tok in ("---------->", "<----------")]
        if not arrows:
            continue
        rest = tokens[arrows[0] + 1 :]
        if arrows[0] == 0 and rest:
            rest = rest[1:]  # UAS layout: the method or status follows the arrow
        nums = [int(tok) for tok in rest if tok.isdigit()]
        if len(nums) >= 2:
            retrans += nums[1]
        if len(nums) >= 4:
            unexpected += nums[3]
    return retrans, unexpected


def probe(port: int) -> str:
    r = udp_exchange(options_request("127.0.0.1", port, rport=True), "127.0.0.1", port, 1.0)
    if r is None:
        return "?"
    for line in r.decode(errors="replace").split("\r\n"):
        if line.lower().startswith("x-tm-current:"):
            return line.split(":", 1)[1].strip()
    return "?"


def register(port: int, uas_port: int) -> bool:
    req = (
        f"REGISTER sip:127.0.0.1:{port} SIP/2.0\r\n"
        f"Via: SIP/2.0/UDP 127.0.0.1:9;rport;branch=z9hG4bKreg{uas_port}\r\n"
        f"From: <sip:service@127.0.0.1:{port}>;tag=reg\r\n"
        f"To: <sip:service@127.0.0.1:{port}>\r\n"
        f"Call-ID: bench-register-{uas_port}\r\nCSeq: 1 REGISTER\r\n"
        f"Contact: <sip:service@127.0.0.1:{uas_port}>;expires=86400\r\n"
        "Max-Forwards: 70\r\nContent-Length: 0\r\n\r\n"
    ).encode()
    r = udp_exchange(req, "127.0.0.1", port, 2.0)
    return r is not None and r.startswith(b"SIP/2.0 200")


def run_step(
    sipp: str,
    port: int,
    uas_port: int,
    calls: int,
    rate: int,
    buffers: int,
    pin: list[str],
    scenarios: tuple[Path, Path] = (SCEN / "tm_uac.xml", SCEN / "tm_uas.xml"),
    uac_extra: Sequence[str] = (),
) -> dict[str, object]:
    """``calls`` calls at ``rate`` from a SIPp UAC (``scenarios[0]``, plus
    ``uac_extra`` arguments) through the server on ``port`` to a SIPp UAS
    (``scenarios[1]``) on ``uas_port``."""
    limits = ["-buff_size", str(buffers)] if buffers else []
    limits += ["-m", str(calls), "-nostdin", "-timeout", str(calls // max(rate, 1) + 120)]
    uas = subprocess.Popen(
        [*pin, sipp, "-sf", str(scenarios[1]), "-i", "127.0.0.1", "-p", str(uas_port), *limits],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    )
    time.sleep(0.3)
    t0 = time.monotonic()
    res = subprocess.run(
        [
            *pin,
            sipp,
            "-sf",
            str(scenarios[0]),
            *uac_extra,
            f"127.0.0.1:{port}",
            "-i",
            "127.0.0.1",
            "-p",
            str(free_port()),
            "-r",
            str(rate),
            "-l",
            str(rate * 3),
            "-d",
            "0",
            *limits,
            "-timeout_error",
        ],
        capture_output=True,
        text=True,
    )
    secs = time.monotonic() - t0
    try:
        uas_out, _ = uas.communicate(timeout=10)
    except subprocess.TimeoutExpired:
        uas.kill()
        uas_out, _ = uas.communicate()
    r1, u1 = sipp_retrans_unexpected(res.stdout)
    r2, u2 = sipp_retrans_unexpected(uas_out or "")
    return {
        "ok": counter(res.stdout, "Successful call"),
        "failed": counter(res.stdout, "Failed call"),
        "secs": secs,
        "retrans": r1 + r2,
        "unexpected": u1 + u2,
    }


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--mode", choices=sorted(RELAY), default="lookup")
    ap.add_argument("--stateless", action="store_true", help="same as --mode stateless")
    ap.add_argument("--calls", type=int, default=2000, help="calls per step")
    ap.add_argument("--duration", type=float, help="seconds per step (calls = rate * duration)")
    ap.add_argument("--rates", default="200,500")
    ap.add_argument("--warmup", type=int, default=0, help="calls at the first rate before measuring RSS")
    ap.add_argument(
        "--buffers",
        type=int,
        default=0,
        help="UDP socket buffer bytes for ser (maxbuffer) and SIPp (-buff_size); 0: their defaults",
    )
    ap.add_argument("--profile", help="write a cProfile of the server to this file")
    ap.add_argument(
        "--server",
        choices=["ser", "kamailio"],
        default="ser",
        help="kamailio: the reference, same route (lookup mode only); CPU and RSS summed over its processes",
    )
    ap.add_argument("--children", type=int, default=1, help="Kamailio's UDP workers")
    ap.add_argument(
        "--pin",
        action="store_true",
        help="ser on CPU 0, both SIPp on CPU 1 (taskset): the server's cost without sharing its core",
    )
    args = ap.parse_args()
    ser_pin = ["taskset", "-c", "0"] if args.pin else []
    sipp_pin = ["taskset", "-c", "1"] if args.pin else []
    mode = "stateless" if args.stateless else args.mode
    sipp = shutil.which("sipp")
    if sipp is None:
        print("sipp not installed")
        return 1
    port, uas_port = free_port(), free_port()
    work = Path(tempfile.mkdtemp(prefix="calls_bench"))
    script = work / "routes.py"
    # --buffers 0 leaves ser's own default (maxbuffer, 256 KiB as in SER)
    maxbuffer = f', "maxbuffer": {args.buffers}' if args.buffers else ""
    script.write_text(SCRIPT.format(port=port, buffers=maxbuffer, relay=RELAY[mode].format(uas=uas_port)))
    if args.server == "kamailio":
        if mode != "lookup" or shutil.which("kamailio") is None:
            print("--server kamailio needs the kamailio binary and --mode lookup")
            return 1
        script = work / "kamailio.cfg"
        kam_buffer = f"\nmaxbuffer={args.buffers}" if args.buffers else ""
        script.write_text(KAMAILIO_CFG.format(port=port, children=args.children, maxbuffer=kam_buffer))
        cmd = [*ser_pin, "kamailio", "-f", str(script), "-DD", "-E", "-m", "256", "-M", "16", "-w", str(work)]
    elif args.profile:
        wrapper = work / "prof.py"
        wrapper.write_text(PROFILE_WRAPPER.format(out=str(Path(args.profile).resolve())))
        cmd = [*ser_pin, sys.executable, str(wrapper), "-f", str(script), "-D", "-E"]
    else:
        cmd = [*ser_pin, sys.executable, "-m", "sipexpress.cli.ser", "-f", str(script), "-D", "-E"]
    env = dict(os.environ, PYTHONPATH=str(ROOT / "src"))
    log = open(work / "ser.log", "wb")  # noqa: SIM115 - closed in finally
    ser = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, cwd=work, env=env)
    rates = [int(r) for r in args.rates.split(",")]
    try:
        for _ in range(50):
            if udp_exchange(options_request("127.0.0.1", port, rport=True), "127.0.0.1", port, 0.3):
                break
        else:
            print("ser did not start:", (work / "ser.log").read_text())
            return 1
        if mode == "lookup" and not register(port, uas_port):
            print("REGISTER of the UAS failed")
            return 1
        print(f"{args.server} pid {ser.pid}, mode {mode}, RSS at start {rss_kib(ser.pid)} KiB")
        if args.warmup:
            w = run_step(sipp, port, uas_port, args.warmup, rates[0], args.buffers, sipp_pin)
            time.sleep(2.5)
            print(f"warm-up: {w['ok']} ok, {w['failed']} failed; RSS {rss_kib(ser.pid)} KiB")
        print(
            f"{'rate':>6} {'calls':>7} {'ok':>7} {'failed':>6} {'retr':>5} {'unexp':>5} {'secs':>6} "
            f"{'calls/s':>8} {'cpu s/1000':>10} {'RSS KiB':>8} {'loadavg':>14}"
        )
        for rate in rates:
            calls = int(rate * args.duration) if args.duration else args.calls
            la0 = os.getloadavg()[0]
            c0 = cpu_seconds(ser.pid)
            r = run_step(sipp, port, uas_port, calls, rate, args.buffers, sipp_pin)
            cpu = cpu_seconds(ser.pid) - c0
            la1 = os.getloadavg()[0]
            ok = int(str(r["ok"]))
            secs = float(str(r["secs"]))
            print(
                f"{rate:>6} {calls:>7} {ok:>7} {r['failed']:>6} {r['retrans']:>5} {r['unexpected']:>5} "
                f"{secs:>6.1f} {ok / secs:>8.1f} {cpu / max(ok, 1) * 1000:>10.3f} {rss_kib(ser.pid):>8} "
                f"{la0:>6.2f}->{la1:<6.2f}"
            )
        time.sleep(2.5)  # wt_timer: completed transactions are reclaimed
        print(f"after wait timer: {probe(port)} transactions, RSS {rss_kib(ser.pid)} KiB")
    finally:
        ser.send_signal(signal.SIGINT if args.profile else signal.SIGTERM)
        try:
            ser.wait(15)
        except subprocess.TimeoutExpired:
            ser.kill()
            ser.wait()
        log.close()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
