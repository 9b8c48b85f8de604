"""Web interface: the administrator's user list and search with many users.

    python bench/web_bench.py                    # 10 000 users, SQLite
    python bench/web_bench.py --users 50000 --runs 30
    python bench/web_bench.py --db-url mysql://root@127.0.0.1/web_bench

Fills ``subscriber`` with N users (and a few ``grp`` rows), logs in as
``admin`` and times whole HTTP requests through the Starlette app (routing,
session, SQL with LIMIT/OFFSET, template rendering) with httpx's in-process
ASGI transport.  No ser is needed: these pages only read the database.
Prints median and worst time per page in milliseconds.
"""

from __future__ import annotations

import argparse
import asyncio
import re
import statistics
import tempfile
import time
from datetime import datetime
from pathlib import Path

import httpx
from sqlalchemy import insert

from sipexpress.db import create_all, dispose_engines, drop_database, run, schema
from sipexpress.db.provisioning import calc_ha1, calc_ha1b
from sipexpress.web.app import create_app
from sipexpress.web.config import WebConfig

DOMAIN = "bench.example.org"

CASES = [
    ("list, page 1", "/admin/users"),
    ("list, page 200 (deep OFFSET)", "/admin/users?page=200"),
    ("sort by e-mail, descending", "/admin/users?sort=email_address&dir=desc"),
    ("search user name prefix", "/admin/users?q=user0999"),
    ("search e-mail prefix", "/admin/users?q=mail77"),
    ("search, no match", "/admin/users?q=nobody-here"),
]


async def fill(url: str, n: int) -> None:
    await create_all(url, admin_domain=DOMAIN)
    now = datetime.now().replace(microsecond=0)
    rows = [
        {
            "username": f"user{i:05d}",
            "domain": DOMAIN,
            "password": "pw",
            "ha1": calc_ha1(f"user{i:05d}", DOMAIN, "pw"),
            "ha1b": calc_ha1b(f"user{i:05d}", DOMAIN, "pw"),
            "first_name": f"First{i % 97}",
            "last_name": f"Last{i % 1013}",
            "email_address": f"mail{i}@example.com",
            "phplib_id": f"{i:032d}",
            "datetime_created": now,
            "datetime_modified": now,
        }
        for i in range(n)
    ]
    groups = [{"username": f"user{i:05d}", "domain": DOMAIN, "grp": "ld"} for i in range(0, n, 10)]

    async def op(conn: object) -> None:
        for k in range(0, len(rows), 2000):
            await conn.execute(insert(schema.subscriber), rows[k : k + 2000])  # type: ignore[attr-defined]
        await conn.execute(insert(schema.grp), groups)  # type: ignore[attr-defined]

    await run(url, op, 120)  # type: ignore[arg-type]


async def bench(url: str, runs: int) -> None:
    cfg = WebConfig(db_url=url, domain=DOMAIN, secret="bench", jsonrpc="http://127.0.0.1:9/")
    app = create_app(cfg)
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://127.0.0.1") as c:
        page = await c.get("/login")
        csrf = re.search(r'name="csrf" value="([^"]+)"', page.text)
        assert csrf
        r = await c.post(
            "/login", data={"username": "admin", "domain": DOMAIN, "password": "heslo", "csrf": csrf.group(1)}
        )
        assert r.status_code == 303, r.text
        print(f"{'page':34} {'rows':>6} {'median ms':>10} {'worst ms':>9}")
        for name, path in CASES:
            times = []
            total = ""
            for _ in range(runs):
                t = time.perf_counter()
                r = await c.get(path)
                times.append((time.perf_counter() - t) * 1000)
                assert r.status_code == 200, (path, r.status_code)
                m = re.search(r"\((\d+) rows\)|(\d+) rows?<", r.text)
                total = (m.group(1) or m.group(2)) if m else "?"
            print(f"{name:34} {total:>6} {statistics.median(times):10.1f} {max(times):9.1f}")


async def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--users", type=int, default=10000)
    p.add_argument("--runs", type=int, default=20)
    p.add_argument("--db-url")
    a = p.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        url = a.db_url or f"sqlite:///{Path(tmp) / 'bench.sqlite'}"
        t = time.perf_counter()
        await fill(url, a.users)
        print(f"{a.users} users inserted in {time.perf_counter() - t:.1f} s ({url.split(':')[0]})")
        try:
            await bench(url, a.runs)
        finally:
            if a.db_url:
                await drop_database(url)
            await dispose_engines()


if __name__ == "__main__":
    asyncio.run(main())
