"""RFC 5626 identities (+sip.instance, reg-id) kept in the location table:
after a restart (db_mode 1) a REGISTER of the same instance and reg-id from
a new contact URI replaces the binding instead of adding a second one; a
version 7 table (no instance/reg_id columns) still works."""

from __future__ import annotations

import asyncio
import re
from collections.abc import Iterator
from pathlib import Path

import pytest

from sipexpress import db
from sipexpress.db import schema
from sipexpress.modules.usrloc.records import Ucontact
from sipexpress.modules.usrloc.store import SqlLocationStore
from tests.support import SerProcess, udp_request
from tests.unit.db.dbfixtures import prepared_url

pytestmark = pytest.mark.interop

CFG = """
debug=3
fork=no
log_stderr=yes
listen=udp:{host}:{port}
loadmodule "sl"
loadmodule "usrloc"
loadmodule "registrar"
modparam("usrloc", "db_mode", 1)
modparam("usrloc", "db_url", "{db_url}")
modparam("registrar", "outbound_mode", 1)
route {{
    if (method == "REGISTER") {{ save("location"); break; }};
    sl_send_reply("404", "Not here");
}}
"""

INSTANCE = "<urn:uuid:00000000-0000-1000-8000-000a95a0e128>"


def register(sp: SerProcess, contact_port: int) -> bytes:
    contact = f'<sip:ob@127.0.0.1:{contact_port};ob>;+sip.instance="{INSTANCE}";reg-id=1'
    r = udp_request(sp, "REGISTER", "ob", f"Supported: outbound\r\nContact: {contact}\r\nExpires: 600\r\n")
    assert r is not None and r.status == 200, (r, sp.log())
    return r.serialize()


def contacts(reply: bytes) -> list[str]:
    return re.findall(r"<(sip:ob@[0-9.]+:[0-9]+;ob)>", reply.decode())


async def _version7(url: str) -> None:
    """The tables, location as it was before instance/reg_id (version 7)."""
    await db.create_all(url)
    await db.drop_tables(url, ["location"])
    t = schema.usrloc_table("location", without=("instance", "reg_id"))
    await db.run(url, lambda conn: conn.run_sync(lambda c: t.create(c)))
    await db.dispose_engines()


@pytest.fixture(params=["sqlite", "mysql", "postgres"])
def location(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    yield from prepared_url(request.param, tmp_path)


def restart_and_reregister(ser_factory, url: str) -> tuple[SerProcess, list[str]]:  # type: ignore[no-untyped-def]
    """Register, restart ser, register the same instance and reg-id from
    another port: the contacts of the second 200 OK."""
    sp: SerProcess = ser_factory(CFG, db_url=url)
    assert contacts(register(sp, 5071)) == ["sip:ob@127.0.0.1:5071;ob"]
    sp.stop()
    sp.start()
    return sp, contacts(register(sp, 5072))


def test_restart_keeps_outbound_identity(ser_factory, location: str) -> None:  # type: ignore[no-untyped-def]
    """The same instance and reg-id after a restart: the same binding."""
    sp, found = restart_and_reregister(ser_factory, location)
    assert found == ["sip:ob@127.0.0.1:5072;ob"], sp.log()

    async def stored() -> list[Ucontact]:
        try:
            return await SqlLocationStore(location).get("location", "ob")
        finally:
            await db.dispose_engines()

    assert [(c.uri, c.instance, c.reg_id) for c in asyncio.run(stored())] == [
        ("sip:ob@127.0.0.1:5072;ob", INSTANCE, 1)
    ]


def test_version7_table_still_works(ser_factory, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    """Without the columns: registrations work, the identity is not kept
    over a restart (a second binding), a log line says to migrate."""
    url = f"sqlite:///{tmp_path / 'v7.sqlite'}"
    asyncio.run(_version7(url))
    sp, found = restart_and_reregister(ser_factory, url)
    assert sorted(found) == ["sip:ob@127.0.0.1:5071;ob", "sip:ob@127.0.0.1:5072;ob"], found
    assert "serctl db migrate" in sp.log()


def test_sql_store_round_trip(tmp_path) -> None:  # type: ignore[no-untyped-def]
    url = f"sqlite:///{tmp_path}/ul.sqlite"

    async def go() -> list[Ucontact]:
        await db.create_all(url)
        store = SqlLocationStore(url)
        await store.prepare("location")
        c = Ucontact("a", "sip:a@10.0.0.1;ob", 2_000_000_000, instance=INSTANCE, reg_id=2)
        await store.write("location", [c], ())
        got = await SqlLocationStore(url).get("location", "a")
        await db.dispose_engines()
        return got

    (c,) = asyncio.run(go())
    assert (c.instance, c.reg_id) == (INSTANCE, 2)
