"""Issue 5 acceptance at full size: 10 000 users on SQLite, MariaDB and
PostgreSQL (the test suite runs the same steps with 500 users per
backend: tests/interop/acceptance/test_issue5.py).

For each backend: a fresh database, 10 000 subscribers bulk-inserted
(ha1/ha1b computed), ``ser`` with the shipped etc/ser.cfg and its commented
auth lines enabled (auth_db + usrloc on that database), SIPp registering
every user with digest auth (``[authentication]``, injection CSV), then
200 calls through the default script to a sample of them (a SIPp UAS
plays the registered contacts), ``ul_dump`` over the FIFO, and the
``location`` row count (db_mode 1).

Usage: python bench/acceptance_bench.py [--users 10000] [--rate 200]
           [--db-mode 1] [--backends sqlite,mysql,postgres] [--calls 200]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "src"))

from tests.interop.acceptance import issue5  # noqa: E402
from tests.support import SerProcess, free_port  # noqa: E402
from tests.unit.db.dbfixtures import cleanup, new_db_url  # noqa: E402


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


def retransmissions(sipp_out: str) -> int:
    """SIPp's retransmission column of the second (authenticated) REGISTER."""
    rows = [ln.split() for ln in sipp_out.splitlines() if "REGISTER ---------->" in ln]
    with contextlib.suppress(IndexError, ValueError):
        return int(rows[-1][3])
    return -1


def one(kind: str, users: int, rate: int, db_mode: int, calls: int, calc: bool) -> None:
    work = Path(tempfile.mkdtemp(prefix=f"accept-{kind}-"))
    url = new_db_url(kind, work)
    sp: SerProcess | None = None
    try:
        prov = issue5.provision(url, users)
        cfg = work / "ser.cfg"
        port = issue5.short_port()
        fifo = str(work / "ser_fifo")
        cfg.write_text(issue5.acceptance_cfg(url, db_mode, calc).format(port=port, fifo=fifo))
        sp = SerProcess(cfg, "127.0.0.1", port, work)
        sp.start()
        issue5.wait_started(sp)
        assert sp.proc is not None
        uas_port = free_port()
        c0 = cpu_seconds(sp.proc.pid)
        ok, failed, secs, out = issue5.register_users(sp, users, rate, uas_port, work)
        cpu = cpu_seconds(sp.proc.pid) - c0
        t0 = time.monotonic()
        dump = issue5.fifo(sp, "ul_dump", timeout=120)
        dump_s = time.monotonic() - t0
        aors = issue5.dump_aors(dump)
        found = sum(1 for i in range(users) if issue5.user_name(i) in aors)
        rows = issue5.location_rows(url) if db_mode else -1
        sample = [issue5.user_name(i) for i in range(0, users, max(1, users // calls))][:calls]
        c_ok, c_failed, c_secs, _, uas_rc = issue5.call_users(sp, sample, 50, uas_port, work)
        print(
            f"{kind:8s} db_mode {db_mode} {'calc_ha1' if calc else 'ha1col  '}: provision {users} in {prov:.1f} s; "
            f"REGISTER ok {ok} failed {failed} in {secs:.1f} s ({ok / secs:.0f}/s, retrans {retransmissions(out)}), "
            f"ser CPU {cpu:.1f} s = {cpu / max(ok, 1) * 1000:.2f} s/1000; ul_dump {found}/{users} AORs "
            f"({len(dump) / 2**20:.1f} MiB, {dump_s:.1f} s); location rows {rows}; "
            f"calls ok {c_ok} failed {c_failed} ({c_secs:.1f} s, UAS rc {uas_rc}); RSS {rss_mib(sp.proc.pid):.0f} MiB",
            flush=True,
        )
    finally:
        if sp is not None:
            sp.stop()
        if kind != "sqlite":
            asyncio.run(cleanup(url))


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--users", type=int, default=10_000)
    ap.add_argument("--rate", type=int, default=200, help="registrations per second (2 requests each)")
    ap.add_argument("--db-mode", type=int, default=1)
    ap.add_argument("--calls", type=int, default=200)
    ap.add_argument("--backends", default="sqlite,mysql,postgres")
    ap.add_argument("--calculate-ha1", action="store_true", help="H(A1) from the password column")
    args = ap.parse_args()
    for kind in args.backends.split(","):
        one(kind, args.users, args.rate, args.db_mode, args.calls, args.calculate_ha1)


if __name__ == "__main__":
    main()
