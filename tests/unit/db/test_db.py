"""The database layer against real SQLite, MariaDB and PostgreSQL."""

from __future__ import annotations

import asyncio
import socket
import time

import pytest
from sqlalchemy import insert, select, text

from sipexpress import db
from sipexpress.db import schema
from sipexpress.db.engine import DbTimeout, DbUnavailable, to_sqlalchemy_url


def test_url_mapping() -> None:
    assert to_sqlalchemy_url("sqlite:///ser.sqlite") == "sqlite+aiosqlite:///ser.sqlite"
    assert to_sqlalchemy_url("sqlite:////var/x.db") == "sqlite+aiosqlite:////var/x.db"
    assert (
        to_sqlalchemy_url("mysql://ser:heslo@localhost/ser")
        == "mysql+asyncmy://ser:heslo@localhost/ser?charset=utf8mb4"
    )
    assert to_sqlalchemy_url("postgres://u@h:5433/ser") == "postgresql+asyncpg://u@h:5433/ser"
    assert to_sqlalchemy_url("postgresql://u@h/ser") == "postgresql+asyncpg://u@h/ser"
    assert to_sqlalchemy_url("mysql+aiomysql://u@h/d") == "mysql+aiomysql://u@h/d"
    with pytest.raises(db.DbError):
        to_sqlalchemy_url("oracle://x/y")
    assert "heslo" not in db.redact("mysql://ser:heslo@localhost/ser")


