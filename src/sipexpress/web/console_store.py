"""The admin console's SQL: server-wide call history (``acc``), the
``domain`` table and group membership (``grp``) as listed, searched and
paged.  Changes go through :mod:`sipexpress.db.provisioning` (as for
serctl).  Small functions of a database URL, bound parameters only, each
bounded by :func:`sipexpress.db.engine.run` (``DbError`` subclasses)."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from datetime import date, datetime, time, timedelta
from typing import Any

from sqlalchemy import and_, func, or_, select
from sqlalchemy.ext.asyncio import AsyncConnection

from sipexpress.db import schema
from sipexpress.db.engine import run
from sipexpress.web.store import Page

acc = schema.acc
#: the call-history columns, in the order of the page and of the CSV export
CALL_COLUMNS = (
    "time",
    "sip_method",
    "sip_status",
    "from_uri",
    "to_uri",
    "username",
    "domain",
    "sip_callid",
    "fromtag",
    "totag",
    "i_uri",
    "o_uri",
)
STATUS_CLASSES = ("1", "2", "3", "4", "5", "6")
CSV_MAX_ROWS = 100_000


@dataclass(frozen=True, slots=True)
class CallFilter:
    """What the call-history form asks for; empty fields do not filter."""

    q: str = ""  # in the From/To URIs or the Call-ID, in either case
    user: str = ""  # the account (acc's username/domain: the caller), "user" or "user@domain"
    since: date | None = None
    until: date | None = None  # inclusive
    status: str = ""  # a class ("4": 4xx) or a code ("486")
    method: str = "INVITE"  # "" = every method acc wrote

    def where(self) -> Any:
        t = acc
        conds: list[Any] = []
        if self.q:
            pat = "%" + self.q.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_") + "%"
            conds.append(
                or_(*(c.ilike(pat, escape="\\") for c in (t.c.from_uri, t.c.to_uri, t.c.sip_callid)))
            )
        if self.user:
            name, _, dom = self.user.partition("@")
            conds.append(t.c.username == name)
            if dom:
                conds.append(t.c.domain == dom)
        if self.since is not None:
            conds.append(t.c.time >= datetime.combine(self.since, time()))
        if self.until is not None:
            conds.append(t.c.time < datetime.combine(self.until + timedelta(days=1), time()))
        if len(self.status) == 1:
            conds.append(t.c.sip_status.like(self.status + "%"))
        elif self.status:
            conds.append(t.c.sip_status == self.status)
        if self.method:
            conds.append(t.c.sip_method == self.method)
        return and_(*conds) if conds else None


def _select(f: CallFilter) -> Any:
    q = select(*(acc.c[n] for n in CALL_COLUMNS))
    cond = f.where()
    return q if cond is None else q.where(cond)


async def search_calls(url: str, f: CallFilter, page: int, size: int) -> Page:
    async def op(c: AsyncConnection) -> Page:
        cq = select(func.count()).select_from(acc)
        cond = f.where()
        if cond is not None:
            cq = cq.where(cond)
        total = (await c.execute(cq)).scalar_one()
        rows = await c.execute(_select(f).order_by(acc.c.time.desc()).limit(size).offset((page - 1) * size))
        return Page([dict(r._mapping) for r in rows], total, page, size)

    return await run(url, op, write=False)


async def export_calls(url: str, f: CallFilter) -> list[dict[str, Any]]:
    """Every matching row (at most :data:`CSV_MAX_ROWS`), newest first."""

    async def op(c: AsyncConnection) -> list[dict[str, Any]]:
        rows = await c.execute(_select(f).order_by(acc.c.time.desc()).limit(CSV_MAX_ROWS))
        return [dict(r._mapping) for r in rows]

    return await run(url, op, write=False, timeout=30.0)


def csv_cell(v: Any) -> str:
    """A value for the CSV export; a leading ``= + - @`` is quoted with
    ``'`` so that a spreadsheet does not run a From header as a formula."""
    s = v.strftime("%Y-%m-%d %H:%M:%S") if isinstance(v, datetime) else str(v if v is not None else "")
    return "'" + s if s[:1] in ("=", "+", "-", "@") else s


def csv_rows(rows: list[dict[str, Any]]) -> Iterator[list[str]]:
    yield list(CALL_COLUMNS)
    for r in rows:
        yield [csv_cell(r[n]) for n in CALL_COLUMNS]


# -- domains ------------------------------------------------------------------------
async def domains(url: str) -> list[dict[str, Any]]:
    d = schema.domain

    async def op(c: AsyncConnection) -> list[dict[str, Any]]:
        rows = await c.execute(select(d.c.domain, d.c.last_modified).order_by(d.c.domain))
        return [dict(r._mapping) for r in rows]

    return await run(url, op, write=False)


# -- groups -------------------------------------------------------------------------
async def group_names(url: str) -> list[tuple[str, int]]:
    """Every group in use and its number of members."""
    g = schema.grp

    async def op(c: AsyncConnection) -> list[tuple[str, int]]:
        rows = await c.execute(select(g.c.grp, func.count()).group_by(g.c.grp).order_by(g.c.grp))
        return [(str(r[0]), int(r[1])) for r in rows]

    return await run(url, op, write=False)


async def group_members(url: str, group: str, page: int, size: int) -> Page:
    """Memberships, of one group or (``group`` empty) of all."""
    g = schema.grp
    cond = g.c.grp == group if group else None

    async def op(c: AsyncConnection) -> Page:
        cq = select(func.count()).select_from(g)
        sq = select(g.c.grp, g.c.username, g.c.domain, g.c.last_modified)
        if cond is not None:
            cq, sq = cq.where(cond), sq.where(cond)
        total = (await c.execute(cq)).scalar_one()
        rows = await c.execute(
            sq.order_by(g.c.grp, g.c.username, g.c.domain).limit(size).offset((page - 1) * size)
        )
        return Page([dict(r._mapping) for r in rows], total, page, size)

    return await run(url, op, write=False)
