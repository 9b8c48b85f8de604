"""usrloc db_mode 1/2/3 against real SQLite, MariaDB and PostgreSQL (and
Redis where the test reads the store through the store's own API); a
database that goes down or hangs never stalls SIP processing."""

from __future__ import annotations

import asyncio
import socket
import time

import pytest
from sqlalchemy import select, text

from sipexpress import db
from sipexpress.db import schema
from sipexpress.db.engine import DbError
from sipexpress.modules.usrloc import WRITE_THROUGH, SqlLocationStore, Ucontact, Udomain
from sipexpress.modules.usrloc.redis_store import RedisLocationStore
from sipexpress.modules.usrloc.store import is_redis_url
from tests.support import wait_for_async
from tests.unit.db.dbfixtures import cleanup, new_db_url
from tests.unit.usrloc.harness import Harness, _Client


async def _rows(url: str) -> list[tuple[str, str]]:
    """(user, contact) of the stored bindings, sorted by contact."""
    if is_redis_url(url):
        store = RedisLocationStore(url)
        try:
            return sorted(((c.aor, c.uri) for c in await store.load("location", 0)), key=lambda r: r[1])
        finally:
            await store.close()

    async def op(conn):  # type: ignore[no-untyped-def]
        loc = schema.location
        return [
            tuple(r)
            for r in await conn.execute(select(loc.c.username, loc.c.contact).order_by(loc.c.contact))
        ]

    return await db.run(url, op, write=False)


def _dead_url() -> str:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    return f"mysql://root@127.0.0.1:{port}/gone"


async def test_write_through_and_restart(db_url: str) -> None:
    await db.create_all(db_url)
    h = Harness()
    await h.start(ul={"db_mode": 1, "db_url": db_url})
    try:
        r = await h.send(h.register("jiri", ["<sip:j1@10.0.0.1>;q=0.5", "<sip:j2@10.0.0.2>"], 600))
        assert r.status == 200
        assert await _rows(db_url) == [("jiri", "sip:j1@10.0.0.1"), ("jiri", "sip:j2@10.0.0.2")]
        await h.ul.ul_add(["location", "perm", "sip:p@10.0.0.3", "0", "1.00", "0", "128"])
        r = await h.send(h.register("jiri", ["<sip:j1@10.0.0.1>;expires=0"], None, None, 2))
        assert await _rows(db_url) == [("jiri", "sip:j2@10.0.0.2"), ("perm", "sip:p@10.0.0.3")]
    finally:
        await h.stop()

    # an expired row in the database must not come back
    async def add_expired(conn):  # type: ignore[no-untyped-def]
        await conn.execute(
            schema.location.insert().values(
                username="old", domain="", contact="sip:old@1.1.1.1", expires=text("'2001-01-01 00:00:00'")
            )
        )

    await db.run(db_url, add_expired)
    h2 = Harness()
    await h2.start(ul={"db_mode": 1, "db_url": db_url})
    try:
        loc = h2.ul.domain("location")
        assert loc is not None
        rec = loc.get("jiri")
        assert rec is not None and [c.uri for c in rec.contacts] == ["sip:j2@10.0.0.2"]
        c = rec.contacts[0]
        assert 590 <= c.remaining(time.time()) <= 600 and c.q == -1 and c.user_agent == "Unknown"
        assert c.socket == f"udp:127.0.0.1:{h2.port}".replace(str(h2.port), str(h.port))
        assert loc.get("perm") is not None and loc.get("old") is None
        r = await h2.send(h2.invite("jiri"))
        assert r.status == 302 and h2.lookups[-1][1] == "sip:j2@10.0.0.2"
        await h2.ul.run_timer()  # removes the expired row from the DB too
        assert ("old", "sip:old@1.1.1.1") not in await _rows(db_url)
        await h2.ul.ul_rm(["location", "jiri"])
        assert await _rows(db_url) == [("perm", "sip:p@10.0.0.3")]
    finally:
        await h2.stop()