def test_default_url(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("SIPEXPRESS_DB_URL", raising=False)
    assert db.default_db_url() == "sqlite:///ser.sqlite"
    assert db.default_db_url({"db_url": "mysql://a@b/c"}) == "mysql://a@b/c"
    monkeypatch.setenv("SIPEXPRESS_DB_URL", "postgres://p@q/r")
    assert db.default_db_url({}) == "postgres://p@q/r"
    assert db.resolve_db_url("sqlite:///m.db", {"db_url": "x://"}) == "sqlite:///m.db"
    assert db.resolve_db_url("", {"db_url": "sqlite:///g.db"}) == "sqlite:///g.db"


def test_ha1() -> None:
    # gen_ha1 jiri iptel.org heslo
    import hashlib

    assert db.calc_ha1("jiri", "iptel.org", "heslo") == hashlib.md5(b"jiri:iptel.org:heslo").hexdigest()
    assert (
        db.calc_ha1b("jiri", "iptel.org", "heslo")
        == hashlib.md5(b"jiri@iptel.org:iptel.org:heslo").hexdigest()
    )


async def test_create_and_versions(db_url: str) -> None:
    done = await db.create_all(db_url, admin_domain="iptel.org")
    assert "created table location" in done and "created table subscriber" in done
    assert "added subscriber admin@iptel.org" in done
    versions = await db.table_versions(db_url)
    assert versions == schema.SCHEMA_VERSIONS
    await db.check_versions(db_url, {"location": 7, "subscriber": 3, "grp": 2})
    with pytest.raises(db.SchemaVersionError, match="migrate"):
        await db.check_versions(db_url, {"location": schema.SCHEMA_VERSIONS["location"] + 1})
    admin = await db.get_user(db_url, "admin", "iptel.org")
    assert admin is not None and admin.password == "heslo"
    assert admin.ha1 == db.calc_ha1("admin", "iptel.org", "heslo")
    # idempotent
    assert await db.create_all(db_url, admin_domain="iptel.org") == []
    assert await db.migrate(db_url) == []

    # SER's defaults for partial inserts (sc, serweb) are in place
    async def partial(conn):  # type: ignore[no-untyped-def]
        await conn.execute(insert(schema.location).values(username="jiri", contact="sip:j@1.2.3.4"))
        return (await conn.execute(select(schema.location))).mappings().one()

    row = await db.run(db_url, partial)
    assert row["q"] == 1.0 and row["callid"] == "Default-Call-ID" and row["cseq"] == 42
    assert str(row["expires"]).startswith("2020-05-28 21:32:15")


async def test_check_without_tables(db_url: str) -> None:
    await db.create_database(db_url)
    with pytest.raises(db.SchemaVersionError, match="serctl db create"):
        await db.check_versions(db_url, {"location": 7})


async def test_migrate_from_ser09(db_url: str) -> None:
    """A database made by SER 0.9's ser_mysql.sh: location without the
    socket/path (and instance/reg_id) columns, version 6.  migrate adds
    them and raises it to 8."""
    await db.create_database(db_url)

    async def old(conn):  # type: ignore[no-untyped-def]
        await conn.execute(
            text("CREATE TABLE version (table_name varchar(64) NOT NULL, table_version smallint)")
        )
        await conn.execute(
            text(
                "CREATE TABLE location (username varchar(64) NOT NULL, domain varchar(128) NOT NULL,"
                " contact varchar(255) NOT NULL, received varchar(255), expires timestamp NOT NULL,"
                " q float NOT NULL, callid varchar(255) NOT NULL, cseq int NOT NULL,"
                " last_modified timestamp NOT NULL, replicate int NOT NULL, state smallint NOT NULL,"
                " flags int NOT NULL, user_agent varchar(50) NOT NULL,"
                " PRIMARY KEY (username, domain, contact))"
            )
        )
        await conn.execute(text("INSERT INTO version VALUES ('location', 6)"))
        await conn.execute(
            text(
                "INSERT INTO location VALUES ('jiri', '', 'sip:j@1.2.3.4', NULL, '2030-01-01 00:00:00', 1.0,"
                " 'cid', 1, '2020-01-01 00:00:00', 0, 0, 0, 'ua')"
            )
        )

    await db.run(db_url, old)
    with pytest.raises(db.SchemaVersionError, match="location' version 6"):
        await db.check_versions(db_url, {"location": 7})
    done = await db.migrate(db_url)
    assert "added column location.socket" in done
    assert "added column location.path" in done
    assert "added column location.instance" in done
    assert "added column location.reg_id" in done
    assert "version location 6 -> 8" in done
    assert "created table subscriber" in done
    await db.check_versions(db_url, {"location": 7, "subscriber": 5})
    assert await db.migrate(db_url) == []

    async def rows(conn):  # type: ignore[no-untyped-def]
        return (await conn.execute(select(schema.location.c.contact, schema.location.c.socket))).all()

    assert [tuple(r) for r in await db.run(db_url, rows)] == [("sip:j@1.2.3.4", None)]


async def test_users(db_url: str) -> None:
    await db.create_all(db_url)
    await db.add_user(db_url, "jiri", "iptel.org", "secret", "jiri@iptel.org")
    with pytest.raises(db.UserExists):
        await db.add_user(db_url, "jiri", "iptel.org", "x")
    u = await db.get_user(db_url, "jiri", "iptel.org")
    assert u is not None and u.email_address == "jiri@iptel.org"
    assert u.ha1 == db.calc_ha1("jiri", "iptel.org", "secret")
    assert u.ha1b == db.calc_ha1b("jiri", "iptel.org", "secret")
    await db.set_password(db_url, "jiri", "iptel.org", "new")
    u = await db.get_user(db_url, "jiri", "iptel.org")
    assert u is not None and u.password == "new" and u.ha1 == db.calc_ha1("jiri", "iptel.org", "new")
    with pytest.raises(db.UserNotFound):
        await db.set_password(db_url, "nobody", "iptel.org", "x")

    async def uri_rows(conn):  # type: ignore[no-untyped-def]
        return (await conn.execute(select(schema.uri.c.uri_user))).scalars().all()

    assert await db.run(db_url, uri_rows) == ["jiri"]
    assert [x.username for x in await db.list_users(db_url)] == ["jiri"]
    assert await db.remove_user(db_url, "jiri", "iptel.org") is True
    assert await db.remove_user(db_url, "jiri", "iptel.org") is False
    assert await db.get_user(db_url, "jiri", "iptel.org") is None
    assert await db.run(db_url, uri_rows) == []


async def test_remove_user_everywhere_in_one_transaction(db_url: str) -> None:
    """serctl rm and serweb's delete are one call: every per-user table,
    the aliases pointing to the user; another user and acc records stay."""
    await db.create_all(db_url)
    for name in ("jiri", "eva"):
        await db.add_user(db_url, name, "iptel.org", "pw")
        await db.grant(db_url, name, "iptel.org", ["local", "ld"])

    async def fill(conn):  # type: ignore[no-untyped-def]
        for name in ("jiri", "eva"):
            for t in db.USER_TABLES:
                if t is not schema.grp and t is not schema.uri:
                    await conn.execute(insert(t).values(username=name, domain="iptel.org"))
            await conn.execute(insert(schema.acc).values(username=name, domain="iptel.org"))
            await conn.execute(
                insert(schema.aliases).values(
                    username=f"{name}-alias", domain="iptel.org", contact=f"sip:{name}@iptel.org"
                )
            )
        # usrloc without use_domain stores the domain empty
        await conn.execute(insert(schema.location).values(username="jiri", domain="", contact="sip:j@h"))

    await db.run(db_url, fill)

    async def counts(conn):  # type: ignore[no-untyped-def]
        tables = (schema.subscriber, *db.USER_TABLES, schema.acc)
        n = {t.name: (await conn.execute(select(t.c.username))).scalars().all() for t in tables}
        n["aliases"] = (await conn.execute(select(schema.aliases.c.contact))).scalars().all()
        return n

    before = await db.run(db_url, counts)
    assert sorted(before["location"]) == ["eva", "jiri", "jiri"]
    assert await db.remove_user(db_url, "jiri", "iptel.org") is True
    after = await db.run(db_url, counts)
    for t in ("subscriber", *(t.name for t in db.USER_TABLES)):
        assert sorted(after[t]) == sorted(x for x in before[t] if x == "eva"), t
    assert after["aliases"] == ["sip:eva@iptel.org"]
    assert sorted(after["acc"]) == ["eva", "jiri"]


async def test_name_taken_by_subscriber_pending_or_reserved(db_url: str) -> None:
    """serctl alias add and serweb's sign-up and alias pages refuse the same names."""
    await db.create_all(db_url)
    await db.add_user(db_url, "jiri", "iptel.org", "pw")

    async def fill(conn):  # type: ignore[no-untyped-def]
        await conn.execute(insert(schema.pending).values(username="eva", domain="iptel.org"))
        await conn.execute(insert(schema.reserved).values(username="postmaster"))

    await db.run(db_url, fill)
    for name in ("jiri", "eva", "postmaster"):
        assert await db.name_taken(db_url, name, "iptel.org"), name
    assert not await db.name_taken(db_url, "jiri", "other.org")
    assert not await db.name_taken(db_url, "free", "iptel.org")


async def test_remove_user_is_all_or_nothing(db_url: str) -> None:
    await db.create_all(db_url)
    await db.add_user(db_url, "jiri", "iptel.org", "pw")
    await db.grant(db_url, "jiri", "iptel.org", ["local"])

    async def drop_silo(conn):  # type: ignore[no-untyped-def]
        await conn.execute(text("DROP TABLE silo"))

    await db.run(db_url, drop_silo)
    with pytest.raises(db.DbError):
        await db.remove_user(db_url, "jiri", "iptel.org")
    assert [r["grp"] for r in await db.group_rows(db_url, ("jiri", "iptel.org"))] == ["local"]
    assert await db.get_user(db_url, "jiri", "iptel.org") is not None


async def test_server_down_fails_fast() -> None:
    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    t0 = time.monotonic()
    with pytest.raises(DbUnavailable):
        await db.table_versions(f"mysql://root@127.0.0.1:{port}/ser", timeout=2.0)
    with pytest.raises(DbUnavailable):
        await db.table_versions(f"postgres://postgres@127.0.0.1:{port}/ser", timeout=2.0)
    assert time.monotonic() - t0 < 4.5
    await db.dispose_engines()


async def test_slow_server_times_out_and_loop_keeps_running() -> None:
    """A server that accepts and never answers: the call fails with a
    timeout; meanwhile the event loop keeps running other work."""
    conns: list[asyncio.StreamWriter] = []

    async def silent(_r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
        conns.append(w)

    srv = await asyncio.start_server(silent, "127.0.0.1", 0)
    port = srv.sockets[0].getsockname()[1]
    ticks = 0

    async def ticker() -> None:
        nonlocal ticks
        while True:
            await asyncio.sleep(0.05)
            ticks += 1

    tick_task = asyncio.create_task(ticker())
    try:
        for url in (f"mysql://root@127.0.0.1:{port}/ser", f"postgres://postgres@127.0.0.1:{port}/ser"):
            t0 = time.monotonic()
            with pytest.raises(DbUnavailable) as ei:
                await db.table_versions(url, timeout=1.0)
            elapsed = time.monotonic() - t0
            assert elapsed < 3.0, (url, elapsed)
            assert (
                isinstance(ei.value.__cause__, DbTimeout)
                or "did not answer" in str(ei.value)
                or elapsed >= 0.9
            )
        assert ticks >= 10  # the loop was never blocked
    finally:
        tick_task.cancel()
        for w in conns:
            w.close()
        srv.close()
        await db.dispose_engines()
