"""REGISTER and look-up cost of usrloc's stores (issue 19): memory
(db_mode 0) against Redis, MariaDB and PostgreSQL in db_mode 3 (every save
and look-up goes to the store: what several nodes sharing a location pay)
and Redis in db_mode 1 (write-through, look-ups from memory).

Per backend, one ``ser`` (ser.cfg: ``save("location")`` for REGISTER,
``lookup("location")`` then a stateless 200/404 for OPTIONS to a user):

1. SIPp registers ``--users`` distinct AORs at ``--rate``/s: ser's CPU per
   1000 registrations (utime+stime from /proc), failed, retransmissions;
2. SIPp sends one OPTIONS to each registered user at the same rate: ser's
   CPU per 1000 look-ups (each also parses and answers the request: the
   memory row is the baseline of that share);
3. in-process, sequentially: the latency of one look-up of the store
   (``Udomain.fetch``: one Redis script / one SELECT; memory: a dict), median
   and 99th percentile over ``--lookups`` calls, and the client CPU per
   1000 (time.process_time).

For Redis the redis-server's own CPU per 1000 (its /proc) is shown too:
it runs on the same two cores.

Usage: python bench/shared_location_bench.py [--users 3000] [--rate 200]
       [--backends memory,redis,mysql,postgres,redis1] [--lookups 3000]
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "src"))
sys.path.insert(0, str(ROOT / "bench"))

from register_bench import SCENARIO, cpu_seconds, sipp_run  # noqa: E402
from tests.support import SerProcess, free_port  # noqa: E402

CFG = """\
debug=2
fork=no
listen=udp:127.0.0.1:{port}
sip_warning=0
loadmodule "sl"
loadmodule "usrloc"
loadmodule "registrar"
{modparams}
route {{
    if (method=="REGISTER") {{ save("location"); break; }};
    if (lookup("location")) {{ sl_send_reply("200", "Found"); break; }};
    sl_send_reply("404", "Not Found");
}}
"""

LOOKUP_SCENARIO = ROOT / "bench" / "scenarios" / "options_user.xml"
REDIS = "redis://127.0.0.1:6379/0?prefix={name}:"
SQL = {
    "mysql": "mysql://root@127.0.0.1:3306/{name}",
    "postgres": "postgresql://postgres@127.0.0.1:5432/{name}",
}


def backend_url(backend: str, name: str) -> tuple[int, str]:
    """(db_mode, db_url) of a backend name."""
    if backend == "memory":
        return 0, ""
    if backend.startswith("redis"):
        return (1 if backend == "redis1" else 3), REDIS.format(name=name)
    return 3, SQL[backend].format(name=name)


def redis_pid() -> int | None:
    out = subprocess.run(["redis-cli", "info", "server"], capture_output=True, text=True).stdout
    for line in out.splitlines():
        if line.startswith("process_id:"):
            return int(line.split(":")[1])
    return None


async def lookup_latency(db_mode: int, url: str, users: int, n: int) -> tuple[float, float, float]:
    """(median µs, p99 µs, client CPU ms per 1000) of Udomain.fetch."""
    from sipexpress.core.server import Core
    from sipexpress.modules.usrloc import UsrlocModule

    core = Core({})
    ul = core.load_module("usrloc")
    assert isinstance(ul, UsrlocModule)
    core.set_modparam("usrloc", "db_mode", db_mode)
    if url:
        core.set_modparam("usrloc", "db_url", url)
    d = ul.register_domain("location")
    await ul.start()
    if db_mode == 0:  # memory: fill it the way the registrar does
        from sipexpress.modules.usrloc import Ucontact

        now = int(time.time())
        for i in range(users):
            aor = f"u{i:06d}"
            d.apply_now(aor, [Ucontact(aor, f"sip:{aor}@127.0.0.1:5060", now + 3600)], ())
    times: list[float] = []
    missing = 0  # AORs whose REGISTER failed (the table's ok/failed column)
    c0 = time.process_time()
    for i in range(n):
        t0 = time.perf_counter()
        rec = await d.fetch(f"u{i % users:06d}")
        times.append(time.perf_counter() - t0)
        missing += rec is None
    cpu = time.process_time() - c0
    if missing:
        print(f"db_mode {db_mode}: {missing} of {n} look-ups found nothing", file=sys.stderr)
    await ul.stop()
    from sipexpress.db import dispose_engines

    await dispose_engines()
    times.sort()
    return statistics.median(times) * 1e6, times[int(len(times) * 0.99)] * 1e6, cpu / n * 1e6


async def prepare(backend: str, url: str) -> None:
    if backend in SQL:
        from sipexpress.db import create_all, dispose_engines

        await create_all(url)
        await dispose_engines()


async def drop(url: str) -> None:
    from tests.unit.db.dbfixtures import cleanup

    await cleanup(url)


def run_backend(backend: str, users: int, rate: int, lookups: int) -> dict[str, str]:
    name = f"sipx_bench_{int(time.time() * 1000) % 10**9}"
    db_mode, url = backend_url(backend, name)
    asyncio.run(prepare(backend, url))
    row: dict[str, str] = {"backend": backend, "db_mode": str(db_mode)}
    rpid = redis_pid() if backend.startswith("redis") else None
    with tempfile.TemporaryDirectory() as td:
        work = Path(td)
        port = free_port()
        modparams = f'modparam("usrloc", "db_mode", {db_mode})\n'
        if url:
            modparams += f'modparam("usrloc", "db_url", "{url}")\n'
        cfg = work / "ser.cfg"
        cfg.write_text(CFG.format(port=port, modparams=modparams))
        sp = SerProcess(cfg, "127.0.0.1", port, work)
        sp.start()
        assert sp.proc is not None
        pid = sp.proc.pid
        try:
            csv = work / "users.csv"
            csv.write_text("SEQUENTIAL\n" + "".join(f"u{i:06d};5060\n" for i in range(users)))
            c0, r0 = cpu_seconds(pid), cpu_seconds(rpid) if rpid else 0.0
            ok, failed, retrans, _ = sipp_run(port, csv, rate, users, work)
            c1, r1 = cpu_seconds(pid), cpu_seconds(rpid) if rpid else 0.0
            row["REGISTER ser CPU-s/1000"] = f"{(c1 - c0) / max(ok, 1) * 1000:.3f}"
            row["REGISTER redis CPU-s/1000"] = f"{(r1 - r0) / max(ok, 1) * 1000:.3f}" if rpid else "-"
            row["REGISTER ok/failed/retrans"] = f"{ok}/{failed}/{retrans}"
            # one OPTIONS to each user: lookup() + a stateless reply
            c0, r0 = cpu_seconds(pid), cpu_seconds(rpid) if rpid else 0.0
            ok, failed, retrans, _ = sipp_run(port, csv, rate, users, work, LOOKUP_SCENARIO)
            c1, r1 = cpu_seconds(pid), cpu_seconds(rpid) if rpid else 0.0
            row["lookup ser CPU-s/1000"] = f"{(c1 - c0) / max(ok, 1) * 1000:.3f}"
            row["lookup redis CPU-s/1000"] = f"{(r1 - r0) / max(ok, 1) * 1000:.3f}" if rpid else "-"
            row["lookup ok/failed"] = f"{ok}/{failed}"
        finally:
            sp.stop()
            errors = [line for line in sp.log().splitlines() if "ERROR" in line]
            if errors:
                print(f"{backend}: {len(errors)} errors in ser's log, first: {errors[0]}", file=sys.stderr)
    med, p99, cpu = asyncio.run(lookup_latency(db_mode, url, users, lookups))
    row["fetch median µs"] = f"{med:.0f}"
    row["fetch p99 µs"] = f"{p99:.0f}"
    row["fetch client CPU ms/1000"] = f"{cpu:.0f}"
    if url:
        asyncio.run(drop(url))
    return row


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--users", type=int, default=3000)
    ap.add_argument("--rate", type=int, default=200)
    ap.add_argument("--lookups", type=int, default=3000)
    ap.add_argument("--backends", default="memory,redis,mysql,postgres,redis1")
    args = ap.parse_args()
    assert SCENARIO.exists() and LOOKUP_SCENARIO.exists()
    rows = [run_backend(b, args.users, args.rate, args.lookups) for b in args.backends.split(",")]
    keys = list(rows[0])
    print("| " + " | ".join(keys) + " |")
    print("|" + "---|" * len(keys))
    for r in rows:
        print("| " + " | ".join(r.get(k, "") for k in keys) + " |")


if __name__ == "__main__":
    main()
