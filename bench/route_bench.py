"""Micro benchmark of the ser.cfg compiler and compiled routes (plain script).

    python bench/route_bench.py [N]

Loads the default ``etc/ser.cfg`` into a real :class:`Core` bound to a
loopback port (modules sl, tm, rr, maxfwd, usrloc, registrar, textops) and
reports:

  parse+compile   time to parse and compile the default script
  compile         of which code generation + Python compile()
  invite-404      route{} on an INVITE for an unregistered local user
                  (maxfwd, msg:len, record_route, loose_route, uri==myself,
                  lookup x2, sl_send_reply 404)
  invite-relay    route{} on an INVITE for a registered user (the above
                  plus append_hf, route(1), t_relay to the contact)
  core-only       a script of core actions/conditions only (no modules)

Messages are parsed before the clock starts (each run gets a fresh,
distinct INVITE); the numbers are routes/second of the script itself,
including the modules' work and the UDP send.
"""

from __future__ import annotations

import asyncio
import socket
import sys
import time
import uuid
from pathlib import Path

from sipexpress.core.context import Proto, ReceiveInfo, RequestContext
from sipexpress.core.runner import Runner
from sipexpress.core.server import Core
from sipexpress.script.compiler import compile_config, load_config
from sipexpress.script.parser import parse_config
from sipexpress.sip.message import SipMessage

ROOT = Path(__file__).resolve().parent.parent
DEFAULT_CFG = ROOT / "etc" / "ser.cfg"


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def invite(user: str, port: int) -> bytes:
    body = (
        b"v=0\r\no=a 1 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\nm=audio 4000 RTP/AVP 0\r\n"
    )
    return (
        f"INVITE sip:{user}@127.0.0.1:{port} SIP/2.0\r\n"
        f"Via: SIP/2.0/UDP 127.0.0.1:5999;branch=z9hG4bK{uuid.uuid4().hex}\r\n"
        "Max-Forwards: 70\r\n"
        f'From: "Alice" <sip:alice@127.0.0.1>;tag={uuid.uuid4().hex[:8]}\r\n'
        f"To: <sip:{user}@127.0.0.1:{port}>\r\n"
        f"Call-ID: {uuid.uuid4().hex}@bench\r\n"
        "CSeq: 1 INVITE\r\n"
        "Contact: <sip:alice@127.0.0.1:5999>\r\n"
        "Content-Type: application/sdp\r\n"
        f"Content-Length: {len(body)}\r\n\r\n"
    ).encode() + body


def register(user: str, port: int, contact_port: int) -> bytes:
    return (
        f"REGISTER sip:127.0.0.1:{port} SIP/2.0\r\n"
        f"Via: SIP/2.0/UDP 127.0.0.1:5999;branch=z9hG4bK{uuid.uuid4().hex}\r\n"
        "Max-Forwards: 70\r\n"
        f"From: <sip:{user}@127.0.0.1:{port}>;tag=reg\r\n"
        f"To: <sip:{user}@127.0.0.1:{port}>\r\n"
        f"Call-ID: {uuid.uuid4().hex}@bench\r\n"
        "CSeq: 1 REGISTER\r\n"
        f"Contact: <sip:{user}@127.0.0.1:{contact_port}>;expires=3600\r\n"
        "Content-Length: 0\r\n\r\n"
    ).encode()


async def run_case(core: Core, name: str, datas: list[bytes], rcv: ReceiveInfo) -> None:
    route = core.routes.request["0"]
    msgs = [SipMessage.parse(d) for d in datas]
    ctxs = [RequestContext(core, m, rcv) for m in msgs]
    # warm-up
    for c in ctxs[:50]:
        await route(c)
    ctxs = ctxs[50:]
    t0 = time.perf_counter()
    for c in ctxs:
        await route(c)
    dt = time.perf_counter() - t0
    n = len(ctxs)
    print(f"{name:14s} {n / dt:10.0f} routes/s  {dt / n * 1e6:8.1f} µs/route  (n={n})")


CORE_ONLY = """
route {
    if (!(method=="INVITE" || method=="ACK") ) { drop; };
    if (msg:len >= 4096) { drop; };
    if (src_ip==10.0.0.0/8 || proto==tcp) { setflag(2); };
    if (uri=~"^sip:[a-z]+@") { setflag(1); };
    if (uri==myself) {
        rewriteuser("bob"); prefix("00"); strip(2);
        route(1);
    };
    if (isflagset(1)) { append_branch(); };
}
route[1] { if (af==inet) rewritehostport("127.0.0.1:5999"); }
"""


async def main(n: int) -> None:
    port, sink = free_port(), socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sink.bind(("127.0.0.1", 0))
    sink_port = sink.getsockname()[1]
    text = DEFAULT_CFG.read_text()

    t0 = time.perf_counter()
    for _ in range(20):
        parse_config(text, str(DEFAULT_CFG))
    parse_t = (time.perf_counter() - t0) / 20
    t0 = time.perf_counter()
    cold = load_config(DEFAULT_CFG, Core({"listen": f"udp:127.0.0.1:{port}"}))
    cold_t = time.perf_counter() - t0
    warm = []
    for _ in range(10):
        core = Core({"listen": f"udp:127.0.0.1:{port}"})
        t0 = time.perf_counter()
        loaded = load_config(DEFAULT_CFG, core)
        warm.append(time.perf_counter() - t0)
    core.update_options({"fifo": ""})
    core.set_routes(loaded.routes)
    print(f"parse          {parse_t * 1e3:8.2f} ms   (lark LALR, default ser.cfg)")
    print(
        f"load (cold)    {cold_t * 1e3:8.2f} ms   (first load: imports the modules; compile step {cold.compile_seconds * 1e3:.2f} ms)"
    )
    print(
        f"load (warm)    {min(warm) * 1e3:8.2f} ms   (read+parse+modules+modparam+compile; compile step {loaded.compile_seconds * 1e3:.2f} ms)"
    )
    runner = Runner(core)
    await runner.start()
    try:
        rcv = ReceiveInfo(Proto.UDP, "127.0.0.1", 5999, "127.0.0.1", port)
        route = core.routes.request["0"]
        await route(RequestContext(core, SipMessage.parse(register("bob", port, sink_port)), rcv))
        await run_case(core, "invite-404", [invite("nobody", port) for _ in range(n + 50)], rcv)
        await run_case(core, "invite-relay", [invite("bob", port) for _ in range(n + 50)], rcv)
        core2 = Core({"listen": f"udp:127.0.0.1:{port}"})
        core2.set_routes(compile_config(parse_config(CORE_ONLY, "core-only.cfg"), core2).routes)
        core2.myself.build()
        await run_case(core2, "core-only", [invite("alice", port) for _ in range(n + 50)], rcv)
    finally:
        await runner.stop()
        sink.close()


if __name__ == "__main__":
    asyncio.run(main(int(sys.argv[1]) if len(sys.argv) > 1 else 3000))
