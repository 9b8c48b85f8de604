"""Create, upgrade and check the database (``serctl db create|migrate``).

The ``version`` table (``table_name``, ``table_version``) records which
version of each table exists, as SER's modules expected; every module that
uses a table checks it at start-up (:func:`check_versions`) and refuses to
run against an older one with a message naming ``serctl db migrate``.

:func:`migrate` upgrades any database made by this code or by SER 0.9's
``ser_mysql.sh``: it creates missing tables, adds missing columns (all
additions are nullable or have defaults) and raises the version rows.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import AsyncIterator, Iterable
from typing import Any

from sqlalchemy import Column, Table, insert, inspect, select, text, update
from sqlalchemy.engine import Connection
from sqlalchemy.ext.asyncio import AsyncConnection, create_async_engine
from sqlalchemy.schema import CreateColumn

from sipexpress.db import schema
from sipexpress.db.engine import (
    DEFAULT_TIMEOUT,
    SchemaVersionError,
    quote_ident,
    run,
    server_url,
    to_sqlalchemy_url,
)
from sipexpress.db.provisioning import add_subscriber_in, now, subscriber_exists_in, subscriber_row

MIGRATE_TIMEOUT = 60.0


@contextlib.asynccontextmanager
async def _on_server(url: str) -> AsyncIterator[tuple[AsyncConnection, str]]:
    """An autocommit connection to the server holding ``url``'s database
    (MySQL/PostgreSQL), and that database's name, quoted-safe."""
    admin, name = server_url(url)
    eng = create_async_engine(admin, isolation_level="AUTOCOMMIT")
    try:
        async with eng.connect() as conn:
            yield conn, quote_ident(name)
    finally:
        await eng.dispose()


async def create_database(url: str) -> bool:
    """Create the database itself on a MySQL/PostgreSQL server when it does
    not exist (SQLite files appear on first use).  True if created."""
    sa = to_sqlalchemy_url(url)
    if sa.startswith("sqlite"):
        return False
    async with _on_server(url) as (conn, name):
        if sa.startswith("postgresql"):
            found = (
                await conn.execute(text("SELECT 1 FROM pg_database WHERE datname = :n"), {"n": name})
            ).first()
            if found:
                return False
            await conn.execute(text(f'CREATE DATABASE "{name}"'))
            return True
        found = (
            await conn.execute(
                text("SELECT 1 FROM information_schema.schemata WHERE schema_name = :n"), {"n": name}
            )
        ).first()
        if found:
            return False
        await conn.execute(text(f"CREATE DATABASE `{name}` CHARACTER SET utf8mb4"))
        return True


async def drop_database(url: str) -> None:
    """Drop the database (MySQL/PostgreSQL) or delete the SQLite file."""
    sa = to_sqlalchemy_url(url)
    if sa.startswith("sqlite"):
        path = sa.split(":///", 1)[1] if ":///" in sa else ""
        for suffix in ("", "-wal", "-shm"):
            if path and os.path.exists(path + suffix):
                os.unlink(path + suffix)
        return
    async with _on_server(url) as (conn, name):
        if sa.startswith("postgresql"):
            await conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        else:
            await conn.execute(text(f"DROP DATABASE IF EXISTS `{name}`"))


async def create_all(url: str, admin_domain: str | None = None, create_db: bool = True) -> list[str]:
    """Create every table and the version rows (``serctl db create``).
    Existing tables are left alone (use :func:`migrate` to upgrade them).
    With ``admin_domain``, add SER's initial subscriber ``admin``/``heslo``
    with its two ``admin_privileges`` rows, as ``ser_mysql.sh create`` did.
    Returns what was done, one line per action."""
    done: list[str] = []
    if create_db and await create_database(url):
        done.append("created database")

    async def op(conn: AsyncConnection) -> None:
        existing = set(await conn.run_sync(lambda c: inspect(c).get_table_names()))
        await conn.run_sync(lambda c: schema.metadata.create_all(c, checkfirst=True))
        for t in schema.metadata.sorted_tables:
            if t.name not in existing:
                done.append(f"created table {t.name}")
        have = {r[0] for r in await conn.execute(select(schema.version.c.table_name))}
        rows = [
            {"table_name": n, "table_version": v} for n, v in schema.SCHEMA_VERSIONS.items() if n not in have
        ]
        if rows:
            await conn.execute(insert(schema.version), rows)
        if admin_domain and not await subscriber_exists_in(conn, "admin", admin_domain):
            row = subscriber_row("admin", admin_domain, "heslo", "", now())
            await add_subscriber_in(conn, row, uri_entry=False)
            for priv in ("is_admin", "change_privileges"):
                await conn.execute(
                    insert(schema.admin_privileges).values(
                        username="admin", domain=admin_domain, priv_name=priv, priv_value="1"
                    )
                )
            done.append(f"added subscriber admin@{admin_domain}")

    await run(url, op, MIGRATE_TIMEOUT)
    return done


