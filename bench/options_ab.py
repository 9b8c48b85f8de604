"""Interleaved A/B of the OPTIONS path in situ: ``ser`` started from two
source trees in turn (order alternating per round), each answering
``--calls`` OPTIONS at ``--rate`` from SIPp (options_bench.py's scenario),
CPU seconds per 1000 requests from ``/proc/<pid>/stat``.

    git archive HEAD src | tar -x -C /tmp/base          # the "before" tree
    python bench/options_ab.py /tmp/base . --route py --rounds 6
    python bench/options_ab.py /tmp/base . --route cfg  # the same route in ser.cfg

On a shared machine single runs vary by 10-15 %: compare medians of
several interleaved rounds taken in the same minutes.
"""

from __future__ import annotations

import argparse
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

CFG = """\
listen=udp:127.0.0.1:{port}
debug=1
sip_warning=0
loadmodule "sl"
route {{
    if (method=="OPTIONS") {{ sl_send_reply("200", "OK"); break; }};
    sl_send_reply("404", "Not Found");
}}
"""


def one(tree: Path, route: str, rate: int, calls: int) -> dict[str, float]:
    port = ob.free_port()
    work = Path(tempfile.mkdtemp(prefix="options_ab_"))
    if route == "py":
        script = work / "routes.py"
        script.write_text(ob.ROUTE.format(port=port, warning=0))
    else:
        script = work / "ser.cfg"
        script.write_text(CFG.format(port=port))
    env = dict(os.environ, PYTHONPATH=str(tree / "src"))
    with (work / "ser.log").open("wb") as log:
        proc = subprocess.Popen(
            [sys.executable, "-m", "sipexpress.cli.ser", "-f", str(script), "-D"],
            stdout=log,
            stderr=subprocess.STDOUT,
            env=env,
        )
        try:
            ob.wait_ready(port)
            sipp = shutil.which("sipp")
            assert sipp is not None, "sipp not installed"
            return ob.run_step(sipp, port, rate, calls / rate, proc.pid)
        finally:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                proc.kill()


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("before", type=Path, help="source tree A (holds src/sipexpress)")
    ap.add_argument("after", type=Path, help="source tree B")
    ap.add_argument("--route", choices=("py", "cfg"), default="py")
    ap.add_argument("--rounds", type=int, default=4)
    ap.add_argument("--rate", type=int, default=3000)
    ap.add_argument("--calls", type=int, default=9000)
    args = ap.parse_args()
    trees = [args.before.resolve(), args.after.resolve()]
    res: dict[Path, list[float]] = {t: [] for t in trees}
    for i in range(args.rounds):
        for t in trees if i % 2 == 0 else trees[::-1]:
            r = one(t, args.route, args.rate, args.calls)
            bad = r["failed"] or r["ok"] < r["calls"]
            res[t].append(r["cpu_per_1000"])
            print(f"round {i} {t}: {r['cpu_per_1000']:.4f}" + ("  (failures)" if bad else ""), flush=True)
    for t in trees:
        v = res[t]
        print(
            f"{args.route} {t}: median {statistics.median(v):.4f} best {min(v):.4f} "
            f"({' '.join(f'{x:.4f}' for x in v)})"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
