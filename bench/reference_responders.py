"""Reference points for options_bench.py, measured under the same SIPp load.

Issue 2 states its OPTIONS target (<= 0.04 CPU-s per 1000) next to numbers
measured on the machine it was written on: a bare uvloop responder with a
trivial parse 0.020, the same on plain asyncio 0.057, Kamailio 5.6 0.011.
Machines differ (a session's machine is not the next session's), so this
script measures the same references here, with options_bench.py's SIPp
step, and prints them beside ``ser``'s own number: compare ratios, not only
absolute CPU seconds.

    python bench/reference_responders.py                      # all, 5000/s, 8 s
    python bench/reference_responders.py --rate 8000 --only uvloop asyncio
    python bench/reference_responders.py --rounds 3           # interleaved rounds

``kamailio`` runs only if the binary is installed (Debian: ``kamailio``);
it answers OPTIONS with ``sl_send_reply`` from a two-line route, 1 process.
"""

from __future__ import annotations

import argparse
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import options_bench as ob
from calls_bench import cpu_seconds as tree_cpu_seconds

# The trivial parse: copy the five lines a reply must echo, nothing checked.
RESPONDER = """\
import asyncio, sys
COPY = (b"via:", b"v:", b"from:", b"f:", b"to:", b"t:", b"call-id:", b"i:", b"cseq:")

class Responder(asyncio.DatagramProtocol):
    def connection_made(self, transport):
        self.transport = transport

    def datagram_received(self, data, addr):
        head = data.split(b"\\r\\n\\r\\n", 1)[0].split(b"\\r\\n")
        lines = [b"SIP/2.0 200 OK"]
        for line in head[1:]:
            if line[:9].lower().startswith(COPY):
                lines.append(line)
        lines.append(b"Content-Length: 0\\r\\n\\r\\n")
        self.transport.sendto(b"\\r\\n".join(lines), addr)

async def main(port):
    loop = asyncio.get_running_loop()
    await loop.create_datagram_endpoint(Responder, local_addr=("127.0.0.1", port))
    await asyncio.Event().wait()

if sys.argv[2] == "uvloop":
    import uvloop
    uvloop.run(main(int(sys.argv[1])))
else:
    asyncio.run(main(int(sys.argv[1])))
"""

KAMAILIO_CFG = """\
listen=udp:127.0.0.1:{port}
children=1
tcp_children=1
disable_tcp=yes
debug=0
log_stderror=yes
loadmodule "sl.so"
request_route {{
    if (method=="OPTIONS") {{ sl_send_reply("200", "OK"); exit; }}
    sl_send_reply("404", "Not Found");
}}
"""


def start(kind: str, port: int, work: Path) -> list[subprocess.Popen[bytes]]:
    log = (work / f"{kind}.log").open("wb")
    if kind in ("uvloop", "asyncio"):
        script = work / "responder.py"
        script.write_text(RESPONDER)
        cmd = [sys.executable, str(script), str(port), kind]
    elif kind == "kamailio":
        cfg = work / "kamailio.cfg"
        cfg.write_text(KAMAILIO_CFG.format(port=port))
        cmd = ["kamailio", "-f", str(cfg), "-DD", "-E", "-m", "64", "-M", "8", "-w", str(work)]
    else:  # ser, as options_bench.py runs it
        script = work / "routes.py"
        script.write_text(ob.ROUTE.format(port=port, warning=0))
        cmd = [sys.executable, "-m", "sipexpress.cli.ser", "-f", str(script), "-D"]
    return [subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT)]


def measure(kind: str, sipp: str, rate: int, seconds: float) -> float | None:
    port = ob.free_port()
    work = Path(tempfile.mkdtemp(prefix=f"ref_{kind}_"))
    procs = start(kind, port, work)
    main_pid = procs[0].pid
    try:
        ob.wait_ready(port)
        before = tree_cpu_seconds(main_pid)
        step = ob.run_step(sipp, port, rate, seconds, main_pid)
        after = tree_cpu_seconds(main_pid)
    finally:
        for p in procs:
            p.send_signal(signal.SIGTERM)
            try:
                p.wait(10)
            except subprocess.TimeoutExpired:
                p.kill()
    if step["failed"] or step["ok"] < step["calls"]:
        print(f"  {kind}: {step['failed']} failed of {step['calls']}", file=sys.stderr)
        return None
    return (after - before) / step["ok"] * 1000


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rate", type=int, default=5000)
    ap.add_argument("--step", type=float, default=8.0, help="seconds per measurement")
    ap.add_argument("--rounds", type=int, default=1)
    ap.add_argument("--only", nargs="*", default=["uvloop", "asyncio", "kamailio", "ser"])
    args = ap.parse_args()
    sipp = shutil.which("sipp")
    if sipp is None:
        print("sipp not installed", file=sys.stderr)
        return 1
    kinds = [k for k in args.only if k != "kamailio" or shutil.which("kamailio")]
    results: dict[str, list[float]] = {k: [] for k in kinds}
    for _ in range(args.rounds):
        for kind in kinds:
            cost = measure(kind, sipp, args.rate, args.step)
            if cost is not None:
                results[kind].append(cost)
    print(f"{'responder':10} {'runs':>4} {'median':>8} {'best':>8}   CPU-s per 1000 OPTIONS at {args.rate}/s")
    for kind, costs in results.items():
        if costs:
            print(f"{kind:10} {len(costs):4d} {statistics.median(costs):8.4f} {min(costs):8.4f}")
        else:
            print(f"{kind:10}    0        -        -")
    return 0


if __name__ == "__main__":
    sys.exit(main())
