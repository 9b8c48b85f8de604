"""In-process cost of the receive path: ``Core.receive`` with a capturing
listener (no sockets, no event-loop wake-ups, no SIPp), SIPp-like requests.

    python bench/receive_bench.py                  # OPTIONS and REGISTER, 20 000 each
    python bench/receive_bench.py options --profile    # cProfile, top 30 by own time
    python bench/receive_bench.py twin-options twin-register twin-call          # issue 16's ser.cfg
    python bench/receive_bench.py twin-call --route py -n 2000 --callgrind     # instructions per call

``twin-*`` load /work/shared/bench/ser.cfg (``--ser-cfg``) through the real
compiler, or with ``--route py`` the same route as a Python script
(bench/ser_cfg_twin.py), and feed OPTIONS, REGISTERs of new AORs, or
calls (INVITE, 180, 200, then ACK and BYE along the Record-Route, 200).
``--callgrind`` reruns the kind under ``valgrind --tool=callgrind`` with the
instrumentation switched on only around the measured loop, and prints
instructions per message: deterministic, so usable on a loaded machine.

Prints the CPU time (``time.process_time``) per request, best 2000-request
chunk and mean.  This is the Python work alone, measured hot: in the real
server (options_bench.py) the same work costs 2-3 times more because SIPp,
the kernel and the event loop run between two requests and the
interpreter's caches are cold again (see bench/README.md).  Use it to
compare code changes; run both sides in the same minute (shared machine).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import cProfile
import ctypes
import gc
import pstats
import re
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "src"))

try:
    from sipexpress import BUILD
except ImportError:  # an older tree (A/B runs): pure Python
    BUILD = "pure"
from sipexpress.core.context import Proto, ReceiveInfo
from sipexpress.core.server import Core
from sipexpress.script.compiler import load_config
from sipexpress.script.pyroute import load_script

try:
    from sipexpress.core.runner import GC_THRESHOLDS
except ImportError:  # an older tree (A/B runs): the same thresholds
    GC_THRESHOLDS = (50_000, 20, 100)  # type: ignore[misc]

ROUTES = {
    "options": """
from sipexpress.script.pyroute import sl_send_reply
OPTIONS = {"listen": "udp:127.0.0.1:5999", "sip_warning": 0}
MODULES = ["sl"]
async def request_route(ctx):
    if ctx.msg.method == "OPTIONS":
        return sl_send_reply(ctx, 200, "OK")
    return sl_send_reply(ctx, 404, "Not Found")
""",
    "options-cfg": """
listen=udp:127.0.0.1:5999
sip_warning=0
loadmodule "sl"
route {
    if (method=="OPTIONS") { sl_send_reply("200", "OK"); break; };
    sl_send_reply("404", "Not Found");
}
""",
    "register": """
from sipexpress.script.pyroute import save, sl_send_reply
OPTIONS = {"listen": "udp:127.0.0.1:5999", "sip_warning": 0}
MODULES = ["sl", "usrloc", "registrar"]
async def request_route(ctx):
    if ctx.msg.method == "REGISTER":
        await save(ctx, "location")
    else:
        sl_send_reply(ctx, 200, "OK")
    return 0
""",
    # calls_bench.py's default (lookup) route: INVITE, 180, 200, ACK, BYE, 200
    "call": """
from sipexpress.script.pyroute import lookup, save, sl_send_reply, t_relay
OPTIONS = {"listen": "udp:127.0.0.1:5999", "sip_warning": 0}
MODULES = ["sl", "tm", "usrloc", "registrar"]
MODPARAMS = [("tm", "wt_timer", 2)]
async def request_route(ctx):
    if ctx.msg.method == "REGISTER":
        await save(ctx, "location")
        return 0
    if await lookup(ctx, "location") < 0:
        return sl_send_reply(ctx, 404, "Not Found")
    return await t_relay(ctx)
