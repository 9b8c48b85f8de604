"""Kamailio and ``ser`` side by side on the twin configurations (issue 16).

Starts Kamailio 5.6 on ``kamailio.cfg`` and ``ser`` on ``ser.cfg`` (both
from ``--configs``, default /work/shared/bench, whose README describes
them), registers each one's call UAS (``register_uas.xml``), then drives
them with the SIPp scenarios beside the configurations at the same offered
rate, the two servers in alternation (the order flips every round), and
reads each server's CPU (utime+stime of its whole process tree, /proc)
before and after every step.  Prints per scenario and server the CPU
seconds per 1000 transactions (median of the rounds), failed calls and
retransmissions (summed over the rounds), and the ratio ser / Kamailio of
the medians.

    python bench/side_by_side.py                                   # 3 rounds, 20 s steps
    python bench/side_by_side.py --rounds 1 --duration 3           # a quick check
    python bench/side_by_side.py --scenarios options calls --rates options=4000,calls=1000

Scenarios and default rates (issue 16's table): ``options`` 4000/s
(``options.xml``), ``register`` 2000/s (``register.xml``, a new AOR per
call and a fresh prefix per step), ``calls`` 500/s (``uac_call.xml`` via the
proxy to ``uas_call.xml``).  SIPp retransmits as the scenarios say (no
``-nr``): a clean step has no failed call and no retransmission.
"""

from __future__ import annotations

import argparse
import itertools
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import options_bench as ob
from calls_bench import ROOT, cpu_seconds, run_step

SCENARIOS = ("options", "register", "calls")
DEFAULT_RATES = {"options": 4000, "register": 2000, "calls": 500}
SERVERS = ("kamailio", "ser")
_prefixes = itertools.count()


class Server:
    """One of the two servers, running for the whole measurement."""

    def __init__(self, kind: str, configs: Path, work: Path, children: int) -> None:
        self.kind = kind
        self.port = ob.free_port()
        self.uas_port = ob.free_port()
        self.log_path = work / f"{kind}.log"
        if kind == "kamailio":
            cmd = [
                "kamailio",
                "-f",
                str(configs / "kamailio.cfg"),
                "-DD",
                "-E",
                "-m",
                "4096",
                "-M",
                "16",
                "-P",
                str(work / "kamailio.pid"),
                "-w",
                str(work),
                "-A",
                f"LISTEN_PORT={self.port}",
                "-A",
                f"CHILDREN={children}",
                # the cfg's default control socket is a fixed /tmp path
                "-A",
                f'CTL_SOCK="unix:{work / "kamailio_ctl"}"',
                "-x",
                "tlsf",
            ]
            env = None
        else:
            cmd = [sys.executable, "-m", "sipexpress.cli.ser", "-f", str(configs / "ser.cfg")]
            cmd += ["-D", "-E", "-l", "127.0.0.1", "-p", str(self.port)]
            env = dict(os.environ, PYTHONPATH=str(ROOT / "src"))
        with self.log_path.open("wb") as log:
            self.proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, cwd=work, env=env)

    def stop(self) -> None:
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(15)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


def register_uas(sipp: str, configs: Path, server: Server) -> bool:
    """The call UAS's binding (AOR ``uas``), as the shared README runs it."""
    res = subprocess.run(
        [
            sipp,
            "-sf",
            str(configs / "register_uas.xml"),
            "-s",
            "uas",
            "-key",
            "uas_addr",
            f"127.0.0.1:{server.uas_port}",
            "-i",
            "127.0.0.1",
            "-p",
            str(ob.free_port()),
            f"127.0.0.1:{server.port}",
            "-m",
            "1",
            "-nostdin",
            "-timeout",
            "10s",
            "-timeout_error",
        ],
        capture_output=True,
        text=True,
    )
    return res.returncode == 0


