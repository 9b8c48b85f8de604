"""The admin console's SQL on SQLite, MariaDB and PostgreSQL: call-history
filters (dates inclusive, status class or code, LIKE wildcards taken
literally), the CSV export, domains and group memberships."""

from __future__ import annotations

from datetime import date, datetime, timedelta
from typing import Any

from sqlalchemy import insert

from sipexpress.db import create_all, provisioning, schema
from sipexpress.db.engine import run
from sipexpress.web import console_store as cs
from sipexpress.web.store import Store
from tests.unit.db.dbfixtures import db_url

__all__ = ["db_url"]

T0 = datetime(2026, 12, 1, 23, 30, 0)


def _acc(i: int, **kw: Any) -> dict[str, Any]:
    row = {
        "sip_method": "INVITE",
        "sip_status": "200",
        "from_uri": f"sip:u{i}@a.example",
        "to_uri": f"sip:t{i}@b.example",
        "sip_callid": f"c{i}",
        "username": "alice",
        "domain": "a.example",
        "time": T0 + timedelta(hours=i),
    }
    row.update(kw)
    return row


async def _seed(url: str) -> None:
    await create_all(url)
    rows = [
        _acc(0),  # 2026-12-01 23:30
        _acc(1, sip_status="486"),  # 2026-12-02 00:30
        _acc(2, sip_status="404", username="bob"),
        _acc(3, sip_status="487", domain="other.example"),
        _acc(4, sip_method="BYE"),
        _acc(5, from_uri="sip:100%_off@a.example", sip_callid="odd"),
        _acc(6, from_uri="sip:100xyoff@a.example", sip_callid="plain"),
    ]

    async def op(c: Any) -> None:
        await c.execute(insert(schema.acc), rows)

    await run(url, op)


async def _ids(url: str, f: cs.CallFilter) -> list[str]:
    page = await cs.search_calls(url, f, 1, 50)
    assert page.total == len(page.rows)
    return [r["sip_callid"] for r in page.rows]


async def test_call_filters(db_url: str) -> None:
    await _seed(db_url)
    assert await _ids(db_url, cs.CallFilter()) == ["plain", "odd", "c3", "c2", "c1", "c0"]  # newest first
    assert await _ids(db_url, cs.CallFilter(method="")) == ["plain", "odd", "c4", "c3", "c2", "c1", "c0"]
    assert await _ids(db_url, cs.CallFilter(user="bob")) == ["c2"]
    assert await _ids(db_url, cs.CallFilter(user="alice@other.example")) == ["c3"]
    assert await _ids(db_url, cs.CallFilter(status="4")) == ["c3", "c2", "c1"]
    assert await _ids(db_url, cs.CallFilter(status="486")) == ["c1"]
    # the "to" day is inclusive, the "from" day starts at midnight
    day = date(2026, 12, 1)
    assert await _ids(db_url, cs.CallFilter(since=day, until=day)) == ["c0"]
    assert await _ids(db_url, cs.CallFilter(since=day + timedelta(days=1))) == [
        "plain",
        "odd",
        "c3",
        "c2",
        "c1",
    ]
    # % and _ typed in the search box are characters, not wildcards
    assert await _ids(db_url, cs.CallFilter(q="100%_off")) == ["odd"]
    # and letters match in either case, on every database
    assert await _ids(db_url, cs.CallFilter(q="U5@A.EXAMPLE")) == []
    assert await _ids(db_url, cs.CallFilter(q="T6@B.EXAMPLE")) == ["plain"]


async def test_export_and_csv_cells(db_url: str) -> None:
    await _seed(db_url)
    rows = await cs.export_calls(db_url, cs.CallFilter(user="alice", status="2", method=""))
    assert [r["sip_callid"] for r in rows] == ["plain", "odd", "c4", "c0"]
    lines = list(cs.csv_rows(rows))
    assert lines[0] == list(cs.CALL_COLUMNS)
    assert lines[-1][:4] == ["2026-12-01 23:30:00", "INVITE", "200", "sip:u0@a.example"]
    assert [cs.csv_cell(v) for v in ("=1+1", "+1", "-x", "@SUM", "sip:a", None)] == [
        "'=1+1",
        "'+1",
        "'-x",
        "'@SUM",
        "sip:a",
        "",
    ]


async def test_domains_and_groups(db_url: str) -> None:
    await create_all(db_url)
    for name in ("b.example", "a.example"):
        await provisioning.add_domain(db_url, name)
    listed = await cs.domains(db_url)
    assert [d["domain"] for d in listed] == ["a.example", "b.example"]
    assert all(isinstance(d["last_modified"], datetime) for d in listed)
    await provisioning.remove_domain(db_url, "a.example")
    assert [d["domain"] for d in await cs.domains(db_url)] == ["b.example"]
    store = Store(db_url)
    for user, group in (("ann", "ld"), ("bob", "ld"), ("ann", "voicemail")):
        await store.set_group(user, "a.example", group, True)
    assert await cs.group_names(db_url) == [("ld", 2), ("voicemail", 1)]
    ld = await cs.group_members(db_url, "ld", 1, 1)
    assert ld.total == 2 and ld.pages == 2 and [r["username"] for r in ld.rows] == ["ann"]
    every = await cs.group_members(db_url, "", 1, 10)
    assert [(r["grp"], r["username"]) for r in every.rows] == [
        ("ld", "ann"),
        ("ld", "bob"),
        ("voicemail", "ann"),
    ]
