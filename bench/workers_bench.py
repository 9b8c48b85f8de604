"""Calls per second with ``children`` worker processes (issue 19).

Starts ``ser`` on the realistic route of ``../shared/bench/ser.cfg``
(``--configs``; its ``children=1`` is overridden with ``-n``), registers the
call UAS (``register_uas.xml``), and drives ``uac_call.xml`` ->
``uas_call.xml`` through it (INVITE, 100, 180, 200, ACK, 100 ms, BYE, 200:
lookup, record_route, t_relay, loose_route).

The UAC runs with ``-t un`` (one socket per call), as many phones would:
the kernel hands each worker the calls whose source address hashes to its
SO_REUSEPORT socket, so one SIPp socket (``-t u1``) would load one worker
only.  The UAS is one socket; its replies reach the right worker through
the private port each worker names in its Via.

    python bench/workers_bench.py                                  # children 1 2 4, the rate ladder, 20 s steps
    python bench/workers_bench.py --children 2 --rates 1500 --duration 60   # one sustained run
    python bench/workers_bench.py --children 0 --rates 1500 --duration 60   # 0 = the default (one per core)

For every children value the rates are tried in increasing order until one
fails; a step is clean when every call succeeded (retransmissions are
counted and printed: on a loaded machine SIPp retransmits after 500 ms
without an answer).  Prints the time of day: the machine is shared, so
the numbers depend on what else runs.
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
from pathlib import Path
from types import SimpleNamespace

sys.path.insert(0, str(Path(__file__).resolve().parent))

import options_bench as ob
from calls_bench import ROOT, cpu_seconds, run_step
from side_by_side import register_uas

DEFAULT_CONFIGS = Path("/work/shared/bench")


def start_ser(configs: Path, children: int, port: int, work: Path) -> subprocess.Popen[bytes]:
    cmd = [sys.executable, "-m", "sipexpress.cli.ser", "-f", str(configs / "ser.cfg"), "-D", "-E"]
    cmd += ["-l", "127.0.0.1", "-p", str(port)]
    if children:
        cmd += ["-n", str(children)]
    else:  # the default: drop the cfg's children=1
        text = (configs / "ser.cfg").read_text()
        cfg = work / "ser.cfg"
        cfg.write_text("\n".join(x for x in text.splitlines() if not x.strip().startswith("children")))
        cmd[4] = str(cfg)
    env = dict(os.environ, PYTHONPATH=str(ROOT / "src"))
    log = (work / f"ser-{children}.log").open("wb")
    proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, cwd=work, env=env)
    ob.wait_ready(port, 30.0)
    time.sleep(1.0)  # the other workers finish starting (what reaches them meanwhile waits in their socket)
    return proc


def workers_of(pid: int) -> int:
    try:
        return len(Path(f"/proc/{pid}/task/{pid}/children").read_text().split())
    except OSError:
        return 0


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--configs", type=Path, default=DEFAULT_CONFIGS)
    ap.add_argument("--children", type=int, nargs="+", default=[1, 2, 4], help="0 = the default")
    ap.add_argument("--rates", type=int, nargs="+", default=[300, 500, 700, 1000, 1500])
    ap.add_argument("--duration", type=float, default=20.0, help="seconds per step")
    args = ap.parse_args()
    sipp = shutil.which("sipp")
    if sipp is None:
        print("needs sipp", file=sys.stderr)
        return 1
    print(f"# {time.strftime('%Y-%m-%d %H:%M:%S UTC', time.gmtime())}, load average {os.getloadavg()[0]:.2f}")
    print("children  rate/s  calls   ok  failed  retrans  cpu s/1000 calls  clean")
    for children in args.children:
        with tempfile.TemporaryDirectory(prefix="workers_bench_") as tmp:
            work = Path(tmp)
            port, uas_port = ob.free_port(), ob.free_port()
            proc = start_ser(args.configs, children, port, work)
            try:
                n = workers_of(proc.pid) or 1
                if not register_uas(sipp, args.configs, SimpleNamespace(port=port, uas_port=uas_port)):  # type: ignore[arg-type]
                    print(f"{children}: the UAS could not register", file=sys.stderr)
                    return 1
                best = 0
                for rate in sorted(args.rates):
                    calls = int(rate * args.duration)
                    before = cpu_seconds(proc.pid)
                    r = run_step(
                        sipp,
                        port,
                        uas_port,
                        calls,
                        rate,
                        4194304,
                        [],
                        (args.configs / "uac_call.xml", args.configs / "uas_call.xml"),
                        ["-s", "uas", "-t", "un", "-max_socket", "4096"],
                    )
                    cpu = cpu_seconds(proc.pid) - before
                    clean = r["failed"] == 0 and r["ok"] == calls
                    label = f"{children or 'default'}({n})"
                    print(
                        f"{label:>8}  {rate:6d}  {calls:5d}  {r['ok']!s:>5}  {r['failed']!s:>6}  "
                        f"{r['retrans']!s:>7}  {1000 * cpu / max(calls, 1):16.3f}  {'yes' if clean else 'NO'}",
                        flush=True,
                    )
                    if not clean:
                        break
                    best = rate
                print(
                    f"# children={children or 'default'} ({n} workers): {best} calls/s without a failed call"
                )
            finally:
                proc.send_signal(signal.SIGTERM)
                try:
                    proc.wait(20)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait()
    return 0


if __name__ == "__main__":
    sys.exit(main())
