"""REGISTER benchmark: registrar + usrloc in memory mode (db_mode 0), no auth.

Measures, briefly (the machine is shared):

1. the highest REGISTER rate sustained with no failed registrations
   (SIPp, distinct users from an injection file, rate stepped up until a
   step fails or the CPU is saturated);
2. CPU seconds the ``ser`` process spends per 1000 registrations (from
   /proc/<pid>/stat, at a moderate fixed rate);
3. memory per 100 000 contacts, measured in-process with tracemalloc
   (records + contacts in usrloc's tables, no SIP traffic).

With ``--auth`` every registration is digest-authenticated first
(REGISTER → 401 → REGISTER with credentials → 200: two requests per
registration; auth + auth_db on an SQLite subscriber table, HA1 column).

Usage: python bench/register_bench.py [--auth] [--duration 3] [--rates 500,1000,...]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import gc
import os
import subprocess
import sys
import tempfile
import time
import tracemalloc
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "src"))

from tests.support import free_port, options_request, udp_exchange  # noqa: E402

SCENARIO = ROOT / "tests" / "interop" / "registrar" / "scenarios" / "register_users.xml"
OPTIONS_SCENARIO = ROOT / "bench" / "scenarios" / "options_uac.xml"

AUTH_SCENARIO = ROOT / "tests" / "interop" / "auth" / "scenarios" / "register_auth.xml"

AUTH_SCRIPT = """
from sipexpress.script.pyroute import save, sl_send_reply, www_authorize, www_challenge

OPTIONS = {{"listen": "udp:127.0.0.1:{port}", "sip_warning": 0}}
MODULES = ["sl", "usrloc", "registrar", "auth", "auth_db"]
MODPARAMS = [("auth_db", "db_url", "sqlite:///{workdir}/auth.sqlite")]

async def request_route(ctx):
    if ctx.msg.method == "REGISTER":
        r = await www_authorize(ctx, "iptel.org", "subscriber")
        if r < 0:
            return www_challenge(ctx, "iptel.org", "1")
        if r > 0:
            await save(ctx, "location")
    else:
        sl_send_reply(ctx, 200, "OK")
    return 0
"""


async def make_auth_db(workdir: Path, users: int) -> None:
    """An SQLite subscriber table with users u000000… (password pw), bulk-inserted."""
    import hashlib

    from sqlalchemy import insert

    from sipexpress.db import create_all, dispose_engines, run, schema

    url = f"sqlite:///{workdir}/auth.sqlite"
    await create_all(url)
    rows = [
        {
            "username": f"u{i:06d}",
            "domain": "iptel.org",
            "password": "pw",
            "ha1": hashlib.md5(f"u{i:06d}:iptel.org:pw".encode()).hexdigest(),
            "ha1b": hashlib.md5(f"u{i:06d}@iptel.org:iptel.org:pw".encode()).hexdigest(),
            "phplib_id": f"{i:032x}",
        }
        for i in range(users)
    ]
    await run(url, lambda conn: conn.execute(insert(schema.subscriber), rows), 120)
    await dispose_engines()


SCRIPT = """
from sipexpress.script.pyroute import save, sl_send_reply

OPTIONS = {{"listen": "udp:127.0.0.1:{port}", "sip_warning": 0}}
MODULES = ["sl", "usrloc", "registrar"]

async def request_route(ctx):
    if ctx.msg.method == "REGISTER":
        await save(ctx, "location")
    else:
        sl_send_reply(ctx, 200, "OK")
    return 0
