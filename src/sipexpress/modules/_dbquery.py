"""Read-only lookups shared by auth_db, uri_db, group and domain.

Each of those modules names a table and its columns through parameters
(SER's ``user_column`` …), so statements are built from lightweight
``table()``/``column()`` constructs: identifiers are quoted by the dialect,
values are always bound parameters — nothing user-supplied is ever pasted
into SQL text.  Column and table names are matched case-insensitively
(SER's ``sc`` wrote ``HA1`` for the ``ha1`` column), so they are lower-cased.

Every query runs through :func:`sipexpress.db.engine.run` with the module's
``db_timeout`` (milliseconds): a slow or unreachable database makes that one
call fail (:class:`~sipexpress.db.engine.DbError`) while the event loop keeps
serving other messages.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

from sqlalchemy import ColumnElement, Select, TableClause, column, select, table
from sqlalchemy.ext.asyncio import AsyncConnection

from sipexpress.core.registry import ConfigError, Module, Param
from sipexpress.db.engine import DEFAULT_TIMEOUT, DbError, SchemaVersionError, resolve_db_url, run
from sipexpress.db.manage import table_versions

log = logging.getLogger("sipexpress.db")

DB_PARAMS = (
    Param("db_url", str, "", "database URL; empty = the global db_url"),
    Param("db_timeout", int, int(DEFAULT_TIMEOUT * 1000), "milliseconds one query may take"),
)


def ident(name: str) -> str:
    name = name.strip().lower()
    if not name or any(c in name for c in "\x00\"'`;"):
        raise ConfigError(f"invalid table or column name {name!r}")
    return name


def make_table(name: str, *cols: str) -> TableClause:
    seen: list[str] = []
    for c in cols:
        if c and c not in seen:
            seen.append(c)
    return table(ident(name), *(column(ident(c)) for c in seen))


def where_all(t: TableClause, pairs: Sequence[tuple[str, Any]]) -> list[ColumnElement[bool]]:
    return [t.c[ident(c)] == v for c, v in pairs]


def _missing_table(msg: str) -> bool:
    return "no such table" in msg or "doesn't exist" in msg or "does not exist" in msg


class DbLookup:
    """The database side of one module: URL, timeout, version check."""

    __slots__ = ("module", "timeout", "url")

    def __init__(self, module: Module) -> None:
        self.module = module
        self.url = ""
        self.timeout = DEFAULT_TIMEOUT

    def configure(self) -> None:
        m = self.module
        self.url = resolve_db_url(str(m.values.get("db_url") or ""), m.core.options)
        ms = int(m.values.get("db_timeout") or 0)
        if ms <= 0:
            raise ConfigError(f"{m.name}: db_timeout must be positive (milliseconds)")
        self.timeout = ms / 1000.0

    async def check_versions(self, required: dict[str, int]) -> None:
        """SER's start-up version check.  A table too old or missing is a
        configuration error; an unreachable database is only logged (each
        lookup then fails on its own until it comes back)."""
        try:
            have = await table_versions(self.url, self.timeout)
        except SchemaVersionError as e:
            cause = e.__cause__
            if isinstance(cause, DbError) and not _missing_table(str(cause)):
                log.error("%s: database not available at start: %s", self.module.name, cause)
                return
            raise ConfigError(f"{self.module.name}: {e}") from None
        except DbError as e:
            log.error("%s: database not available at start: %s", self.module.name, e)
            return
        problems = [
            f"table '{t}' version {have.get(t, 'missing')} < required {v}"
            for t, v in required.items()
            if have.get(t, -1) < v
        ]
        if problems:
            raise ConfigError(f"{self.module.name}: " + "; ".join(problems) + " — run 'serctl db migrate'")

    async def rows(self, stmt: Select[Any], params: dict[str, Any] | None = None) -> list[tuple[Any, ...]]:
        """Run a SELECT; raises DbError (DbTimeout/DbUnavailable)."""

        async def op(conn: AsyncConnection) -> list[tuple[Any, ...]]:
            result = await conn.execute(stmt, params)
            return [tuple(r) for r in result.fetchall()]

        return await run(self.url, op, self.timeout, write=False)

    async def exists(self, t: TableClause, pairs: Sequence[tuple[str, Any]]) -> bool:
        first = t.c[ident(pairs[0][0])]
        return bool(await self.rows(select(first).where(*where_all(t, pairs)).limit(1)))