""",
}

BENCH = Path(__file__).resolve().parent
TWIN_KINDS = {"twin-options": "options", "twin-register": "register", "twin-call": "call"}
LISTEN = "udp:127.0.0.1:5999"

UAC, UAS = 6000, 6001


def twin_route(route: str, ser_cfg: Path) -> tuple[str, str]:
    """The twin route (issue 16) listening where the driver sends: the
    shared ser.cfg, or its Python version; (file name, text)."""
    if route == "cfg":
        return "ser.cfg", f"listen={LISTEN}\n" + ser_cfg.read_text()
    text = (BENCH / "ser_cfg_twin.py").read_text()
    return "routes.py", text + f"\nOPTIONS['listen'] = {LISTEN!r}\n"


def uac_request(i: int, method: str, cseq: int, to_tag: str = "", route: bytes = b"") -> bytes:
    """As bench/scenarios/tm_uac.xml sends them (the INVITE to the AOR,
    ACK and BYE to the UAS's Contact, with ``route``, the Route lines of a
    record-routing proxy)."""
    ruri = "sip:service@127.0.0.1:5999" if method == "INVITE" else f"sip:service@127.0.0.1:{UAS}"
    body = (
        b"v=0\r\no=user1 53655765 2353687637 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\n"
        if method == "INVITE"
        else b""
    )
    head = (
        f"{method} {ruri} SIP/2.0\r\n"
        f"Via: SIP/2.0/UDP 127.0.0.1:{UAC};branch=z9hG4bK-1234-{i}-{cseq}{method}\r\n"
        f"From: sipp <sip:sipp@127.0.0.1:{UAC}>;tag=1234SIPpTag00{i}\r\n"
        f"To: <sip:service@127.0.0.1:5999>{to_tag}\r\n"
        f"Call-ID: {i}-1234@127.0.0.1\r\nCSeq: {cseq} {method}\r\n"
        f"Contact: sip:sipp@127.0.0.1:{UAC}\r\nMax-Forwards: 70\r\nSubject: Performance Test\r\n"
        + ("Content-Type: application/sdp\r\n" if body else "")
        + f"Content-Length: {len(body)}\r\n"
    )
    return head.encode() + route + b"\r\n" + body


def route_set(reply: bytes) -> bytes:
    """The UAC's Route lines from a 2xx's Record-Route (one hop here)."""
    return b"".join(
        b"Route:" + ln.split(b":", 1)[1] + b"\r\n"
        for ln in reply.split(b"\r\n")
        if ln.startswith(b"Record-Route:")
    )


def uas_reply(request: bytes, status: str, tag: str) -> bytes:
    """The UAS's reply to a forwarded request: its Vias, From, To (+tag),
    Call-ID and CSeq copied, as tests/data/sipp uas scenarios answer."""
    lines = request.split(b"\r\n")
    copied = [
        ln + (b";tag=" + tag.encode() if ln.startswith(b"To:") and b"tag=" not in ln else b"")
        for ln in lines
        if ln.split(b":", 1)[0] in (b"Via", b"Record-Route", b"From", b"To", b"Call-ID", b"CSeq")
    ]
    return b"\r\n".join(
        [
            b"SIP/2.0 " + status.encode(),
            *copied,
            f"Contact: <sip:service@127.0.0.1:{UAS}>".encode(),
            b"Content-Length: 0",
            b"",
            b"",
        ]
    )


def options(i: int) -> bytes:
    """As bench/scenarios/options_uac.xml sends it."""
    return (
        "OPTIONS sip:service@127.0.0.1:5999 SIP/2.0\r\n"
        f"Via: SIP/2.0/UDP 127.0.0.1:6000;branch=z9hG4bK-1234-{i}-0\r\n"
        "Max-Forwards: 70\r\n"
        f"From: sipp <sip:sipp@127.0.0.1:6000>;tag=1234SIPpTag00{i}\r\n"
        "To: <sip:service@127.0.0.1:5999>\r\n"
        f"Call-ID: {i}-1234@127.0.0.1\r\nCSeq: 1 OPTIONS\r\n"
        "Contact: <sip:sipp@127.0.0.1:6000>\r\nAccept: application/sdp\r\n"
        "User-Agent: SIPp options bench\r\nContent-Length: 0\r\n\r\n"
    ).encode()


def register(i: int) -> bytes:
    """As tests/interop/registrar/scenarios/register_users.xml sends it."""
    return (
        "REGISTER sip:127.0.0.1:5999 SIP/2.0\r\n"
        f"Via: SIP/2.0/UDP 127.0.0.1:6000;branch=z9hG4bK-1234-{i}-0\r\n"
        f"From: <sip:u{i:06d}@127.0.0.1>;tag={i}\r\nTo: <sip:u{i:06d}@127.0.0.1>\r\n"
        f"Call-ID: {i}-1234@127.0.0.1\r\nCSeq: 1 REGISTER\r\n"
        f"Contact: <sip:u{i:06d}@127.0.0.1:5060>\r\nExpires: 3600\r\nMax-Forwards: 70\r\n"
        "User-Agent: SIPp register\r\nContent-Length: 0\r\n\r\n"
    ).encode()


class Capture:
    proto = Proto.UDP
    af = 2
    ip = "127.0.0.1"
    port = via_port = 5999
    via_host = "127.0.0.1"

    def __init__(self) -> None:
        self.sent = 0
        self.last: dict[int, bytes] = {}  # port -> last datagram sent there

    def sendto(self, data: bytes, ip: str, port: int) -> bool:
        self.sent += 1
        self.last[port] = data
        return True


def run_calls(core: Core, cap: Capture, first: int, n: int) -> None:
    """``n`` calls through ``core.receive`` as the SIPp UAC and UAS of
    calls_bench.py would send them (7 messages out per call: 100, INVITE,
    180, 200, ACK, BYE, 200)."""
    recv = core.receive
    uac = ReceiveInfo(Proto.UDP, "127.0.0.1", UAC, "127.0.0.1", 5999, 2, cap)
    uas = ReceiveInfo(Proto.UDP, "127.0.0.1", UAS, "127.0.0.1", 5999, 2, cap)
    last = cap.last
    for i in range(first, first + n):
        recv(uac_request(i, "INVITE", 1), uac)
        invite = last[UAS]
        recv(uas_reply(invite, "180 Ringing", f"u{i}"), uas)
        recv(uas_reply(invite, "200 OK", f"u{i}"), uas)
        route = route_set(last[UAC])
        recv(uac_request(i, "ACK", 1, f";tag=u{i}", route), uac)
        recv(uac_request(i, "BYE", 2, f";tag=u{i}", route), uac)
        recv(uas_reply(last[UAS], "200 OK", f"u{i}"), uas)


@contextlib.contextmanager
def measured(profile: bool) -> Iterator[None]:
    """Around the measured loop: cProfile, and callgrind's instrumentation
    when running under ``--callgrind``."""
    prof = cProfile.Profile() if profile else None
    toggles = CALLGRIND_TOGGLES
    if toggles:
        toggles[0]()
    if prof:
        prof.enable()
    try:
        yield
    finally:
        if prof:
            prof.disable()
        if toggles:
            toggles[1]()
        if prof:
            pstats.Stats(prof).sort_stats("tottime").print_stats(40)


# (start, stop) of callgrind's instrumentation, set by --callgrind-child
CALLGRIND_TOGGLES: list[Callable[[], None]] = []

CALLGRIND_C = """
#include <valgrind/callgrind.h>
void measure_start(void) { CALLGRIND_START_INSTRUMENTATION; CALLGRIND_ZERO_STATS; }
void measure_stop(void) { CALLGRIND_DUMP_STATS_AT("measured"); CALLGRIND_STOP_INSTRUMENTATION; }
"""


def load_callgrind_toggles(work: Path) -> None:
    """Callgrind's client requests are inline machine code: a two-function
    shared object (valgrind's header, a C compiler) gives them to ctypes."""
    (work / "cg.c").write_text(CALLGRIND_C)
    subprocess.run(
        ["cc", "-O1", "-shared", "-fPIC", "-o", str(work / "cg.so"), str(work / "cg.c")], check=True
    )
    lib = ctypes.CDLL(str(work / "cg.so"))
    CALLGRIND_TOGGLES[:] = [lib.measure_start, lib.measure_stop]


def run_callgrind(kind: str, args: argparse.Namespace) -> None:
    """Rerun ``kind`` under callgrind; print instructions per message."""
    work = Path(tempfile.mkdtemp(prefix="receive_cg_"))
    cmd = [
        "valgrind",
        "--tool=callgrind",
        "--instr-atstart=no",
        f"--callgrind-out-file={work}/callgrind.out",
        sys.executable,
        __file__,
        kind,
        "-n",
        str(args.n),
        "--route",
        args.route,
        "--ser-cfg",
        str(args.ser_cfg),
        "--callgrind-child",
    ]
    res = subprocess.run(cmd, capture_output=True, text=True)
    if res.returncode:
        sys.exit(f"callgrind run failed:\n{res.stdout}{res.stderr}")
    dumps = [f for f in work.glob("callgrind.out*") if "measured" in f.read_text(errors="replace")[:2000]]
    totals = re.search(r"^(?:summary|totals): (\d+)", dumps[0].read_text(), re.M) if dumps else None
    if totals is None:
        sys.exit(f"no measured dump in {work}")
    per = int(totals.group(1)) / args.n
    unit = "call (6 messages)" if kind.endswith("call") else "message"
    build = re.search(r"^build: (\w+)", res.stdout, re.M)
    label = f"{kind} ({args.route})" if kind in TWIN_KINDS else kind
    label += f", {build.group(1) if build else 'pure'}"
    print(f"{label:31s} {per:12,.0f} instructions per {unit}; {args.n} measured; {dumps[0]}")


async def run(kind: str, n: int, profile: bool, route: str = "cfg", ser_cfg: Path | None = None) -> None:
    core = Core({})
    work = Path(tempfile.mkdtemp(prefix="receive_bench_"))
    if kind in TWIN_KINDS:
        assert ser_cfg is not None
        name, text = twin_route(route, ser_cfg)
        kind = TWIN_KINDS[kind]
    elif kind.endswith("-cfg"):
        name, text = "ser.cfg", ROUTES[kind]
    else:
        name, text = "routes.py", ROUTES[kind]
    (work / name).write_text(text)
    if name == "ser.cfg":
        core.set_routes(load_config(work / name, core).routes)
    else:
        core.set_routes(load_script(work / name, core))
    core.loop = asyncio.get_running_loop()
    for module in core.module_list:
        await module.start()
    cap = Capture()
    core.udp_listeners.append(cap)  # type: ignore[arg-type]
    rcv = ReceiveInfo(Proto.UDP, "127.0.0.1", 6000, "127.0.0.1", 5999, 2, cap)
    if kind == "call":
        await run_call_kind(core, cap, n, profile)
        return
    make = register if kind == "register" else options
    for i in range(2000):  # warm-up: lazy imports, fix-ups, specialisation
        core.receive(make(10_000_000 + i), rcv)
    msgs = [make(i) for i in range(n)]
    gc.collect()
    gc.freeze()  # as Runner.start does
    gc.set_threshold(*GC_THRESHOLDS)
    recv = core.receive
    chunks: list[float] = []
    with measured(profile):
        for c in range(0, n, 2000):
            t0 = time.process_time()
            for m in msgs[c : c + 2000]:
                recv(m, rcv)
            chunks.append((time.process_time() - t0) / len(msgs[c : c + 2000]))
    assert cap.sent == n + 2000, f"{cap.sent} replies for {n + 2000} requests"
    print(
        f"{kind:8s} {min(chunks) * 1e6:6.1f} µs/request (best chunk), "
        f"{sum(chunks) / len(chunks) * 1e6:6.1f} mean; {n} requests"
    )


async def run_call_kind(core: Core, cap: Capture, n: int, profile: bool) -> None:
    reg = ReceiveInfo(Proto.UDP, "127.0.0.1", UAS, "127.0.0.1", 5999, 2, cap)
    core.receive(
        (
            "REGISTER sip:127.0.0.1:5999 SIP/2.0\r\nVia: SIP/2.0/UDP 127.0.0.1:6001;branch=z9hG4bKreg\r\n"
            "From: <sip:service@127.0.0.1>;tag=r\r\nTo: <sip:service@127.0.0.1>\r\nCall-ID: reg\r\n"
            f"CSeq: 1 REGISTER\r\nContact: <sip:service@127.0.0.1:{UAS}>\r\nExpires: 3600\r\n"
            "Content-Length: 0\r\n\r\n"
        ).encode(),
        reg,
    )
    await asyncio.sleep(0.2)  # let save() finish
    run_calls(core, cap, 10_000_000, 500)  # warm-up
    gc.collect()
    gc.freeze()  # as Runner.start does
    gc.set_threshold(*GC_THRESHOLDS)
    sent0 = cap.sent
    chunks: list[float] = []
    with measured(profile):
        for c in range(0, n, 500):
            t0 = time.process_time()
            run_calls(core, cap, c, min(500, n - c))
            chunks.append((time.process_time() - t0) / min(500, n - c))
    assert cap.sent - sent0 == 7 * n, f"{cap.sent - sent0} messages sent for {n} calls"
    print(
        f"call     {min(chunks) * 1e6:6.1f} µs/call (best chunk), "
        f"{sum(chunks) / len(chunks) * 1e6:6.1f} mean; {n} calls"
    )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument(
        "kinds",
        nargs="*",
        help="options, options-cfg, register, call, twin-options, twin-register, twin-call "
        "(default: the first three)",
    )
    ap.add_argument("-n", type=int, default=20_000)
    ap.add_argument("--profile", action="store_true")
    ap.add_argument(
        "--route", choices=("cfg", "py"), default="cfg", help="twin-*: ser.cfg or its Python twin"
    )
    ap.add_argument(
        "--ser-cfg", type=Path, default=Path("/work/shared/bench/ser.cfg"), help="twin-*: the cfg"
    )
    ap.add_argument("--callgrind", action="store_true", help="instructions per message under callgrind")
    ap.add_argument("--callgrind-child", action="store_true", help=argparse.SUPPRESS)
    args = ap.parse_args()
    for kind in args.kinds or ["options", "options-cfg", "register"]:
        if kind not in ROUTES and kind not in TWIN_KINDS:
            ap.error(f"unknown kind {kind!r}")
        if args.callgrind:
            run_callgrind(kind, args)
            continue
        if args.callgrind_child:
            load_callgrind_toggles(Path(tempfile.mkdtemp(prefix="receive_cg_so_")))
            print(f"build: {BUILD}")  # compiled or pure (sipexpress/_build.py)
        asyncio.run(run(kind, args.n, args.profile, args.route, args.ser_cfg))


if __name__ == "__main__":
    main()