async def test_write_back(location_url: str) -> None:
    h = Harness()
    await h.start(ul={"db_mode": 2, "db_url": location_url, "timer_interval": 3600})
    try:
        await h.send(h.register("wb", ["<sip:wb@10.0.0.1>"], 600))
        assert await _rows(location_url) == []  # not yet
        await h.ul.ul_flush([])
        assert await _rows(location_url) == [("wb", "sip:wb@10.0.0.1")]
        await h.send(h.register("wb", ["<sip:wb@10.0.0.1>;expires=0", "<sip:wb2@10.0.0.2>"], 600, None, 2))
        assert await _rows(location_url) == [("wb", "sip:wb@10.0.0.1")]
        await h.ul.run_timer()
        assert await _rows(location_url) == [("wb", "sip:wb2@10.0.0.2")]
        await h.send(h.register("wb3", ["<sip:wb3@10.0.0.3>"], 600))
    finally:
        await h.stop()  # a clean stop flushes
    assert ("wb3", "sip:wb3@10.0.0.3") in await _rows(location_url)


async def test_db_only(location_url: str) -> None:
    h = Harness()
    await h.start(ul={"db_mode": 3, "db_url": location_url})
    try:
        await h.send(h.register("d3", ["<sip:a@10.0.0.1>;q=0.2", "<sip:b@10.0.0.2>;q=0.9"], 600))
        assert await _rows(location_url) == [("d3", "sip:a@10.0.0.1"), ("d3", "sip:b@10.0.0.2")]
        assert h.ul.domain("location").records == {}  # type: ignore[union-attr]
        r = await h.send(h.invite("d3"))
        assert r.status == 302
        assert h.lookups[-1][1:] == ("sip:b@10.0.0.2", None, [("sip:a@10.0.0.1", 200, None)])
        rep = await h.ul.ul_show_contact(["location", "d3"])
        assert rep.text.startswith("<sip:b@10.0.0.2>;q=0.9;expires=")
        r = await h.send(h.register("d3", ["*"], 0, None, 5))
        assert r.status == 200 and r.header("contact") is None
        assert await _rows(location_url) == []
    finally:
        await h.stop()


async def test_start_refuses_old_schema(tmp_path) -> None:  # type: ignore[no-untyped-def]
    url = f"sqlite:///{tmp_path / 'empty.sqlite'}"
    h = Harness()
    with pytest.raises(Exception, match="serctl db create"):
        await h.start(ul={"db_mode": 1, "db_url": url})
    await h.stop()
    await db.dispose_engines()