def _add_column_sql(conn: Connection, table: Table, col: Column[Any]) -> str:
    ddl = CreateColumn(col).compile(dialect=conn.dialect)
    return f"ALTER TABLE {conn.dialect.identifier_preparer.format_table(table)} ADD COLUMN {ddl}"


async def migrate(url: str, create_db: bool = True) -> list[str]:
    """Bring the database up to this code's schema (``serctl db migrate``):
    create missing tables, add missing columns, update the version rows.
    Idempotent.  Returns what was done, one line per action."""
    done: list[str] = []
    if create_db and await create_database(url):
        done.append("created database")

    def sync(conn: Connection) -> None:
        insp = inspect(conn)
        existing = set(insp.get_table_names())
        if "version" in existing:
            vcols = {c["name"].lower() for c in insp.get_columns("version")}
            if "table_version" not in vcols and "version" in vcols:
                # 2003 schema: version(table_name, version)
                conn.execute(text("ALTER TABLE version RENAME COLUMN version TO table_version"))
                done.append("renamed version.version to version.table_version")
        for t in schema.metadata.sorted_tables:
            if t.name not in existing:
                t.create(conn)
                done.append(f"created table {t.name}")
                continue
            have = {c["name"].lower() for c in insp.get_columns(t.name)}
            for col in t.columns:
                if col.name.lower() not in have:
                    conn.execute(text(_add_column_sql(conn, t, col)))
                    done.append(f"added column {t.name}.{col.name}")
        vt = schema.version
        current = {r[0]: r[1] for r in conn.execute(select(vt.c.table_name, vt.c.table_version))}
        for name, ver in schema.SCHEMA_VERSIONS.items():
            if name not in current:
                conn.execute(insert(vt).values(table_name=name, table_version=ver))
                done.append(f"version {name} = {ver}")
            elif current[name] is None or current[name] < ver:
                conn.execute(update(vt).where(vt.c.table_name == name).values(table_version=ver))
                done.append(f"version {name} {current[name]} -> {ver}")

    async def op(conn: AsyncConnection) -> None:
        await conn.run_sync(sync)

    await run(url, op, MIGRATE_TIMEOUT)
    return done


async def table_versions(url: str, timeout: float = DEFAULT_TIMEOUT) -> dict[str, int]:
    """``table_name -> table_version`` as recorded in the database."""

    async def op(conn: AsyncConnection) -> dict[str, int] | None:
        if not await conn.run_sync(lambda c: inspect(c).has_table("version")):
            return None
        vt = schema.version
        rows = await conn.execute(select(vt.c.table_name, vt.c.table_version))
        return {str(r[0]): int(r[1]) for r in rows}

    found = await run(url, op, timeout, write=False)
    if found is None:
        raise SchemaVersionError("no version table in the database — run 'serctl db create'")
    return found


async def check_versions(url: str, required: dict[str, int], timeout: float = DEFAULT_TIMEOUT) -> None:
    """Raise :class:`SchemaVersionError` unless every table in ``required``
    has at least that version (SER's start-up check)."""
    have = await table_versions(url, timeout)
    problems = [
        f"table '{t}' version {have.get(t, 'missing')} < required {v}"
        for t, v in required.items()
        if have.get(t, -1) < v
    ]
    if problems:
        raise SchemaVersionError("; ".join(problems) + " — run 'serctl db migrate'")


async def drop_tables(url: str, names: Iterable[str] | None = None) -> None:
    """Drop our tables (tests, ``serctl db drop``)."""

    async def op(conn: AsyncConnection) -> None:
        def sync(c: Connection) -> None:
            tables = [t for t in schema.metadata.sorted_tables if names is None or t.name in set(names)]
            schema.metadata.drop_all(c, tables=tables, checkfirst=True)

        await conn.run_sync(sync)

    await run(url, op, MIGRATE_TIMEOUT)


__all__ = [
    "check_versions",
    "create_all",
    "create_database",
    "drop_database",
    "drop_tables",
    "migrate",
    "table_versions",
]
