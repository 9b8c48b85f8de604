"""The Redis location store against the machine's Redis: every Ucontact
field survives the trip, the key layout and its TTLs (a contact expires by
itself, the AOR's key with its last contact), and a Redis that does not
answer is an error within the timeout, not a hang."""

from __future__ import annotations

import asyncio
import dataclasses
import socket
import time
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from sipexpress.core.registry import ConfigError
from sipexpress.db.engine import DbTimeout, DbUnavailable
from sipexpress.modules.usrloc import FL_PERMANENT, Ucontact
from sipexpress.modules.usrloc.records import CState
from sipexpress.modules.usrloc.redis_store import RedisLocationStore
from tests.unit.db.dbfixtures import cleanup, new_db_url


@pytest.fixture
async def store(tmp_path: Path) -> AsyncIterator[RedisLocationStore]:
    url = new_db_url("redis", tmp_path)
    s = RedisLocationStore(url, use_domain=True, timeout=2.0)
    yield s
    await s.close()
    await cleanup(url)


def _sample(field: dataclasses.Field[object], n: int) -> object:
    """A value for ``field`` unlike its default."""
    samples: dict[str, object] = {"int": 7 + n, "str": f'v{n};x="y" é', "CState": CState.CS_DIRTY}
    hint = str(field.type)
    if hint.startswith("tuple"):
        return ("192.0.2.7", 5000 + n)
    return samples[hint.split(" |")[0]]


async def test_every_field_round_trips(store: RedisLocationStore) -> None:
    """Written from the dataclass's fields, read through their types: a
    field added to Ucontact (nathelper's) is stored with no change here."""
    now = int(time.time())
    values = {f.name: _sample(f, i) for i, f in enumerate(dataclasses.fields(Ucontact)) if f.name != "state"}
    values.update(aor="ann@example.com", uri="sip:ann@192.0.2.1:5060;transport=tcp", expires=now + 600)
    full = Ucontact(**values)  # type: ignore[arg-type]
    bare = Ucontact("ann@example.com", "sip:ann@192.0.2.2", now + 60)  # the None fields stay None
    await store.write("location", [full, bare], [])
    got = {c.uri: c for c in await store.get("location", "ann@example.com")}
    for c in (full, bare):
        back = got[c.uri]
        for f in dataclasses.fields(Ucontact):
            if f.name != "state":
                assert getattr(back, f.name) == getattr(c, f.name), f.name
        assert back.state == CState.CS_SYNC
    assert [(c.aor, c.uri) for c in await store.load("location", now)] != []


async def test_key_layout_and_ttls(store: RedisLocationStore) -> None:
    r, p = store.client, store.prefix
    now = int(time.time())
    aor_key = f"{p}location:usrdom::bob:example.com"
    entry = f"{p}location:entry::bob:example.com:sip:bob@192.0.2.1"
    await store.write(
        "location",
        [
            Ucontact("bob@example.com", "sip:bob@192.0.2.1", now + 100),
            Ucontact("bob@example.com", "sip:bob@192.0.2.2", now + 300),
        ],
        [],
    )
    assert await r.hget(entry, "uri") == "sip:bob@192.0.2.1"
    assert await r.pexpiretime(entry) == (now + 100) * 1000
    assert await r.pexpiretime(aor_key) == (now + 300) * 1000  # the longest-living contact
    await store.write("location", [], [("bob@example.com", "sip:bob@192.0.2.2")])
    assert await r.pexpiretime(aor_key) == (now + 100) * 1000
    await store.write("location", [Ucontact("bob@example.com", "sip:p@192.0.2.3", 0, flags=FL_PERMANENT)], [])
    assert await r.pexpiretime(aor_key) == -1  # a permanent contact: the AOR stays
    assert await store.count_aors("location") == 1
    await store.delete_aor("location", "bob@example.com")
    assert await r.keys(f"{p}*") == []


async def test_redis_expires_contacts_and_the_aor_by_itself(store: RedisLocationStore) -> None:
    now = time.time()
    await store.write("location", [Ucontact("eve@example.com", "sip:eve@192.0.2.1", int(now) + 1)], [])
    assert len(await store.get("location", "eve@example.com")) == 1

    deadline = time.monotonic() + 5
    while await store.client.keys(f"{store.prefix}*") and time.monotonic() < deadline:
        await asyncio.sleep(0.05)
    assert await store.client.keys(f"{store.prefix}*") == []  # no timer of ours ran
    assert await store.get("location", "eve@example.com") == []


async def test_silent_redis_is_a_timeout_not_a_hang(tmp_path: Path) -> None:
    with socket.socket() as srv:  # accepts, never answers
        srv.bind(("127.0.0.1", 0))
        srv.listen()
        s = RedisLocationStore(f"redis://127.0.0.1:{srv.getsockname()[1]}/0", timeout=0.5)
        t0 = time.monotonic()
        with pytest.raises(DbTimeout):
            await s.get("location", "x")
        assert time.monotonic() - t0 < 3
        await s.close()
    with pytest.raises(DbUnavailable):  # nobody listens any more: refused at once
        await asyncio.wait_for(s.get("location", "x"), 3)


def test_a_bad_url_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match="invalid Redis db_url"):
        RedisLocationStore("redis://127.0.0.1:notaport/0")