async def test_database_outage_does_not_stall(tmp_path) -> None:  # type: ignore[no-untyped-def]
    url = f"sqlite:///{tmp_path / 'loc.sqlite'}"
    await db.create_all(url)
    h = Harness()
    await h.start(ul={"db_mode": 1, "db_url": url, "db_timeout": 1})
    store = h.ul.store
    assert isinstance(store, SqlLocationStore)
    conns: list[asyncio.StreamWriter] = []

    async def silent(_r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
        conns.append(w)

    srv = await asyncio.start_server(silent, "127.0.0.1", 0)
    hung = f"mysql://root@127.0.0.1:{srv.sockets[0].getsockname()[1]}/ser"
    try:
        await h.send(h.register("mem", ["<sip:m@10.0.0.1>"], 600))
        # the database hangs: a write-through REGISTER is not acknowledged
        # (500 after db_timeout, nothing stored anywhere), lookups of others
        # go on meanwhile
        store.url = hung
        t0 = time.monotonic()
        reg_task = asyncio.create_task(h.send(h.register("slow", ["<sip:s@10.0.0.2>"], 600), timeout=5))
        assert await wait_for_async(lambda: bool(conns))  # the write hangs on the database
        # meanwhile a lookup (from another client socket) is answered at once
        other = _Client()
        tr, _ = await asyncio.get_running_loop().create_datagram_endpoint(
            lambda: other, local_addr=("127.0.0.1", 0)
        )
        tr.sendto(h.invite("mem").encode(), ("127.0.0.1", h.port))
        first = await asyncio.wait_for(other.queue.get(), 0.8)
        tr.close()
        assert first.startswith(b"SIP/2.0 302")
        assert not reg_task.done()
        assert time.monotonic() - t0 < 0.9
        r = await reg_task
        assert r.status == 500 and r.header("p-registrar-error") == "usrloc_contact_insert failed"
        assert time.monotonic() - t0 < 3.0
        assert h.ul.domain("location").get("slow") is None  # type: ignore[union-attr]
        # the database is back: the UA's next attempt is stored, then acknowledged
        store.url = url
        assert (await h.send(h.register("slow", ["<sip:s@10.0.0.2>"], 600))).status == 200
        assert ("slow", "sip:s@10.0.0.2") in await _rows(url)

        # db_mode 3 against a dead database: clear errors, fast
        h.ul.domain("location").db_mode = 3  # type: ignore[union-attr]
        store.url = _dead_url()
        t0 = time.monotonic()
        r = await h.send(h.register("x", ["<sip:x@10.0.0.9>"], 600))
        assert r.status == 500 and r.header("p-registrar-error") == "usrloc_record_get failed"
        r = await h.send(h.invite("mem"))
        assert r.reason == "Not Found -2"
        assert time.monotonic() - t0 < 3.0
    finally:
        for w in conns:
            w.close()
        srv.close()
        await h.stop()
        await db.dispose_engines()


async def test_too_long_for_the_table_is_refused(tmp_path) -> None:  # type: ignore[no-untyped-def]
    url = f"sqlite:///{tmp_path / 'len.sqlite'}"
    await db.create_all(url)
    h = Harness()
    await h.start(ul={"db_mode": 1, "db_url": url})
    try:
        r = await h.send(h.register("long", ["<sip:" + "x" * 260 + "@10.0.0.1>"], 600))
        assert r.status == 400 and r.header("p-registrar-error") == "Contact parse error"
        r = await h.send(h.register("u" * 70, ["<sip:a@10.0.0.1>"], 600))
        assert r.status == 500 and r.header("p-registrar-error") == "Address Of Record too long"
        assert await _rows(url) == []
    finally:
        await h.stop()
        await db.dispose_engines()


async def test_refused_row_does_not_block_flush(db_url: str) -> None:
    await db.create_all(db_url)
    h = Harness()
    await h.start(ul={"db_mode": 2, "db_url": db_url, "timer_interval": 3600})
    try:
        long_uri = "sip:" + "y" * 300 + "@10.0.0.1"
        assert (await h.ul.ul_add(["location", "bad", long_uri, "600", "1"])).code == 200
        assert (await h.ul.ul_add(["location", "good", "sip:g@10.0.0.2", "600", "1"])).code == 200
        await h.ul.ul_flush([])
        rows = await _rows(db_url)
        assert ("good", "sip:g@10.0.0.2") in rows
        if not db_url.startswith("sqlite"):  # SQLite does not enforce varchar sizes
            assert [r for r in rows if r[0] == "bad"] == []
        assert h.ul.domain("location").dirty == {}  # type: ignore[union-attr]
    finally:
        await h.stop()


async def test_database_down_at_start(tmp_path) -> None:  # type: ignore[no-untyped-def]
    """usrloc starts without its database and loads the stored bindings once
    the database answers; until then write-through REGISTERs get 500."""
    url = f"sqlite:///{tmp_path / 'later.sqlite'}"
    await db.create_all(url)

    async def pre(conn):  # type: ignore[no-untyped-def]
        await conn.execute(
            schema.location.insert().values(
                username="pre", domain="", contact="sip:pre@10.0.0.5", expires=text("'2099-01-01 00:00:00'")
            )
        )

    await db.run(url, pre)
    h = Harness()
    await h.start(ul={"db_mode": 1, "db_url": _dead_url(), "db_timeout": 1})
    try:
        r = await h.send(h.register("live", ["<sip:live@10.0.0.6>"], 600))
        assert r.status == 500
        assert (await h.send(h.invite("pre"))).reason == "Not Found -3"
        store = h.ul.store
        assert isinstance(store, SqlLocationStore)
        store.url = url  # the database is back
        await h.ul.run_timer()
        assert (await h.send(h.invite("pre"))).status == 302
        assert (await h.send(h.register("live", ["<sip:live@10.0.0.6>"], 600))).status == 200
        assert ("live", "sip:live@10.0.0.6") in await _rows(url)
    finally:
        await h.stop()
        await db.dispose_engines()


async def test_requests_before_startup_wait_for_the_load(tmp_path) -> None:  # type: ignore[no-untyped-def]
    """The core may route requests while modules are still starting: a
    lookup issued then waits for the stored bindings instead of missing."""
    url = f"sqlite:///{tmp_path / 'early.sqlite'}"
    await db.create_all(url)

    async def pre(conn):  # type: ignore[no-untyped-def]
        await conn.execute(
            schema.location.insert().values(
                username="early", domain="", contact="sip:e@10.0.0.8", expires=text("'2099-01-01 00:00:00'")
            )
        )

    await db.run(url, pre)
    h = Harness()
    h.core.set_modparam("usrloc", "db_mode", 2)
    h.core.set_modparam("usrloc", "db_url", url)
    loc = h.table("location")
    early = asyncio.create_task(loc.fetch("early"))
    await asyncio.sleep(0.05)  # it must not finish before start: a window, not a wait
    assert not early.done()
    await h.ul.start()
    rec = await asyncio.wait_for(early, 5)
    assert rec is not None and rec.contacts[0].uri == "sip:e@10.0.0.8"
    await h.ul.stop()
    await db.dispose_engines()


async def test_any_table_name_persists(location_url: str) -> None:
    """A usrloc table the schema does not know (save("office")) is created."""
    for round_ in (1, 2):
        h = Harness()
        h.core.set_modparam("usrloc", "db_mode", 1)
        h.core.set_modparam("usrloc", "db_url", location_url)
        h.table("office")
        await h.start()
        try:
            if round_ == 1:
                rep = await h.ul.ul_add(["office", "desk", "sip:desk@10.0.0.4", "600", "1"])
                assert rep.code == 200
            else:
                rep = await h.ul.ul_show_contact(["office", "desk"])
                assert rep.text.startswith("<sip:desk@10.0.0.4>;q=1;expires=")
        finally:
            await h.stop()


@pytest.mark.parametrize("kind", ["mysql", "postgres"])
async def test_group_commit_a_refused_row_fails_only_its_request(kind: str, tmp_path) -> None:  # type: ignore[no-untyped-def]
    """Concurrent write-through writes share a transaction; a row the
    database refuses (a contact longer than its column) fails its own write
    only, the others are committed and applied."""
    url = new_db_url(kind, tmp_path)
    await db.create_all(url)
    try:
        d = Udomain("location", WRITE_THROUGH, SqlLocationStore(url))
        d.ready.set()
        expires = int(time.time()) + 600
        contacts = [Ucontact(f"u{i}", f"sip:u{i}@10.0.0.1", expires) for i in range(5)]
        contacts.insert(3, Ucontact("bad", "sip:" + "x" * 300 + "@10.0.0.1", expires))
        results = await asyncio.gather(*(d.apply(c.aor, [c], ()) for c in contacts), return_exceptions=True)
        assert [isinstance(r, DbError) for r in results] == [False, False, False, True, False, False]
        assert sorted(await _rows(url)) == [(f"u{i}", f"sip:u{i}@10.0.0.1") for i in range(5)]
        assert d.get("bad") is None and d.get("u4") is not None
    finally:
        await cleanup(url)