"""


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


def start_ser(workdir: Path, port: int, script: str = SCRIPT) -> subprocess.Popen[bytes]:
    cfg = workdir / "reg.py"
    cfg.write_text(script.format(port=port, workdir=workdir))
    with open(workdir / "ser.log", "ab") as log:  # the child keeps its own descriptor
        proc = subprocess.Popen(
            [sys.executable, "-m", "sipexpress.cli.ser", "-f", str(cfg), "-D", "-E"],
            stdout=log,
            stderr=subprocess.STDOUT,
            cwd=workdir,
        )
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline:
        if udp_exchange(options_request("127.0.0.1", port), "127.0.0.1", port, 0.3) is not None:
            return proc
        if proc.poll() is not None:
            break
    raise SystemExit("ser did not start:\n" + (workdir / "ser.log").read_text())


def sipp_run(
    port: int, csv: Path, rate: int, count: int, workdir: Path, scenario: Path = SCENARIO
) -> tuple[int, int, int, float]:
    """(successful, failed, retransmissions, wall seconds)"""
    t0 = time.monotonic()
    p = subprocess.run(
        [
            "sipp", f"127.0.0.1:{port}", "-sf", str(scenario), "-inf", str(csv),
            "-i", "127.0.0.1", "-p", str(free_port()), "-m", str(count), "-r", str(rate),
            "-timeout", str(max(10, count // max(rate, 1) + 10)), "-nostdin",
        ],
        capture_output=True, text=True, cwd=workdir, timeout=300,
    )  # fmt: skip
    wall = time.monotonic() - t0
    ok = failed = retrans = 0
    for line in p.stdout.splitlines():
        cols = [c.strip() for c in line.split("|")]
        if len(cols) >= 3 and cols[0].startswith("Successful call"):
            ok = int(cols[2] or 0)
        elif len(cols) >= 3 and cols[0].startswith("Failed call"):
            failed = int(cols[2] or 0)
        elif "REGISTER ---------->" in line:
            parts = line.split()
            with contextlib.suppress(ValueError, IndexError):
                retrans = int(parts[parts.index("---------->") + 2])
    if p.returncode not in (0, 1):
        failed = max(failed, 1)
    return ok, failed, retrans, wall


async def memory_per_100k(n: int = 100_000) -> tuple[float, float]:
    """(bytes per contact, MiB per 100k) for n AORs with one contact each."""
    from sipexpress.core.server import Core
    from sipexpress.modules.registrar import ContactSpec, RegisterRequest, plan_register
    from sipexpress.modules.usrloc import UsrlocModule

    core = Core({})
    ul = core.load_module("usrloc")
    reg = core.load_module("registrar")
    assert isinstance(ul, UsrlocModule)
    d = ul.register_domain("location")
    now = time.time()
    cfg = reg.cfg  # type: ignore[attr-defined]
    gc.collect()
    tracemalloc.start()
    base = tracemalloc.get_traced_memory()[0]
    for i in range(n):
        user = f"user{i:06d}"
        req = RegisterRequest(
            aor=user,
            callid=f"{i:08x}-4a5b6c7d8e9f@10.0.{i % 250}.{i % 200}",
            cseq=1,
            contacts=[ContactSpec(f"sip:{user}@10.0.{i % 250}.{i % 200}:5060;transport=udp")],
            expires_hdr=3600,
            user_agent="Linphone/3.6.1 (belle-sip/1.2.4)",
            socket="udp:127.0.0.1:5060",
        )
        plan = plan_register(d.get(user), req, now, cfg)
        await d.apply(user, plan.upserts, plan.deletes)
    gc.collect()
    used = tracemalloc.get_traced_memory()[0] - base
    tracemalloc.stop()
    assert len(d.records) == n
    return used / n, used / n * 100_000 / 2**20


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rates", default="500,1000,1500,2000,3000,4000")
    ap.add_argument("--duration", type=float, default=3.0, help="seconds per rate step")
    ap.add_argument("--cpu-count", type=int, default=6000, help="registrations for the CPU measurement")
    ap.add_argument("--cpu-rate", type=int, default=2000)
    ap.add_argument(
        "--auth", action="store_true", help="digest-authenticate every REGISTER (auth_db, SQLite)"
    )
    args = ap.parse_args()

    if not args.auth:
        per, mib = asyncio.run(memory_per_100k())
        print(f"memory: {per:.0f} bytes per contact (AOR + 1 contact) = {mib:.1f} MiB per 100 000 contacts")

    with tempfile.TemporaryDirectory() as td:
        work = Path(td)
        users = 60_000
        csv = work / "users.csv"
        port = free_port()
        scenario = SCENARIO
        if args.auth:
            scenario = AUTH_SCENARIO
            asyncio.run(make_auth_db(work, users))
            csv.write_text(
                "SEQUENTIAL\n"
                + "".join(
                    f"u{i:06d};[authentication username=u{i:06d} password=pw];iptel.org\n"
                    for i in range(users)
                )
            )
            proc = start_ser(work, port, AUTH_SCRIPT)
        else:
            csv.write_text("SEQUENTIAL\n" + "".join(f"u{i:06d};5060\n" for i in range(users)))
            proc = start_ser(work, port)
        try:
            sipp_run(port, csv, 500, 500, work)  # warm-up (lazy imports, first-call fix-ups)
            c0 = cpu_seconds(proc.pid)
            time.sleep(2.0)
            idle = (cpu_seconds(proc.pid) - c0) / 2.0
            print(f"idle: ser uses {idle * 1000:.1f} ms CPU per second when idle")
            c0 = cpu_seconds(proc.pid)
            ok, failed, retrans, wall = sipp_run(port, csv, args.cpu_rate, args.cpu_count, work, scenario)
            c1 = cpu_seconds(proc.pid)
            print(
                f"cpu: {ok} registrations at {args.cpu_rate}/s: {c1 - c0:.2f} s CPU "
                f"= {(c1 - c0) / max(ok, 1) * 1000:.3f} s per 1000 registrations "
                f"(failed {failed}, retrans {retrans}); "
                f"{(c1 - c0 - idle * wall) / max(ok, 1) * 1000:.3f} s without the idle share"
            )
            if OPTIONS_SCENARIO.exists():
                c0 = cpu_seconds(proc.pid)
                subprocess.run(
                    ["sipp", f"127.0.0.1:{port}", "-sf", str(OPTIONS_SCENARIO), "-i", "127.0.0.1",
                     "-p", str(free_port()), "-m", str(args.cpu_count), "-r", str(args.cpu_rate),
                     "-timeout", "30", "-nostdin"],
                    capture_output=True, cwd=work, timeout=120,
                )  # fmt: skip
                c1 = cpu_seconds(proc.pid)
                print(
                    f"baseline: {args.cpu_count} OPTIONS answered statelessly by the same server: "
                    f"{(c1 - c0) / args.cpu_count * 1000:.3f} s CPU per 1000 (the core's share)"
                )
            best = 0
            for rate in (int(r) for r in args.rates.split(",")):
                count = int(rate * args.duration)
                c0 = cpu_seconds(proc.pid)
                ok, failed, retrans, wall = sipp_run(port, csv, rate, count, work, scenario)
                c1 = cpu_seconds(proc.pid)
                busy = (c1 - c0) / max(wall, 1e-9)
                print(
                    f"rate {rate}/s: ok {ok}/{count} failed {failed} retrans {retrans} "
                    f"wall {wall:.1f}s ser cpu {busy * 100:.0f}%"
                )
                # sustained: every registration succeeded and the step kept
                # its pace (SIPp retransmitting alone is not a failure)
                if failed or ok < count or wall > args.duration * 1.25 + 0.3:
                    break
                best = rate
            print(f"highest sustained REGISTER rate with no failures: {best}/s")
            print(f"ser RSS at the end: {rss_kib(proc.pid) / 1024:.1f} MiB")
        finally:
            proc.terminate()
            proc.wait(10)


if __name__ == "__main__":
    main()
