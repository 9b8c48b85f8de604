"""Where usrloc keeps bindings beyond memory: the :class:`LocationStore`
protocol and its SQL implementation (SQLite, MySQL/MariaDB, PostgreSQL).

The Redis store (:mod:`.redis_store`, a location shared by several
proxies) implements the same protocol; the in-memory tables, the timer and
the registrar do not care which one is behind.  Every method may raise
:class:`sipexpress.db.DbError` (down, slow: bounded by the timeout).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from datetime import UTC, datetime
from typing import Any, Protocol

from sqlalchemy import Table, and_, delete, func, select, update
from sqlalchemy.dialects import mysql, postgresql, sqlite
from sqlalchemy.ext.asyncio import AsyncConnection

from sipexpress.db import schema
from sipexpress.db.engine import DEFAULT_TIMEOUT, run
from sipexpress.modules.usrloc.records import FL_PERMANENT, CState, Ucontact


class LocationStore(Protocol):
    """Persistent bindings of one or more usrloc tables."""

    async def prepare(self, table: str) -> None:
        """Make sure ``table`` can be used (SQL: create a usrloc table a
        script names that the schema does not have)."""
        ...

    async def load(self, table: str, now: float) -> list[Ucontact]:
        """Every binding of ``table`` still valid at ``now``."""
        ...

    async def get(self, table: str, aor: str) -> list[Ucontact]:
        """The bindings of one AOR (any state; the caller filters)."""
        ...

    async def write(
        self, table: str, upserts: Sequence[Ucontact], deletes: Iterable[tuple[str, str]]
    ) -> None:
        """In one transaction: insert or update ``upserts`` and delete the
        ``(aor, contact URI)`` pairs in ``deletes``."""
        ...

    async def delete_aor(self, table: str, aor: str) -> None: ...

    async def delete_expired(self, table: str, now: float) -> int:
        """Remove bindings expired at ``now`` (not permanent); count."""
        ...

    async def count_aors(self, table: str) -> int: ...

    async def close(self) -> None:
        """Release connections (shutdown)."""
        ...


def is_redis_url(url: str) -> bool:
    """``redis://``, ``rediss://`` (TLS) or ``unix://`` (a Redis socket):
    the location lives in Redis (:mod:`.redis_store`), not in SQL."""
    return url.partition("://")[0].lower() in ("redis", "rediss", "unix")


def epoch_to_dt(t: float) -> datetime:
    """Stored as naive UTC datetimes."""
    return datetime.fromtimestamp(int(t), UTC).replace(tzinfo=None)


def dt_to_epoch(d: datetime) -> int:
    return int(d.replace(tzinfo=UTC).timestamp())


# our column name -> usrloc parameter that renames it (SER's *_column)
COLUMN_PARAMS = {
    "username": "user_column",
    "domain": "domain_column",
    "contact": "contact_column",
    "expires": "expires_column",
    "q": "q_column",
    "callid": "callid_column",
    "cseq": "cseq_column",
    "replicate": "replicate_column",
    "state": "state_column",
    "flags": "flags_column",
    "user_agent": "user_agent_column",
    "received": "received_column",
}


class SqlLocationStore:
    """usrloc tables in SQL, one row per binding (SER's ``location``)."""

    def __init__(
        self,
        url: str,
        use_domain: bool = False,
        timeout: float = DEFAULT_TIMEOUT,
        columns: dict[str, str] | None = None,
    ) -> None:
        self.url = url
        self.use_domain = use_domain
        self.timeout = timeout
        self.columns = columns or {}
        self._tables: dict[str, Table] = {}

    def table(self, name: str) -> Table:
        t = self._tables.get(name)
        if t is None:
            t = self._tables[name] = schema.usrloc_table(name, self.columns)
        return t

    # -- AOR <-> (username, domain) ----------------------------------------
    def split(self, aor: str) -> tuple[str, str]:
        if self.use_domain:
            user, _, dom = aor.partition("@")
            return user, dom
        return aor, ""

    def join(self, user: str, dom: str | None) -> str:
        return f"{user}@{dom}" if self.use_domain and dom else user

    def _row(self, c: Ucontact) -> dict[str, Any]:
        user, dom = self.split(c.aor)
        return {
            "username": user,
            "domain": dom,
            "contact": c.uri,
            "received": c.received,
            "expires": epoch_to_dt(c.expires),
            "q": c.q / 1000.0,
            "callid": c.callid[:255],
            "cseq": c.cseq,
            "last_modified": datetime.now(UTC).replace(tzinfo=None, microsecond=0),
            "replicate": c.replicate,
            "state": int(CState.CS_SYNC),
            "flags": c.flags,
            "user_agent": c.user_agent[:50],
            "socket": c.socket,
            "path": c.path,
        }

    def _contact(self, t: Table, r: Any) -> Ucontact:
        m = r._mapping
        q = m[self._col(t, "q")]
        qi = round(float(q) * 1000) if q is not None else -1
        return Ucontact(
            aor=self.join(m[self._col(t, "username")], m[self._col(t, "domain")]),
            uri=m[self._col(t, "contact")],
            expires=dt_to_epoch(m[self._col(t, "expires")]),
            q=qi if qi >= 0 else -1,
            callid=m[self._col(t, "callid")] or "",
            cseq=int(m[self._col(t, "cseq")] or 0),
            flags=int(m[self._col(t, "flags")] or 0),
            replicate=int(m[self._col(t, "replicate")] or 0),
            user_agent=m[self._col(t, "user_agent")] or "",
            received=m[self._col(t, "received")] or None,
            socket=m[self._col(t, "socket")],
            path=m[self._col(t, "path")],
            state=CState.CS_SYNC,
        )

    def _col(self, t: Table, ours: str) -> str:
        return self.columns.get(ours, ours)

    def _c(self, t: Table, ours: str) -> Any:
        return t.c[self._col(t, ours)]

    def _where_aor(self, t: Table, aor: str) -> Any:
        user, dom = self.split(aor)
        cond = self._c(t, "username") == user
        if self.use_domain:
            cond = and_(cond, self._c(t, "domain") == dom)
        return cond

    # -- LocationStore ------------------------------------------------------
    async def prepare(self, table: str) -> None:
        t = self.table(table)

        async def op(conn: AsyncConnection) -> None:
            await conn.run_sync(lambda c: t.create(c, checkfirst=True))

        await run(self.url, op, max(self.timeout, 10.0))

    async def load(self, table: str, now: float) -> list[Ucontact]:
        t = self.table(table)
        cond = (self._c(t, "expires") > epoch_to_dt(now)) | (self._c(t, "flags").op("&")(FL_PERMANENT) != 0)

        async def op(conn: AsyncConnection) -> list[Ucontact]:
            rows = await conn.execute(select(t).where(cond))
            return [self._contact(t, r) for r in rows]

        return await run(self.url, op, max(self.timeout, 30.0), write=False)

    async def get(self, table: str, aor: str) -> list[Ucontact]:
        t = self.table(table)

        async def op(conn: AsyncConnection) -> list[Ucontact]:
            rows = await conn.execute(select(t).where(self._where_aor(t, aor)))
            return [self._contact(t, r) for r in rows]

        return await run(self.url, op, self.timeout, write=False, single=True)

    def _mapped(self, row: dict[str, Any]) -> dict[str, Any]:
        if not self.columns:
            return row
        return {self.columns.get(k, k): v for k, v in row.items()}

    async def write(
        self, table: str, upserts: Sequence[Ucontact], deletes: Iterable[tuple[str, str]]
    ) -> None:
        t = self.table(table)
        dels = list(deletes)
        rows = [self._mapped(self._row(c)) for c in upserts]

        async def op(conn: AsyncConnection) -> None:
            for aor, uri in dels:
                await conn.execute(delete(t).where(self._where_aor(t, aor), self._c(t, "contact") == uri))
            if rows:
                await self._upsert(conn, t, rows)

        await run(self.url, op, self.timeout if len(rows) < 100 else max(self.timeout, 30.0))

    async def _upsert(self, conn: AsyncConnection, t: Table, rows: list[dict[str, Any]]) -> None:
        dialect = conn.dialect.name
        pk = {self._col(t, "username"), self._col(t, "domain"), self._col(t, "contact")}
        upd = [k for k in rows[0] if k not in pk]
        if dialect == "sqlite":
            sq = sqlite.insert(t)
            await conn.execute(
                sq.on_conflict_do_update(index_elements=list(pk), set_={k: sq.excluded[k] for k in upd}), rows
            )
        elif dialect == "postgresql":
            pq = postgresql.insert(t)
            await conn.execute(
                pq.on_conflict_do_update(index_elements=list(pk), set_={k: pq.excluded[k] for k in upd}), rows
            )
        elif dialect in ("mysql", "mariadb"):
            mq = mysql.insert(t)
            await conn.execute(mq.on_duplicate_key_update({k: mq.inserted[k] for k in upd}), rows)
        else:  # generic: update, then insert what was not there
            for r in rows:
                res = await conn.execute(
                    update(t).where(*(t.c[k] == r[k] for k in pk)).values({k: r[k] for k in upd})
                )
                if not res.rowcount:
                    await conn.execute(t.insert().values(r))

    async def delete_aor(self, table: str, aor: str) -> None:
        t = self.table(table)

        async def op(conn: AsyncConnection) -> None:
            await conn.execute(delete(t).where(self._where_aor(t, aor)))

        await run(self.url, op, self.timeout)

    async def delete_expired(self, table: str, now: float) -> int:
        t = self.table(table)

        async def op(conn: AsyncConnection) -> int:
            r = await conn.execute(
                delete(t).where(
                    self._c(t, "expires") <= epoch_to_dt(now),
                    self._c(t, "flags").op("&")(FL_PERMANENT) == 0,
                )
            )
            return int(r.rowcount or 0)

        return await run(self.url, op, self.timeout)

    async def count_aors(self, table: str) -> int:
        t = self.table(table)
        cols = [self._c(t, "username")] + ([self._c(t, "domain")] if self.use_domain else [])

        async def op(conn: AsyncConnection) -> int:
            sub = select(*cols).distinct().subquery()
            return int((await conn.execute(select(func.count()).select_from(sub))).scalar_one())

        return await run(self.url, op, self.timeout, write=False)

    async def close(self) -> None:
        """Nothing: the engines are shared (``dispose_engines``)."""