def step(
    sipp: str, configs: Path, server: Server, scenario: str, rate: int, seconds: float
) -> dict[str, float]:
    """One SIPp run; CPU of the server's process tree around it."""
    before = cpu_seconds(server.proc.pid)
    if scenario == "calls":
        r = run_step(
            sipp,
            server.port,
            server.uas_port,
            int(rate * seconds),
            rate,
            4194304,
            [],
            (configs / "uac_call.xml", configs / "uas_call.xml"),
            ["-s", "uas"],
        )
        result = {k: float(str(r[k])) for k in ("ok", "failed", "retrans", "unexpected")}
        result["calls"] = int(rate * seconds)
    else:
        extra = (
            ["-key", "user_prefix", f"sbs{os.getpid()}x{next(_prefixes)}u"] if scenario == "register" else []
        )
        result = ob.run_step(
            sipp,
            server.port,
            rate,
            seconds,
            server.proc.pid,
            configs / f"{scenario}.xml",
            extra,
            retransmit=True,
        )
    result["cpu"] = cpu_seconds(server.proc.pid) - before
    return result


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument(
        "--configs", type=Path, default=Path("/work/shared/bench"), help="the twin configurations"
    )
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--duration", type=float, default=20.0, help="seconds per step")
    ap.add_argument("--scenarios", nargs="*", choices=SCENARIOS, default=list(SCENARIOS))
    ap.add_argument(
        "--rates",
        default="",
        help="per scenario, e.g. options=4000,register=2000,calls=500 (those are the defaults)",
    )
    ap.add_argument("--children", type=int, default=2, help="Kamailio's UDP workers (CHILDREN)")
    args = ap.parse_args()
    rates = dict(DEFAULT_RATES)
    for item in filter(None, args.rates.split(",")):
        name, _, value = item.partition("=")
        if name not in rates or not value.isdigit():
            ap.error(f"--rates: {item!r} is not scenario=rate")
        rates[name] = int(value)
    sipp = shutil.which("sipp")
    if sipp is None or shutil.which("kamailio") is None:
        print("needs sipp and kamailio installed", file=sys.stderr)
        return 2
    work = Path(tempfile.mkdtemp(prefix="side_by_side_"))
    servers = {kind: Server(kind, args.configs, work, args.children) for kind in SERVERS}
    # per scenario and server: CPU-s per 1000 of each round, failures, retransmissions
    costs: dict[tuple[str, str], list[float]] = {(s, k): [] for s in args.scenarios for k in SERVERS}
    failed = dict.fromkeys(costs, 0.0)
    retrans = dict.fromkeys(costs, 0.0)
    try:
        for server in servers.values():
            ob.wait_ready(server.port)
            if "calls" in args.scenarios and not register_uas(sipp, args.configs, server):
                print(f"{server.kind}: REGISTER of the UAS failed; log in {server.log_path}", file=sys.stderr)
                return 1
        print(f"logs in {work}; {args.duration:g} s per step, {args.rounds} round(s)")
        print(
            f"{'round':>5} {'scenario':9} {'server':9} {'rate':>5} {'ok':>7} {'failed':>6} {'retr':>5} {'cpu-s/1000':>10}"
        )
        for rnd in range(args.rounds):
            order = SERVERS if rnd % 2 == 0 else SERVERS[::-1]
            for scenario in args.scenarios:
                for kind in order:
                    r = step(sipp, args.configs, servers[kind], scenario, rates[scenario], args.duration)
                    per_1000 = r["cpu"] / max(r["ok"], 1) * 1000
                    key = (scenario, kind)
                    costs[key].append(per_1000)
                    failed[key] += r["failed"] + max(0.0, r["calls"] - r["ok"] - r["failed"])
                    retrans[key] += r["retrans"]
                    print(
                        f"{rnd:>5} {scenario:9} {kind:9} {rates[scenario]:>5} {r['ok']:>7.0f} {r['failed']:>6.0f} "
                        f"{r['retrans']:>5.0f} {per_1000:>10.4f}",
                        flush=True,
                    )
    finally:
        for server in servers.values():
            server.stop()
    print(
        f"\nmedian of {args.rounds} round(s), CPU-s per 1000 (whole process tree); failed / retransmissions summed"
    )
    print(f"{'load':18} {'Kamailio':>9} {'ser':>9} {'ratio':>6}   {'failed K/s':>10} {'retr K/s':>10}")
    for scenario in args.scenarios:
        kam, ser = (statistics.median(costs[(scenario, k)]) for k in SERVERS)
        fails = f"{failed[(scenario, 'kamailio')]:.0f}/{failed[(scenario, 'ser')]:.0f}"
        retr = f"{retrans[(scenario, 'kamailio')]:.0f}/{retrans[(scenario, 'ser')]:.0f}"
        load = f"{scenario} {rates[scenario]}/s"
        print(
            f"{load:18} {kam:9.4f} {ser:9.4f} {ser / kam if kam else float('nan'):6.2f}   {fails:>10} {retr:>10}"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
